"""Positions: the version a client sends, and the record liqmon keeps.

A :class:`PositionUpdate` is one validated version of a position as it
arrived (MQTT or ``positions load``); a :class:`PositionRecord` is what is
stored per position: that version plus its monitoring status and the number
of transitions it has made in this version. Records are stored as compact JSON
arrays (the id and symbol are implied by the Redis key), which keeps Redis
memory per position small.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import orjson

from monitor.core.frozen import quick_init
from monitor.core.margin import Position, Side
from monitor.core.status import Status


@quick_init
@dataclass(frozen=True, slots=True)
class PositionUpdate:
    """One version of a position. ``qty == 0`` closes it (entry and margin are then unused)."""

    id: str
    account: str
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    margin: Decimal
    seq: int

    @property
    def closes(self) -> bool:
        """True when this version closes the position."""
        return self.qty == 0


@quick_init
@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A monitored position: its latest version, status, and transitions in this version."""

    id: str
    account: str
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    margin: Decimal
    seq: int
    status: Status = Status.HEALTHY
    transitions: int = 0

    @property
    def position(self) -> Position:
        """The fields margin math needs."""
        return Position(self.side, self.qty, self.entry_price, self.margin)

    @classmethod
    def from_update(cls, update: PositionUpdate, status: Status) -> PositionRecord:
        """A new version's record, starting at ``status`` with no transitions."""
        # Positional, and below without dataclasses.replace: every version
        # makes one, and keywords (or replace's field walk) cost more than the rest.
        u = update
        return cls(u.id, u.account, u.symbol, u.side, u.qty, u.entry_price, u.margin, u.seq, status)

    def moved_to(self, status: Status) -> PositionRecord:
        """This record after one transition to ``status``."""
        return PositionRecord(
            self.id,
            self.account,
            self.symbol,
            self.side,
            self.qty,
            self.entry_price,
            self.margin,
            self.seq,
            status,
            self.transitions + 1,
        )

    def encode(self) -> bytes:
        """The stored form: a JSON array, Decimals as strings (enums as their values)."""
        return orjson.dumps(
            [
                self.account,
                self.side,
                str(self.qty),
                str(self.entry_price),
                str(self.margin),
                self.seq,
                self.status,
                self.transitions,
            ]
        )

    @classmethod
    def decode(cls, position_id: str, symbol: str, raw: bytes | str) -> PositionRecord:
        """Inverse of :meth:`encode`."""
        account, side, qty, entry, margin, seq, status, transitions = orjson.loads(raw)
        return cls(
            id=position_id,
            account=account,
            symbol=symbol,
            side=Side(side),
            qty=Decimal(qty),
            entry_price=Decimal(entry),
            margin=Decimal(margin),
            seq=seq,
            status=Status(status),
            transitions=transitions,
        )
