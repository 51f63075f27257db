"""Funding: what a funding time pays or takes, per position. Pure and synchronous.

For symbols with ``apply_funding = true``, at each funding time every open
isolated position of the symbol pays or receives::

    linear   payment = qty × mark × rate              (quote currency)
    inverse  payment = qty × contract_size / mark × rate   (coin)

Longs pay when the rate is positive and receive when it is negative; shorts
the reverse. The payment moves the position's margin (:func:`margin_change`),
the way the venue's rule says (:class:`FundingRule`): Binance, OKX and Gate
take it from and pay it into the isolated margin; Bybit takes it from the
available balance first and pays receipts there, which liqmon cannot see, so
for Bybit liqmon takes a payment from the isolated margin (as if the available
balance were empty: the conservative case) and credits nothing.

A position cannot pay more than its margin: the payment is capped there (the
venue liquidates it; the rest is not the position's to pay).

:func:`apply_funding` is the one decision: the new margin as a
:attr:`~monitor.core.status.Cause.FUNDING` row of the status table (it emits
``funding_applied``), then the mark judges the new margin at once, so a
payment that pushes a position under its maintenance margin liquidates it in
the same write. Which funding times a position has paid is the shell's
business (:mod:`monitor.state.positions` keeps the last one per position, so
a funding time applied twice pays once).

:class:`FundingSchedule` holds the announced funding times until they come
due: venues publish the *next* funding time and the rate that will apply then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import orjson

from monitor.core.errors import Rejection
from monitor.core.evaluation import (
    Event,
    Quote,
    Triggers,
    evaluate,
    position_event,
    triggers_for,
)
from monitor.core.margin import Contract, ContractKind, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import Cause, EventType, RiskLimits, Status, event_for
from monitor.core.wire import decimal_str

ZERO = Decimal(0)

MAX_ANNOUNCED = 8
"""Funding times a symbol may have announced and not yet due; later ones wait for room
(venues announce one at a time, so more means timestamps that are not funding times)."""

MAX_RATE = Decimal("0.1")
"""The largest funding rate accepted (10 % per interval; venues cap theirs far lower)."""


class FundingRule(StrEnum):
    """How a venue moves a funding payment through an isolated position."""

    MARGIN = "margin"
    """Paid from and received into the isolated margin (Binance, OKX, Gate, Hyperliquid)."""
    DEBIT_ONLY = "debit_only"
    """Paid from the isolated margin, received elsewhere (Bybit, see the module doc)."""


VENUE_RULES: Mapping[str, FundingRule] = {
    "binance": FundingRule.MARGIN,
    "okx": FundingRule.MARGIN,
    "gate": FundingRule.MARGIN,
    "hyperliquid": FundingRule.MARGIN,
    "bybit": FundingRule.DEBIT_ONLY,
}


def rule_for(venue: str) -> FundingRule:
    """The funding rule of a venue model's name (an unknown one: through the margin)."""
    return VENUE_RULES.get(venue, FundingRule.MARGIN)


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One funding time of a symbol and the rate that applies at it."""

    symbol: str
    rate: Decimal
    funding_ts_ms: int
    """The funding time, epoch milliseconds."""


@dataclass(frozen=True, slots=True)
class FundingDecision:
    """A position after a funding payment: its record, triggers and events (in order)."""

    record: PositionRecord
    triggers: Triggers
    events: tuple[Event, ...]
    amount: Decimal
    """The change to the margin (negative: the position paid)."""


def payment(contract: Contract, side: Side, qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """What a position pays at a funding time, in its margin currency (negative: receives)."""
    if contract.kind is ContractKind.LINEAR:
        value = qty * mark
    else:
        value = qty * contract.contract_size / mark
    return side.sign * value * rate


def margin_change(
    contract: Contract,
    record: PositionRecord,
    mark: Decimal,
    rate: Decimal,
    rule: FundingRule = FundingRule.MARGIN,
) -> Decimal:
    """The change a funding time makes to ``record``'s margin (never below zero margin)."""
    change = -payment(contract, record.side, record.qty, mark, rate)
    if change > 0 and rule is FundingRule.DEBIT_ONLY:
        return ZERO
    return max(change, -record.margin)


def apply_funding(
    contract: Contract,
    record: PositionRecord,
    funding: FundingRate,
    quote: Quote,
    risk: RiskLimits,
    now_ms: int,
    *,
    rule: FundingRule = FundingRule.MARGIN,
    judge: bool = True,
    allow_liquidation: bool = True,
    generation: int = 1,
) -> FundingDecision | None:
    """``record`` after ``funding`` at ``quote``'s mark; None when nothing moves.

    Nothing moves for a liquidated or closed position, or a zero payment.
    With ``judge`` (the mark is fresh enough to decide on), the mark then
    re-assesses the new margin at once, which may add a liquidation or a
    margin call (cleared) after the ``funding_applied`` event; otherwise the
    new triggers wait for the first fresh tick.
    """
    if record.status not in (Status.HEALTHY, Status.MARGIN_CALL):
        return None
    amount = margin_change(contract, record, quote.mark, funding.rate, rule)
    if amount == 0:
        return None
    event_type = event_for(record.status, record.status, Cause.FUNDING)
    assert event_type is not None  # the funding rows all emit
    funded = dataclasses.replace(
        record, margin=record.margin + amount, transitions=record.transitions + 1
    )
    events = [
        _funding_event(
            contract, funded, event_type, funding, quote, amount, record.margin, now_ms, generation
        )
    ]
    if not judge:
        return FundingDecision(funded, triggers_for(contract, funded, risk), tuple(events), amount)
    decision = evaluate(contract, funded, quote, risk, now_ms, allow_liquidation, generation)
    if decision.event is not None:
        events.append(decision.event)
    return FundingDecision(decision.record, decision.triggers, tuple(events), amount)


