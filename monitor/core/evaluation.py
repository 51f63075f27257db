"""Decisions: what a tick or a new version does to a position. Pure and synchronous.

The async shell reads records and prices, calls :func:`evaluate` or
:func:`apply_update`, and writes the resulting :class:`Decision` atomically
(record, trigger index and outbox event together). Nothing here does I/O;
the clock is an argument.

Trigger prices (see :func:`triggers_for`) are what the Redis sorted sets hold:
``down`` fires when the mark falls to it or below, ``up`` when the mark rises
to it or above. Which of the two is a side's worsening one is
:mod:`monitor.core.triggers`'s rule (a long worsens as the price falls, a
short as it rises):

===========  ============================  ============================
status       long                          short
===========  ============================  ============================
healthy      down = margin-call price      up = margin-call price
margin_call  down = liquidation price,     up = liquidation price,
             up = clearing price           down = clearing price
liquidated   none                          none
closed       none                          none
===========  ============================  ============================

Every price and state comes from the contract's venue model
(:func:`monitor.core.models.model_for`); the table holds for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from monitor.core.frozen import quick_init
from monitor.core.margin import Contract, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import (
    Cause,
    EventType,
    RiskLimits,
    Status,
    event_for,
    next_status,
    version_status,
)
from monitor.core.triggers import WORSENS, Direction
from monitor.core.venues.base import VenueModel, VenueState
from monitor.core.wire import decimal_str

EVENT_SCHEMA = 1

GENERATION_STRIDE = 1_000_000_000
"""From Redis's second generation (:mod:`monitor.state.epoch`) on, an event id's transition
number is ``generation × GENERATION_STRIDE + n``: a version re-sent after a loss
makes its transitions again under ids nobody has seen (n never gets near it)."""


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest accepted prices of a symbol."""

    mark: Decimal
    mark_ts_ms: int
    index: Decimal | None = None
    stamp: str = ""
    """The stored ``mark_ts|mark`` text this quote was read from (for compare-and-set)."""


@quick_init
@dataclass(frozen=True, slots=True)
class Triggers:
    """Prices at which a position must be looked at again (None: never in that direction)."""

    down: Decimal | None = None
    up: Decimal | None = None

    def price(self, direction: Direction) -> Decimal | None:
        """The trigger price in ``direction`` (None: none)."""
        return self.down if direction is Direction.DOWN else self.up


_NO_TRIGGERS = Triggers()
# Enum members as plain names: every position version tests them.
_HEALTHY, _MARGIN_CALL = Status.HEALTHY, Status.MARGIN_CALL
_WORSE_IS_DOWN = {side: WORSENS[side] is Direction.DOWN for side in Side}


@dataclass(frozen=True, slots=True)
class Event:
    """One transition, ready to publish."""

    event_id: str
    type: EventType
    account: str
    symbol: str
    payload: dict[str, Any]


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one position: its new record, its triggers, and its event if any."""

    record: PositionRecord
    triggers: Triggers
    event: Event | None


def event_id(position_id: str, seq: int, transition: int, generation: int = 1) -> str:
    """Deterministic id of a transition: the same transition always gets the same id.

    Position id, version and transition number within the version, joined by
    ``:``; the last two parts are integers, so the id splits unambiguously from
    the right even when the position id contains ``:``. In Redis's generation
    ``generation`` ≥ 2 (its data was lost ``generation - 1`` times), the
    transition number is offset by ``generation ×`` :data:`GENERATION_STRIDE`.
    """
    if generation > 1:
        transition += generation * GENERATION_STRIDE
    return f"{position_id}:{seq}:{transition}"


def triggers_for(contract: Contract, record: PositionRecord, risk: RiskLimits) -> Triggers:
    """The trigger prices that bring ``record`` back for evaluation (table in module doc)."""
    return _triggers(model_for(contract), record, risk)


def _triggers(model: VenueModel, record: PositionRecord, risk: RiskLimits) -> Triggers:
    status = record.status
    if status is _HEALTHY:
        worse = model.margin_call_price(record, risk.margin_call_ratio)
        better = None
    elif status is _MARGIN_CALL:
        worse = model.liquidation_price(record)
        better = model.margin_call_price(record, risk.margin_call_clear_ratio)
    else:  # liquidated or closed
        return _NO_TRIGGERS
    if _WORSE_IS_DOWN[record.side]:
        return Triggers(down=worse, up=better)
    return Triggers(down=better, up=worse)


def evaluate(
    contract: Contract,
    record: PositionRecord,
    quote: Quote,
    risk: RiskLimits,
    now_ms: int,
    allow_liquidation: bool = True,
    generation: int = 1,
) -> Decision:
    """Re-assess ``record`` at the quote's mark: a new status and its event, if any.

    ``generation``: Redis's (see :func:`event_id`)."""
    model = model_for(contract)
    state = model.assess(record, quote.mark)
    new_status = next_status(record.status, state, risk, allow_liquidation)
    event_type = event_for(record.status, new_status)
    if event_type is None:
        return Decision(record, _triggers(model, record, risk), None)
    moved = record.moved_to(new_status)
    event = position_event(model, moved, event_type, state, quote, now_ms, generation)
    return Decision(moved, _triggers(model, moved, risk), event)


