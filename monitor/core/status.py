"""The life of a position, as one table.

Rule 1: a position's status changes only by a row of :data:`TRANSITIONS`; any
other move is a bug and raises :class:`IllegalTransition`. That holds across
versions too: a new version (higher ``seq``) moves the stored status by a row
of its own, before the mark judges it.

Rule 2: a row either emits exactly one event type or none. The event belongs
to the position version (``seq``) and the transition counter at which it
happened, which is what makes its id deterministic.

Theory of operation. A mark re-assesses the stored version
(:attr:`Cause.MARK`)::

    healthy ──ratio ≥ margin_call_ratio──▶ margin_call ──ratio < clear_ratio──▶ healthy
       │                                        │
       └──────────── MB ≤ MM ──▶ liquidated ◀───┘    (terminal for this version)

Margin calls use hysteresis: entering needs ``ratio ≥ margin_call_ratio``,
leaving needs ``ratio < margin_call_clear_ratio``, so a mark wobbling at the
threshold does not flood subscribers.

A new version (:attr:`Cause.VERSION`) replaces the stored one, silently, and
is then judged at the latest mark like any other::

    (none), healthy, liquidated, closed ──new version──▶ healthy
    margin_call ──new version──▶ margin_call    (a top-up that does not cure says nothing)
    (none), any status ──version with qty 0──▶ closed

A funding payment (:attr:`Cause.FUNDING`, symbols with ``apply_funding``)
moves margin into or out of an open position of the same version; the row
keeps the status and emits ``funding_applied``, and the mark then judges the
new margin at once like any other (a payment may liquidate, or clear a
margin call)::

    healthy ──funding──▶ healthy          margin_call ──funding──▶ margin_call

A liquidated position stays liquidated until a new version of it arrives,
which starts healthy. A closed position is kept as a tombstone with status
``closed`` so that older versions replayed later stay ignored; a newer
version after it reopens the position, healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from monitor.core.errors import Bug


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
    FUNDING_APPLIED = "funding_applied"


class Cause(StrEnum):
    """What moves a status: a mark judging the stored version, a new version, or a
    funding payment into or out of the stored version's margin."""

    MARK = "mark"
    VERSION = "version"
    FUNDING = "funding"


class IllegalTransition(Bug):
    """A status move that is not in :data:`TRANSITIONS` (a bug, never an input error)."""


_H, _C, _L, _X = Status.HEALTHY, Status.MARGIN_CALL, Status.LIQUIDATED, Status.CLOSED

TRANSITIONS: dict[tuple[Status | None, Status, Cause], EventType | None] = {
    # (from, to, cause): the event emitted. ``from`` None: no version was stored yet.
    # A mark judges the stored version.
    (_H, _H, Cause.MARK): None,
    (_H, _C, Cause.MARK): EventType.MARGIN_CALL,
    (_H, _L, Cause.MARK): EventType.LIQUIDATION,
    (_C, _C, Cause.MARK): None,
    (_C, _H, Cause.MARK): EventType.MARGIN_CALL_CLEARED,
    (_C, _L, Cause.MARK): EventType.LIQUIDATION,
    (_L, _L, Cause.MARK): None,
    (_X, _X, Cause.MARK): None,
    # A new version replaces the stored one; the mark then judges it (rows above).
    (None, _H, Cause.VERSION): None,
    (_H, _H, Cause.VERSION): None,
    (_C, _C, Cause.VERSION): None,
    (_L, _H, Cause.VERSION): None,
    (_X, _H, Cause.VERSION): None,
    # A version with qty 0 closes the position, whatever it was.
    (None, _X, Cause.VERSION): None,
    (_H, _X, Cause.VERSION): None,
    (_C, _X, Cause.VERSION): None,
    (_L, _X, Cause.VERSION): None,
    (_X, _X, Cause.VERSION): None,
    # A funding payment changes an open position's margin; the mark then judges it.
    (_H, _H, Cause.FUNDING): EventType.FUNDING_APPLIED,
    (_C, _C, Cause.FUNDING): EventType.FUNDING_APPLIED,
}


class Assessment(Protocol):
    """What a status decision reads of a position at a mark, whichever venue model made it.

    :class:`~monitor.core.margin.MarginState` and
    :class:`~monitor.core.venues.base.VenueState` both are one.
    """

    @property
    def margin_ratio(self) -> Decimal:
        """liqmon's ``MM / MB`` (Infinity when ``MB ≤ 0``), rising toward liquidation."""
        ...

    @property
    def liquidatable(self) -> bool:
        """True when the venue would liquidate the position at this mark."""
        ...

    def ratio_reached(self, ratio: Decimal) -> bool:
        """True when ``margin_ratio ≥ ratio``, decided as the model's trigger prices are."""
        ...


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The margin-call thresholds (ratios of maintenance margin to margin balance)."""

    margin_call_ratio: Decimal = Decimal("0.8")
    margin_call_clear_ratio: Decimal = Decimal("0.7")


def next_status(
    current: Status, state: Assessment, risk: RiskLimits, allow_liquidation: bool = True
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
        return Status.MARGIN_CALL if state.ratio_reached(risk.margin_call_ratio) else Status.HEALTHY
    if not state.ratio_reached(risk.margin_call_clear_ratio):
        return Status.HEALTHY
    return Status.MARGIN_CALL


def version_status(stored: Status | None, closes: bool) -> Status:
    """The status a new version starts at, before the mark judges it.

    ``stored``: the previous version's (None: none stored). A close is
    ``closed``; a margin call carries over (a top-up that does not cure it
    says nothing again); anything else starts healthy.
    """
    if closes:
        return Status.CLOSED
    return Status.MARGIN_CALL if stored is Status.MARGIN_CALL else Status.HEALTHY


def event_for(current: Status | None, new: Status, cause: Cause = Cause.MARK) -> EventType | None:
    """The event a move emits; raises :class:`IllegalTransition` for a move not in the table."""
    try:
        return TRANSITIONS[(current, new, cause)]
    except KeyError:
        suffix = "" if cause is Cause.MARK else f" ({cause})"
        raise IllegalTransition(f"{current} -> {new}{suffix}") from None
