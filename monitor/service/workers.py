"""The tick path: mark ticks from the intake to committed events, in one place.

A mark accepted by the intake is offered here with the moment it was
received. The marks of symbols another monitor holds are held back for the
hand-over (:mod:`monitor.service.handover`); the others are coalesced per
symbol (:mod:`monitor.core.coalescing`: falling behind never skips a
crossing) and the symbol is queued for the workers. A worker takes every
symbol waiting, up to :data:`TICK_BATCH`: their marks share one Redis round
trip in :meth:`~monitor.service.engine.Engine.on_marks`, so under load
batches grow by themselves and the cost per tick falls just when ticks come
fastest. Each evaluated tick is counted and timed from its receipt, so the
time it waited here counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from feeds.tick import PriceTick
from monitor.core.coalescing import Coalescing, HeldBack, Mark, Offered
from monitor.service.engine import Engine, Outcome
from monitor.state.cancellation import raise_if_cancelling
from monitor.telemetry.metrics import Metrics

log = structlog.get_logger("liqmon.workers")

TICK_BATCH = 64
"""Most symbols whose marks share one Redis round trip (bounds one reply's size)."""

EVENT_LOG_LINES = 100
"""Events of one tick (or batch of versions) logged one line each; the rest are summed."""


class Marks(Protocol):
    """Where accepted marks go (:class:`TickWorkers`)."""

    def offer(self, tick: PriceTick, received_s: float) -> bool:
        """Take a mark received at ``received_s`` (the intake's clock); False: dropped."""


class TickWorkers:
    """Coalesced mark ticks, evaluated by the engine, counted in the metrics.

    ``owns`` tells whether this monitor evaluates a symbol (its lease);
    marks of the others go to ``held_back``. ``clock`` is the monotonic
    clock the intake stamps receipts with. Run :meth:`run` once per worker.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        owns: Callable[[str], bool],
        held_back: HeldBack,
        clock: Callable[[], float] = time.monotonic,
        batch: int = TICK_BATCH,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.owns = owns
        self.held_back = held_back
        self.clock = clock
        self.batch = batch
        self._coalescing = Coalescing()
        self._ready: asyncio.Queue[str] = asyncio.Queue()

    def offer(self, tick: PriceTick, received_s: float) -> bool:
        """Take a mark received at ``received_s``; False (dropped) when it is older than
        the last one offered for its symbol. Never waits."""
        mark = Mark(tick, received_s)
        if not self.owns(tick.symbol):
            self.held_back.offer(mark)
            return True
        offered = self._coalescing.offer(mark)
        if offered is Offered.READY:
            self._ready.put_nowait(tick.symbol)
        return offered is not Offered.STALE

    @property
    def idle(self) -> bool:
        """True when no mark is waiting or being evaluated."""
        return not (self._coalescing.busy or self._coalescing.backlog)

    async def run(self) -> None:
        """One worker: take the symbols waiting, evaluate their marks, forever.

        Cancelling it is safe: what it had committed stays committed, and a
        tick cut short is decided again from its crossed trigger at the next one.
        """
        while True:
            raise_if_cancelling()
            symbols = [await self._ready.get()]
            while len(symbols) < self.batch and not self._ready.empty():
                symbols.append(self._ready.get_nowait())
            taken_s = self.clock()
            try:
                pending = [marks for marks in map(self._coalescing.take, symbols) if marks]
                # Round n evaluates the n-th mark of each symbol: one round trip per round.
                while pending:
                    await self._evaluate([marks[0] for marks in pending], taken_s)
                    pending = [marks[1:] for marks in pending if len(marks) > 1]
            finally:
                for symbol in symbols:
                    if self._coalescing.done(symbol):
                        self._ready.put_nowait(symbol)

    async def _evaluate(self, marks: list[Mark], taken_s: float) -> None:
        """Marks of distinct symbols through the engine, each counted and timed when done."""
        received = {mark.tick.symbol: mark.received_s for mark in marks}
        metrics = self.metrics
        async for marked in self.engine.on_marks([mark.tick for mark in marks]):
            symbol = marked.tick.symbol
            if marked.error is not None:
                metrics.evaluation_errors.labels("tick").inc()
                continue
            if marked.outcome is None:
                metrics.ticks_dropped.labels(symbol, "mark").inc()
                continue
            if marked.outcome.evaluated:
                metrics.candidates.labels(symbol).inc(marked.outcome.evaluated)
                record_events(metrics, marked.outcome)
            metrics.ticks_evaluated.labels(symbol).inc()
            now_s = self.clock()
            metrics.tick_seconds.observe(now_s - received[symbol])
            metrics.tick_worker_seconds.observe(now_s - taken_s)


def record_events(metrics: Metrics, outcome: Outcome) -> None:
    """Count an outcome's events by type and log them, a line each up to a bound."""
    counts: dict[str, int] = {}
    for event in outcome.events:
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
    for kind, count in counts.items():
        metrics.events.labels(kind).inc(count)
    # A line per event, up to a bound: a crash liquidating 100,000
    # positions would spend a second writing log lines while its events
    # wait. Every event is in the outbox and on the bus; the rest of a
    # burst is summed up in one line.
    for event in outcome.events[:EVENT_LOG_LINES]:
        log.info(
            "event",
            event_id=event.event_id,
            type=event.type.value,
            position_id=event.payload["position_id"],
            account=event.account,
            symbol=event.symbol,
            mark_price=event.payload["mark_price"],
        )
    if len(outcome.events) > EVENT_LOG_LINES:
        log.info(
            "events_not_logged_one_by_one",
            count=len(outcome.events) - EVENT_LOG_LINES,
            by_type=counts,
            symbol=outcome.events[0].symbol,
        )
