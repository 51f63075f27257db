"""The four trigger sets, and which of a side's two is its worsening one. Pure.

Every position that a price can still move is indexed by the price at
which it must be looked at again, in one of four sets: one per side and
direction. A ``down`` set fires when the mark falls to a member's price or
below, an ``up`` set when it rises to it or above. Rule: **a long worsens as
the price falls, a short as it rises**, so a long's worsening set is
``long:down`` (its margin-call, then liquidation price) and its improving
set ``long:up`` (the price that clears its margin call); a short's are
``short:up`` and ``short:down``.

This module is the one statement of that rule (:data:`WORSENS`). Evaluation
(:func:`monitor.core.evaluation.triggers_for`), the Redis keys, the order in
which ``candidates.lua`` reads the sets, the API's walk and its counts all
ask :class:`TriggerSet`; ``tests/core/test_triggers.py`` checks it.
"""

from __future__ import annotations

from enum import Enum

from monitor.core.margin import Side


class Direction(Enum):
    """Which way the mark must move to reach a set's prices."""

    DOWN = "down"
    """Fires at mark ≤ price: read from the highest price down."""
    UP = "up"
    """Fires at mark ≥ price: read from the lowest price up."""


WORSENS: dict[Side, Direction] = {Side.LONG: Direction.DOWN, Side.SHORT: Direction.UP}
"""The direction in which each side's position worsens (the rule; see the module doc)."""


class TriggerSet(Enum):
    """One of the four trigger sets: a side and a direction.

    Members are in the order of the Redis scripts' KEYS (long down, long up,
    short down, short up): :meth:`monitor.state.keys.Keys.all_triggers`.
    """

    LONG_DOWN = (Side.LONG, Direction.DOWN)
    LONG_UP = (Side.LONG, Direction.UP)
    SHORT_DOWN = (Side.SHORT, Direction.DOWN)
    SHORT_UP = (Side.SHORT, Direction.UP)

    def __init__(self, side: Side, direction: Direction) -> None:
        self.side = side
        self.direction = direction

    @property
    def worsening(self) -> bool:
        """True for the set a position of this side is in while the price can liquidate it."""
        return WORSENS[self.side] is self.direction

    @property
    def name_part(self) -> str:
        """The set's part of its Redis key: ``long:down`` and so on."""
        return f"{self.side.value}:{self.direction.value}"

    @classmethod
    def of(cls, side: Side, direction: Direction) -> TriggerSet:
        """The set of ``side`` and ``direction``."""
        return _BY_PAIR[side, direction]

    @classmethod
    def worsening_of(cls, side: Side) -> TriggerSet:
        """``side``'s worsening set: its margin-call, then liquidation price."""
        return _BY_PAIR[side, WORSENS[side]]

    @classmethod
    def improving_of(cls, side: Side) -> TriggerSet:
        """``side``'s improving set: the price that clears its margin call."""
        return _BY_PAIR[side, _OTHER[WORSENS[side]]]


_OTHER = {Direction.DOWN: Direction.UP, Direction.UP: Direction.DOWN}
_BY_PAIR = {(member.side, member.direction): member for member in TriggerSet}

WORSENING_FIRST: tuple[TriggerSet, ...] = tuple(
    sorted(TriggerSet, key=lambda member: not member.worsening)
)
"""Every set, the worsening ones first: the order in which a mark's candidates are read
(the most urgent decisions first)."""