def apply_update(
    contract: Contract,
    previous: PositionRecord | None,
    update: PositionUpdate,
    quote: Quote | None,
    risk: RiskLimits,
    now_ms: int,
    generation: int = 1,
) -> Decision | None:
    """A new version of a position, evaluated at once; None when ``seq`` is not newer.

    The version moves the stored status by a :attr:`~monitor.core.status.Cause.VERSION`
    row of the table (:func:`~monitor.core.status.version_status`): a margin
    call carries over (so a top-up that does not cure it does not announce it
    again), anything else starts healthy, and a close keeps a tombstone record
    so that older versions replayed later are ignored. The mark then judges it.
    """
    stored = None
    if previous is not None:
        if update.seq <= previous.seq:
            return None
        stored = previous.status
    status = version_status(stored, update.closes)
    event_for(stored, status, Cause.VERSION)  # Rule 1; the rows emit nothing
    record = PositionRecord.from_update(update, status)
    if status is Status.CLOSED:
        return Decision(record, _NO_TRIGGERS, None)
    if quote is None:
        return Decision(record, triggers_for(contract, record, risk), None)
    model = model_for(contract)
    if status is _HEALTHY and model.short_of(record, quote.mark, risk.margin_call_ratio):
        # What nearly every new version meets: healthy stays healthy (what
        # evaluate's next_status would say, on the same digits), decided
        # without building the state. Not on the tick path, whose candidates
        # have crossed a trigger and mostly move.
        return Decision(record, _triggers(model, record, risk), None)
    return evaluate(contract, record, quote, risk, now_ms, generation=generation)


def position_event(
    model: VenueModel,
    record: PositionRecord,
    event_type: EventType,
    state: VenueState,
    quote: Quote,
    now_ms: int,
    generation: int,
    **extra: Any,
) -> Event:
    """The event of ``record``'s transition: the position, the prices and its margin state at
    ``quote``; ``extra`` adds the fields of one kind of event (a funding payment's)."""
    payload: dict[str, Any] = {
        "schema": EVENT_SCHEMA,
        "event_id": event_id(record.id, record.seq, record.transitions, generation),
        "type": event_type.value,
        "position_id": record.id,
        "account": record.account,
        "symbol": record.symbol,
        "side": record.side.value,
        "qty": decimal_str(record.qty),
        "entry_price": decimal_str(record.entry_price),
        "margin": decimal_str(record.margin),
        "position_seq": record.seq,
        "mark_price": decimal_str(quote.mark),
        "index_price": decimal_str(quote.index) if quote.index is not None else None,
        "price_ts": quote.mark_ts_ms,
        "margin_balance": decimal_str(state.margin_balance),
        "maintenance_margin": decimal_str(state.maintenance_margin),
        "margin_ratio": decimal_str(state.margin_ratio),
        "liquidation_price": _optional(model.liquidation_price(record)),
        "bankruptcy_price": _optional(model.bankruptcy_price(record)),
        **extra,
        "emitted_at": now_ms,
    }
    return Event(payload["event_id"], event_type, record.account, record.symbol, payload)


def _optional(value: Decimal | None) -> str | None:
    return decimal_str(value) if value is not None else None
