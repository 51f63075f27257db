"""The life of a position, as one table.

Rule 1: a position's status changes only by a row of :data:`TRANSITIONS`; any
other move is a bug and raises :class:`IllegalTransition`.

Rule 2: a row either emits exactly one event type or none. The event belongs
to the position version (``seq``) and the transition counter at which it
happened, which is what makes its id deterministic.

Theory of operation::

    healthy ──ratio ≥ margin_call_ratio──▶ margin_call ──ratio < clear_ratio──▶ healthy
       │                                        │
       └──────────── MB ≤ MM ──▶ liquidated ◀───┘    (terminal for this version)

Margin calls use hysteresis: entering needs ``ratio ≥ margin_call_ratio``,
leaving needs ``ratio < margin_call_clear_ratio``, so a mark wobbling at the
threshold does not flood subscribers. A liquidated position stays liquidated
until a new version (higher ``seq``) of it arrives, which starts healthy.
A closed position (a version with ``qty`` 0) is kept as a tombstone with
status ``closed`` so that older versions replayed later stay ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from monitor.core.errors import Bug
from monitor.core.margin import MarginState


class Status(StrEnum):
    """Where a position stands against its maintenance margin."""

    HEALTHY = "healthy"
    MARGIN_CALL = "margin_call"
    LIQUIDATED = "liquidated"
    CLOSED = "closed"


class EventType(StrEnum):
    """The events published on the bus; each is one row of the table below."""

    MARGIN_CALL = "margin_call"
    MARGIN_CALL_CLEARED = "margin_call_cleared"
    LIQUIDATION = "liquidation"


class IllegalTransition(Bug):
    """A status move that is not in :data:`TRANSITIONS` (a bug, never an input error)."""


TRANSITIONS: dict[tuple[Status, Status], EventType | None] = {
    (Status.HEALTHY, Status.HEALTHY): None,
    (Status.HEALTHY, Status.MARGIN_CALL): EventType.MARGIN_CALL,
    (Status.HEALTHY, Status.LIQUIDATED): EventType.LIQUIDATION,
    (Status.MARGIN_CALL, Status.MARGIN_CALL): None,
    (Status.MARGIN_CALL, Status.HEALTHY): EventType.MARGIN_CALL_CLEARED,
    (Status.MARGIN_CALL, Status.LIQUIDATED): EventType.LIQUIDATION,
    (Status.LIQUIDATED, Status.LIQUIDATED): None,
    (Status.CLOSED, Status.CLOSED): None,
}


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The margin-call thresholds (ratios of maintenance margin to margin balance)."""

    margin_call_ratio: Decimal = Decimal("0.8")
    margin_call_clear_ratio: Decimal = Decimal("0.7")


def next_status(
    current: Status, state: MarginState, risk: RiskLimits, allow_liquidation: bool = True
) -> Status:
    """The status a position moves to at ``state``, given where it stands now.

    With ``allow_liquidation`` False (a price guard holds liquidations, e.g.
    mark and index disagree), a liquidatable position goes no further than a
    margin call; its liquidation trigger stays crossed, so the first tick
    after the hold lifts liquidates it.
    """
    if current is Status.CLOSED or current is Status.LIQUIDATED:
        return current
    if state.liquidatable:
        return Status.LIQUIDATED if allow_liquidation else Status.MARGIN_CALL
    if current is Status.HEALTHY:
        return (
            Status.MARGIN_CALL if state.margin_ratio >= risk.margin_call_ratio else Status.HEALTHY
        )
    if state.margin_ratio < risk.margin_call_clear_ratio:
        return Status.HEALTHY
    return Status.MARGIN_CALL


def event_for(current: Status, new: Status) -> EventType | None:
    """The event a move emits; raises :class:`IllegalTransition` for a move not in the table."""
    try:
        return TRANSITIONS[(current, new)]
    except KeyError:
        raise IllegalTransition(f"{current} -> {new}") from None
