"""Coalescing mark ticks per symbol, so falling behind never skips a crossing. Pure.

When marks arrive faster than they are evaluated, only three per symbol are
kept: the lowest and the highest seen since the symbol was last taken (longs
liquidate on the low, shorts on the high) and the last one. Every trigger
price a skipped mark crossed, the lowest or the highest crossed too, so
evaluating those three decides what evaluating all of them would have.
Memory is bounded by the number of symbols, whatever the tick rate.

Two holders use that bookkeeping:

- :class:`Coalescing`, the marks of the symbols this monitor evaluates: a
  symbol is handed to at most one worker at a time; while it is evaluated,
  new marks fold in, and it is handed out again when the worker is done.
- :class:`HeldBack`, the marks of the symbols another monitor holds, kept for
  a while so that taking one over evaluates what arrived during the hand-over.

Nothing here waits or wakes anyone: the caller learns from the return values
when a symbol becomes ready (:mod:`monitor.service.workers` runs the queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from feeds.tick import PriceTick


class Mark(NamedTuple):
    """A mark tick and when this monitor received it (seconds on a monotonic clock)."""

    tick: PriceTick
    received_s: float


@dataclass(slots=True)
class Extremes:
    """The lowest, the highest and the last of the marks folded in."""

    low: Mark
    high: Mark
    last: Mark

    @classmethod
    def of(cls, mark: Mark) -> Extremes:
        """The extremes of one mark."""
        return cls(mark, mark, mark)

    def add(self, mark: Mark) -> None:
        """Fold in a newer mark."""
        price = mark.tick.price
        if price < self.low.tick.price:
            self.low = mark
        if price > self.high.tick.price:
            self.high = mark
        self.last = mark

    def marks(self) -> list[Mark]:
        """The distinct marks kept, in time order, the last one last."""
        extremes = sorted(
            {id(m): m for m in (self.low, self.high) if m is not self.last}.values(),
            key=_ts,
        )
        return [*extremes, self.last]


def _ts(mark: Mark) -> int:
    return mark.tick.ts_ms


class Offered(Enum):
    """What :meth:`Coalescing.offer` did with a mark."""

    STALE = "stale"
    """Dropped: older than the last mark offered for the symbol."""
    READY = "ready"
    """The symbol has marks waiting now and no worker has it: hand it out."""
    FOLDED = "folded"
    """Kept with the symbol's other waiting marks (it is already waiting or being evaluated)."""


class Coalescing:
    """Per-symbol extremes of the marks not yet evaluated, and which symbols are busy."""

    def __init__(self) -> None:
        self._pending: dict[str, Extremes] = {}
        self._busy: set[str] = set()
        self._last_ts: dict[str, int] = {}

    def offer(self, mark: Mark) -> Offered:
        """Add a mark; say whether the symbol just became ready to hand out."""
        symbol, ts_ms = mark.tick.symbol, mark.tick.ts_ms
        if ts_ms < self._last_ts.get(symbol, -1):
            return Offered.STALE
        self._last_ts[symbol] = ts_ms
        pending = self._pending.get(symbol)
        if pending is not None:
            pending.add(mark)
            return Offered.FOLDED
        self._pending[symbol] = Extremes.of(mark)
        return Offered.FOLDED if symbol in self._busy else Offered.READY

    def take(self, symbol: str) -> list[Mark]:
        """The marks to evaluate for ``symbol``, in time order, and mark it busy.

        Empty when none waits (the symbol is then not marked busy).
        """
        pending = self._pending.pop(symbol, None)
        if pending is None:
            return []
        self._busy.add(symbol)
        return pending.marks()

    def done(self, symbol: str) -> bool:
        """The worker finished ``symbol``; True when marks arrived meanwhile (hand it out)."""
        self._busy.discard(symbol)
        return symbol in self._pending

    @property
    def busy(self) -> bool:
        """True while a worker is evaluating some symbol."""
        return bool(self._busy)

    @property
    def backlog(self) -> int:
        """Symbols with marks waiting to be evaluated."""
        return len(self._pending)


class HeldBack:
    """Marks of symbols this monitor does not evaluate (another holds the lease).

    Kept as extremes per symbol with the time the first of them was received,
    so a monitor that takes over a symbol can evaluate what arrived during the
    hand-over. Marks received more than ``window_s`` after the first start
    afresh (the older ones were evaluated by the holder, or are too old to
    matter), and :meth:`take` returns nothing once two windows have passed.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._pending: dict[str, tuple[Extremes, float]] = {}

    def offer(self, mark: Mark) -> None:
        """Keep a mark that was not evaluated here."""
        held = self._pending.get(mark.tick.symbol)
        if held is None or mark.received_s - held[1] > self.window_s:
            self._pending[mark.tick.symbol] = (Extremes.of(mark), mark.received_s)
            return
        held[0].add(mark)

    def take(self, symbol: str, now_s: float) -> list[Mark]:
        """The held marks of ``symbol`` in time order, forgetting them; empty if too old."""
        held = self._pending.pop(symbol, None)
        if held is None or now_s - held[1] > 2 * self.window_s:
            return []
        return held[0].marks()
