"""The liquidation-cluster alert: when one side's liquidating notional near the mark is large.

Per symbol and side, the notional that would liquidate if the mark moved
``distance`` against that side (:class:`monitor.core.stress.Within`) is
compared with two thresholds, with hysteresis as margin calls have::

    clear ──notional ≥ raise_notional──▶ raised ──notional < clear_notional──▶ clear

(``clear_notional ≤ raise_notional``), so a notional wobbling at the threshold
does not flood subscribers. Each raise opens an episode, numbered from the
last one the state remembers; the raise and the clear of one episode share its
number, which makes their ids deterministic (:func:`alert_id`): a decision
taken again after a crash, before its state was written, repeats the same id,
and a subscriber that keeps the ids it has seen gets it once. Pure: the state
lives wherever the caller keeps it (the daemon keeps it in Redis, so a restart
does not announce an episode again).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from monitor.core.evaluation import GENERATION_STRIDE
from monitor.core.margin import Side

GAUGE_DISTANCES = (Decimal("0.01"), Decimal("0.05"), Decimal("0.1"))
"""The moves against each side the liquidation gauges report (1 %, 5 %, 10 % of the mark)."""


class ClusterAlert(StrEnum):
    """The two alerts of an episode (published on ``{prefix}/alerts/{symbol}/{type}``)."""

    RAISED = "liquidation_cluster"
    CLEARED = "liquidation_cluster_cleared"


@dataclass(frozen=True, slots=True)
class ClusterRule:
    """When one side's notional within ``distance`` raises and clears the alert."""

    distance: Decimal
    raise_notional: Decimal
    clear_notional: Decimal

    def __post_init__(self) -> None:
        if not 0 < self.distance < 1:
            raise ValueError(f"distance must lie in (0, 1), got {self.distance}")
        if not 0 < self.clear_notional <= self.raise_notional:
            raise ValueError(
                "need 0 < clear_notional <= raise_notional, got "
                f"{self.clear_notional} and {self.raise_notional}"
            )


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Whether a side's alert is raised, and the number of its last episode (0: none yet)."""

    raised: bool = False
    episode: int = 0

    def text(self) -> str:
        """The stored form: ``raised:N`` or ``clear:N``."""
        return f"{'raised' if self.raised else 'clear'}:{self.episode}"

    @classmethod
    def parse(cls, text: str | None) -> ClusterState:
        """The state :meth:`text` stored (None, or a form not understood: none yet)."""
        if text is None:
            return cls()
        word, _, number = text.partition(":")
        if word not in ("raised", "clear") or not number.isdigit():
            return cls()
        return cls(word == "raised", int(number))


def decide(
    state: ClusterState, notional: Fraction, rule: ClusterRule
) -> tuple[ClusterState, ClusterAlert | None]:
    """The state after seeing ``notional`` (exact), and the alert to publish (None: nothing)."""
    if not state.raised and notional >= Fraction(rule.raise_notional):
        return ClusterState(True, state.episode + 1), ClusterAlert.RAISED
    if state.raised and notional < Fraction(rule.clear_notional):
        return ClusterState(False, state.episode), ClusterAlert.CLEARED
    return state, None


def alert_id(
    symbol: str, side: Side, alert: ClusterAlert, episode: int, generation: int = 1
) -> str:
    """``{symbol}:{type}:{side}:{episode}``: the same for every announcement of one
    transition. From Redis's second generation on (its data, the episode counters
    with it, was lost), the episode is offset as event ids' transitions are
    (:data:`~monitor.core.evaluation.GENERATION_STRIDE`), so a new episode 1 is not
    taken for one a subscriber saw before the loss."""
    if generation > 1:
        episode += generation * GENERATION_STRIDE
    return f"{symbol}:{alert.value}:{side.value}:{episode}"
