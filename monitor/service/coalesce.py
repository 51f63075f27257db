"""Coalescing mark ticks per symbol, so falling behind never skips a crossing.

When ticks arrive faster than they are evaluated, only three per symbol are
kept: the lowest and the highest mark seen since the symbol was last taken
(longs liquidate on the low, shorts on the high) and the last one. Memory is
bounded by the number of symbols, whatever the tick rate.

A symbol is handed to at most one worker at a time: while it is being
evaluated, new ticks accumulate and the symbol is handed out again when the
worker calls :meth:`MarkCoalescer.done`. Pure and synchronous; the daemon's
workers wait on :attr:`MarkCoalescer.ready`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from feeds.tick import PriceTick


@dataclass(slots=True)
class _Pending:
    low: PriceTick
    high: PriceTick
    last: PriceTick

    def add(self, tick: PriceTick) -> None:
        """Fold a newer tick into the low, the high and the last."""
        if tick.price < self.low.price:
            self.low = tick
        if tick.price > self.high.price:
            self.high = tick
        self.last = tick


class MarkCoalescer:
    """Per-symbol low/high/last of the mark ticks not yet evaluated."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._busy: set[str] = set()
        self._last_ts: dict[str, int] = {}
        self.ready: asyncio.Queue[str] = asyncio.Queue()

    def offer(self, tick: PriceTick) -> bool:
        """Add a tick; False (dropped) when it is older than the last one offered."""
        if tick.ts_ms < self._last_ts.get(tick.symbol, -1):
            return False
        self._last_ts[tick.symbol] = tick.ts_ms
        pending = self._pending.get(tick.symbol)
        if pending is None:
            self._pending[tick.symbol] = _Pending(tick, tick, tick)
            if tick.symbol not in self._busy:
                self.ready.put_nowait(tick.symbol)
            return True
        pending.add(tick)
        return True

    def take(self, symbol: str) -> list[PriceTick]:
        """The ticks to evaluate for ``symbol``, in time order, and mark it busy."""
        pending = self._pending.pop(symbol, None)
        if pending is None:
            return []
        self._busy.add(symbol)
        extremes = sorted({id(t): t for t in (pending.low, pending.high)}.values(), key=_ts)
        ticks = [tick for tick in extremes if tick is not pending.last]
        return [*ticks, pending.last]

    def done(self, symbol: str) -> None:
        """The worker finished ``symbol``; hand it out again if ticks arrived meanwhile."""
        self._busy.discard(symbol)
        if symbol in self._pending:
            self.ready.put_nowait(symbol)

    @property
    def busy(self) -> bool:
        """True while a worker is evaluating some symbol."""
        return bool(self._busy)

    @property
    def backlog(self) -> int:
        """Symbols waiting to be evaluated."""
        return len(self._pending)


def _ts(tick: PriceTick) -> int:
    return tick.ts_ms


class HeldBack:
    """Marks of symbols this monitor does not evaluate (another holds the lease).

    Kept as low/high/last per symbol with the time they were received, so a
    monitor that takes over a symbol can evaluate what arrived during the
    hand-over; anything older than the caller's window is stale and dropped.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._pending: dict[str, tuple[_Pending, float]] = {}

    def offer(self, tick: PriceTick, now_s: float) -> None:
        """Keep a mark that was not evaluated here (starting afresh once the window passed)."""
        held = self._pending.get(tick.symbol)
        if held is None or now_s - held[1] > self.window_s:
            self._pending[tick.symbol] = (_Pending(tick, tick, tick), now_s)
            return
        held[0].add(tick)

    def take(self, symbol: str, now_s: float) -> list[PriceTick]:
        """The held marks of ``symbol`` in time order, if they arrived within the window."""
        held = self._pending.pop(symbol, None)
        if held is None or now_s - held[1] > 2 * self.window_s:
            return []
        pending = held[0]
        unique = {id(t): t for t in (pending.low, pending.high, pending.last)}
        return sorted(unique.values(), key=_ts)
