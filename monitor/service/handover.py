"""Taking a symbol over from another monitor: what its lease change sets off here.

Symbol leases (:mod:`monitor.state.leases`) say which monitor evaluates a
symbol. Until this one holds a symbol, its accepted marks are held back
(:class:`monitor.core.coalescing.HeldBack`, filled by the tick workers). When
a lease refresh acquires symbols, :meth:`Handover.taken_over` runs: the
previous holder may have died mid-tick, so each symbol is evaluated at its
stored mark, then at what arrived here during the hand-over; the price guards
start watching it, and stop watching the symbols this monitor no longer holds
(so two monitors do not announce one feed episode twice).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from feeds.tick import PriceKind, PriceTick
from monitor.core.coalescing import HeldBack
from monitor.core.guards import Alert, PriceGuards
from monitor.service.engine import Retry
from monitor.service.workers import Marks
from monitor.state.leases import Leases
from monitor.state.positions import PositionStore


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Handover:
    """What this monitor does when it acquires symbols."""

    def __init__(
        self,
        leases: Leases,
        held_back: HeldBack,
        guards: PriceGuards,
        store: PositionStore,
        workers: Marks,
        alerts: Callable[[Sequence[Alert]], Awaitable[None]],
        retry: Retry,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        """``alerts`` publishes the guards' alerts; ``retry`` waits for Redis to answer."""
        self.leases = leases
        self.held_back = held_back
        self.guards = guards
        self.store = store
        self.workers = workers
        self.alerts = alerts
        self.retry = retry
        self.clock = clock
        self.wall_clock_ms = wall_clock_ms

    async def taken_over(self, symbols: list[str]) -> None:
        """Called with the symbols a lease refresh has just acquired (after every refresh).

        While Redis is away it waits (``retry``); cancelling it leaves the
        rest of the symbols unevaluated until their next tick.
        """
        for symbol in self.guards.watching - self.leases.held:
            self.guards.unwatch(symbol)
        for symbol in symbols:
            ticks = [mark.tick for mark in self.held_back.take(symbol, self.clock())]
            quote = await self.retry(self.store.quote, symbol)
            now_ms = self.wall_clock_ms()
            stored = None
            if quote is not None and quote.mark_ts_ms <= self.guards.ts_ceiling_ms(symbol, now_ms):
                stored = PriceTick(symbol, PriceKind.MARK, quote.mark, quote.mark_ts_ms, "takeover")
                ticks = sorted([stored, *ticks], key=lambda tick: tick.ts_ms)
            await self.alerts(self.guards.watch(symbol, self.clock(), now_ms, stored))
            # Timed from now: the hand-over's wait is the lease's, not the tick path's.
            offered_s = self.clock()
            for tick in ticks:
                self.workers.offer(tick, offered_s)