def _funding_event(
    contract: Contract,
    record: PositionRecord,
    event_type: EventType,
    funding: FundingRate,
    quote: Quote,
    amount: Decimal,
    margin_before: Decimal,
    now_ms: int,
    generation: int,
) -> Event:
    model = model_for(contract)
    return position_event(
        model,
        record,
        event_type,
        model.assess(record, quote.mark),
        quote,
        now_ms,
        generation,
        funding_rate=decimal_str(funding.rate),
        funding_time=funding.funding_ts_ms,
        amount=decimal_str(amount),
        margin_before=decimal_str(margin_before),
    )


def funding_from_payload(payload: bytes, symbol: str, max_bytes: int) -> FundingRate:
    """Parse ``{"rate": "0.0001", "ts": 1700000000000}`` (ts: the funding time, epoch ms).

    Raises :class:`Rejection` naming what is wrong: the rate is a decimal
    string (a JSON number has lost precision already) within ±:data:`MAX_RATE`,
    ``ts`` an integer of epoch milliseconds.
    """
    if len(payload) > max_bytes:
        raise Rejection("too_large", f"{len(payload)} bytes > {max_bytes}")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Rejection("not_json", "the payload is not JSON") from None
    if not isinstance(document, dict):
        raise Rejection("bad_shape", 'expected {"rate": "...", "ts": ...}')
    return funding_rate(symbol, document.get("rate"), document.get("ts"))


def funding_rate(symbol: str, rate: object, ts_ms: object) -> FundingRate:
    """A checked :class:`FundingRate` from a rate string and an epoch-ms funding time."""
    if not isinstance(rate, str):
        raise Rejection("bad_decimal", f"rate must be a decimal string, got {rate!r}")
    try:
        parsed = Decimal(rate)
    except InvalidOperation:
        raise Rejection("bad_decimal", f"rate={rate!r}") from None
    if not parsed.is_finite() or abs(parsed) > MAX_RATE:
        raise Rejection("bad_decimal", f"rate={rate!r} is not within ±{MAX_RATE}")
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not 0 < ts_ms < 1 << 53:
        raise Rejection("bad_timestamp", f"ts must be epoch milliseconds, got {ts_ms!r}")
    return FundingRate(symbol, parsed, ts_ms)


class FundingSchedule:
    """Funding times announced per symbol, until they come due.

    A venue's frames carry the *next* funding time and its current rate, again
    and again until that time passes: each announcement replaces the rate of
    its funding time, and :meth:`due` hands over each funding time once, with
    the last rate announced for it. Bounded: :data:`MAX_ANNOUNCED` per symbol.
    """

    def __init__(self) -> None:
        self._announced: dict[str, dict[int, Decimal]] = {}
        self._done: dict[str, int] = {}

    def announce(self, funding: FundingRate) -> bool:
        """Hold ``funding`` until its time; False when it was handed over already or
        there is no room (an announcement that changes nothing is still True)."""
        if funding.funding_ts_ms <= self._done.get(funding.symbol, 0):
            return False
        times = self._announced.setdefault(funding.symbol, {})
        if funding.funding_ts_ms not in times and len(times) >= MAX_ANNOUNCED:
            return False
        times[funding.funding_ts_ms] = funding.rate
        return True

    def due(self, now_ms: int) -> list[FundingRate]:
        """The funding times at or before ``now_ms``, oldest first, each handed over once."""
        found = []
        for symbol, times in self._announced.items():
            for ts_ms in sorted(t for t in times if t <= now_ms):
                found.append(FundingRate(symbol, times.pop(ts_ms), ts_ms))
                self._done[symbol] = max(self._done.get(symbol, 0), ts_ms)
        return sorted(found, key=lambda funding: funding.funding_ts_ms)

    def retry(self, funding: FundingRate) -> None:
        """Hand ``funding`` over again at the next :meth:`due` (it could not be applied)."""
        self._announced.setdefault(funding.symbol, {})[funding.funding_ts_ms] = funding.rate
        if self._done.get(funding.symbol) == funding.funding_ts_ms:
            del self._done[funding.symbol]

    def pending(self, symbol: str) -> dict[int, Decimal]:
        """The funding times of ``symbol`` announced and not yet due, with their rates."""
        return dict(self._announced.get(symbol, {}))
