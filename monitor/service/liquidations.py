"""The liquidation gauges and the cluster alert: a background task of the monitor, opt-in.

Every ``liquidation_watch.refresh_s``, for each watched symbol this monitor
holds the lease of, it reads the mark and asks the symbol's liquidation book
(:mod:`monitor.state.books`, the one ``GET /api/stress`` answers from) what
liquidates at each distance against each side
(:meth:`~monitor.core.book.LiquidationBook.within`): the sums of the cells beyond
each price and the members of its cell, whatever the book's size.

The work is off the tick path: each Redis call has the client's reply
deadline, the book is filed and caught up with the loop given back every few
positions, and symbols are computed one after the other. While a large book is
first filed, a round finds it pending and skips the symbol. A symbol another
monitor holds has no series here (its holder reports it).

The alert (:mod:`monitor.core.clusters`) keeps its state in Redis
(:mod:`monitor.state.clusters`), read before each decision: an alert is queued in
the symbol's outbox (:meth:`~monitor.state.outbox.Outbox.enqueue`) and then its
new state written, so a restart between the two announces the transition again
under the same id (a subscriber that keeps ids gets it once), and a restart after
them announces nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

import orjson
import structlog

from monitor.config.model import LiquidationWatch
from monitor.core import topics
from monitor.core.clusters import GAUGE_DISTANCES, ClusterAlert, ClusterRule, alert_id, decide
from monitor.core.margin import Contract, Side
from monitor.core.stress import Within, decimal_text
from monitor.state.books import BookPending, Books
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.clusters import ClusterStates
from monitor.state.outbox import Outbox
from monitor.state.readmodel import ReadModel
from monitor.state.transport import REDIS_DOWN
from monitor.telemetry.metrics import Metrics

log = structlog.get_logger("liqmon.liquidations")


class LiquidationWatcher:
    """Computes the watched symbols' gauges and judges their cluster alerts."""

    def __init__(
        self,
        watch: LiquidationWatch,
        contracts: Mapping[str, Contract],
        reads: ReadModel,
        books: Books,
        outbox: Outbox,
        states: ClusterStates,
        metrics: Metrics,
        prefix: str,
        owns: Callable[[str], bool],
        wall_clock_ms: Callable[[], int],
        generation: Callable[[], int] = lambda: 1,
    ) -> None:
        """``generation``: Redis's, which alert ids carry
        (:func:`~monitor.core.clusters.alert_id`)."""
        self.refresh_s = watch.refresh_s
        self.symbols = watch.watched(contracts)
        self.rules = watch.rules()
        self.contracts = contracts
        self.reads = reads
        self.books = books
        self.outbox = outbox
        self.states = states
        self.metrics = metrics
        self.prefix = prefix
        self.owns = owns
        self.wall_clock_ms = wall_clock_ms
        self.generation = generation

    async def run(self) -> None:
        """Compute every watched symbol every ``refresh_s``, until cancelled.

        Cancelling is safe at any await: at worst an alert queued but not yet
        recorded is queued again, under the same id, by the next monitor to run.
        """
        while True:
            raise_if_cancelling()
            started = time.monotonic()
            for symbol in self.symbols:
                if not self.owns(symbol):
                    self._forget(symbol)
                    continue
                try:
                    await self.refresh(symbol)
                except REDIS_DOWN as error:
                    # Tried again next round; readiness reports Redis.
                    log.warning("liquidation_watch_failed", symbol=symbol, error=str(error))
                except Exception:
                    # A bug (a record the walk cannot read, say): counted and logged;
                    # an optional report must not stop the monitor.
                    self.metrics.evaluation_errors.labels("liquidation_watch").inc()
                    log.exception("liquidation_watch_error", symbol=symbol)
            await asyncio.sleep(max(0.0, started + self.refresh_s - time.monotonic()))

    async def refresh(self, symbol: str) -> Within | None:
        """Compute ``symbol`` once: its gauges and, if it has one, its alert (None: no mark
        stored yet, nothing computed)."""
        started = time.perf_counter()
        quote = await self.reads.quote(symbol)
        if quote is None:
            return None
        rule = self.rules.get(symbol)
        distances = {*GAUGE_DISTANCES, *([rule.distance] if rule is not None else [])}
        try:
            book = await self.books.book(symbol, self.refresh_s)
        except BookPending as pending:
            # Filed on: the next round finds it further on, or done.
            log.info("liquidation_watch_pending", symbol=symbol, filed=pending.filed)
            return None
        within = book.within(quote.mark, distances)
        for side in Side:
            for distance in GAUGE_DISTANCES:
                self.metrics.liquidation_within.labels(symbol, side.value, str(distance)).set(
                    float(within.notional(side, distance))
                )
        if rule is not None:
            await self._judge(symbol, quote.mark, within, rule)
        self.metrics.liquidation_book_positions.labels(symbol).set(len(book))
        self.metrics.liquidation_refresh_seconds.labels(symbol).set(time.perf_counter() - started)
        self.metrics.liquidation_refreshes.labels(symbol).inc()
        return within

    async def _judge(self, symbol: str, mark: Decimal, within: Within, rule: ClusterRule) -> None:
        """Raise or clear each side's alert (:func:`~monitor.core.clusters.decide`)."""
        states = await self.states.load(symbol)
        for side in Side:
            notional = within.notional(side, rule.distance)
            state, alert = decide(states[side], notional, rule)
            if alert is None:
                continue
            identifier = alert_id(symbol, side, alert, state.episode, self.generation())
            detail = {
                "side": side.value,
                "distance": str(rule.distance),
                "price": str(within.prices[side, rule.distance]),
                "mark": str(mark),
                "notional": decimal_text(notional),
                "count": str(within.count(side, rule.distance)),
                "raise_notional": str(rule.raise_notional),
                "clear_notional": str(rule.clear_notional),
            }
            payload = {
                "schema": 1,
                "alert_id": identifier,
                "type": alert.value,
                "symbol": symbol,
                "side": side.value,
                "episode": state.episode,
                "detail": detail,
                "emitted_at": self.wall_clock_ms(),
            }
            self.metrics.alerts.labels(symbol, alert.value).inc()
            level = log.warning if alert is ClusterAlert.RAISED else log.info
            level("liquidation_cluster", symbol=symbol, type=alert.value, **detail)
            topic = topics.alerts(self.prefix, symbol, alert.value)
            await self.outbox.enqueue(symbol, identifier, topic, orjson.dumps(payload))
            await self.states.save(symbol, side, state)

    def _forget(self, symbol: str) -> None:
        """Drop ``symbol``'s series: another monitor holds it and reports them."""
        for side in Side:
            for distance in GAUGE_DISTANCES:
                self.metrics.liquidation_within.remove(symbol, side.value, str(distance))
        self.metrics.liquidation_refresh_seconds.remove(symbol)
        self.metrics.liquidation_book_positions.remove(symbol)
