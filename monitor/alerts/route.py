"""One route's delivery: filter, skip what was delivered, fold past the rate limit, deliver.

Theory of operation: the route's persistent MQTT session hands every
message to :meth:`RouteWorker.on_message` in order, and acknowledges it to
the broker only once that returns (:meth:`monitor.bus.client.Subscriber.run`).
:meth:`~RouteWorker.on_message` returns only when the item is settled:

* left out by the route's filters;
* already delivered (its key is marked in Redis): a repeat, not sent;
* folded: kept in Redis until the window's summary goes out;
* accepted by the sink and marked delivered; or
* dead-lettered: refused by the sink, or still failing past the retention.

Until then it retries (:mod:`monitor.alerts.policy`) and holds the session
back: the broker keeps what follows (the retention of an outage is the
broker's queue, see the README). Redis unavailable is waited out the same
way: nothing is acknowledged that is not recorded.

Cancelling :meth:`~RouteWorker.on_message` is safe: the message is not
acknowledged, and the broker sends it again to the next session (with the
same key; the sink may have accepted it already).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import structlog

from monitor.alerts.filters import accepts
from monitor.alerts.folding import RateWindow, summarize
from monitor.alerts.items import Item, item_of
from monitor.alerts.ledger import RouteLedger
from monitor.alerts.metrics import AlertMetrics
from monitor.alerts.policy import backoff_s
from monitor.alerts.sinks import Refused, Retryable, Sink
from monitor.config.model import AlertRoute
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.transport import REDIS_DOWN

log = structlog.get_logger("liqmon.alerts")

P = ParamSpec("P")
T = TypeVar("T")

REDIS_RETRY_CAP_S = 2.0
"""The longest wait between two tries of a Redis call while Redis is unavailable."""


class RouteWorker:
    """Delivers one route's items; ``now`` is the wall clock, ``sleep`` waits (injectable)."""

    def __init__(
        self,
        route: AlertRoute,
        sink: Sink,
        ledger: RouteLedger,
        metrics: AlertMetrics,
        retention_s: float,
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
        fold_check_s: float = 0.25,
    ) -> None:
        self.route = route
        self.sink = sink
        self.ledger = ledger
        self.metrics = metrics
        self.retention_s = route.retention_s or retention_s
        self.now = now
        self.sleep = sleep
        self.draw = draw
        self.fold_check_s = fold_check_s
        self.window = (
            RateWindow(route.max_per_window, route.window_s)
            if route.max_per_window is not None
            else None
        )
        self.redis_ok = True
        self.fold_opened_s: float | None = None
        self._pending: dict[str, float] = {}
        name = route.name
        metrics.oldest.labels(name).set_function(self.oldest_undelivered_s)
        self._delivered = metrics.delivered.labels(name)
        self._retried = metrics.retried.labels(name)
        self._folded = metrics.folded.labels(name)
        self._dead = metrics.dead_lettered.labels(name)
        self._repeats = metrics.repeats.labels(name)
        self._filtered = metrics.filtered.labels(name)
        self._latency = metrics.latency.labels(name)
        self._last = metrics.last_delivered.labels(name)

    def oldest_undelivered_s(self) -> float:
        """Age of the oldest item received and not yet settled (a fold counts from its start)."""
        starts = list(self._pending.values())
        if self.fold_opened_s is not None:
            starts.append(self.fold_opened_s)
        return max(0.0, self.now() - min(starts)) if starts else 0.0

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Settle one bus message (see the module's docstring). Cancelling is safe."""
        try:
            await self._settle(topic, payload)
        finally:
            # A cancellation Redis swallowed on the way must still stop the subscriber
            # that called this (it would wait for the next message instead).
            raise_if_cancelling()

    async def _settle(self, topic: str, payload: bytes) -> None:
        item = item_of(topic, payload)
        if item is None:
            self._filtered.inc()
            log.warning("alert_not_understood", route=self.route.name, topic=topic)
            return
        if not accepts(self.route, item):
            self._filtered.inc()
            return
        if await self._redis(self.ledger.delivered, item.key):
            self._repeats.inc()
            return
        now_s = self.now()
        if self.window is not None and not self.window.admit(now_s):
            await self._redis(self.ledger.fold, item, int(now_s * 1000))
            if self.fold_opened_s is None:
                self.fold_opened_s = now_s
            self._folded.inc()
            return
        await self.deliver(item, now_s)

    async def deliver(self, item: Item, received_s: float, record: bool = True) -> bool:
        """Send ``item`` until the sink accepts it (True) or it is dead-lettered (False).

        ``record``: mark it delivered here (a summary's items are marked by the caller).
        The retention counts from when the item was emitted, if it says, else received.
        """
        emitted = item.emitted_ms
        since_s = min(received_s, emitted / 1000) if emitted is not None else received_s
        self._pending[item.key] = received_s
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    await self.sink.send(item)
                except Refused as refused:
                    await self._dead_letter(item, str(refused), attempts)
                    return False
                except Retryable as failed:
                    left_s = since_s + self.retention_s - self.now()
                    if left_s <= 0:
                        await self._dead_letter(item, f"past the retention: {failed}", attempts)
                        return False
                    self._retried.inc()
                    wait_s = backoff_s(
                        attempts, self.route.backoff_first_s, self.route.backoff_max_s, self.draw()
                    )
                    wait_s = min(max(wait_s, failed.retry_after_s or 0.0), left_s)
                    log.info(
                        "alert_retry",
                        route=self.route.name,
                        key=item.key,
                        attempt=attempts,
                        wait_s=round(wait_s, 3),
                        error=str(failed),
                    )
                    await self.sleep(wait_s)
                    continue
                break
            done_s = self.now()
            self._latency.observe(max(0.0, done_s - received_s))
            self._delivered.inc()
            self._last.set(done_s)
            if record:
                await self._redis(self.ledger.record, [item.key])
            return True
        finally:
            del self._pending[item.key]

    async def _dead_letter(self, item: Item, error: str, attempts: int) -> None:
        log.warning("alert_dead_lettered", route=self.route.name, key=item.key, error=error[:300])
        await self._redis(self.ledger.dead_letter, item, error, attempts, int(self.now() * 1000))
        self._dead.inc()

    async def run_folds(self) -> None:
        """Send each fold's summary once its window closed. Runs until cancelled (safe)."""
        opened_ms = await self._redis(self.ledger.fold_opened_ms)
        if opened_ms is not None:
            self.fold_opened_s = min(self.fold_opened_s or opened_ms / 1000, opened_ms / 1000)
        while True:
            raise_if_cancelling()
            await self.sleep(self.fold_check_s)
            opened = self.fold_opened_s
            if opened is None or self.now() < opened + self.route.window_s:
                continue
            await self.flush_fold()

    async def flush_fold(self) -> None:
        """Summarize and send the oldest fold now (whatever its window)."""
        taken = await self._redis(self.ledger.take_fold)
        if taken is not None and not taken[1]:  # nothing readable was folded
            await self._redis(self.ledger.fold_done, [], None)
        elif taken is not None:
            window_ms, items = taken
            summary = summarize(self.route.name, window_ms, self.route.window_s, items)
            accepted = await self._redis(self.ledger.delivered, summary.key)
            if not accepted:
                accepted = await self.deliver(summary, window_ms / 1000, record=False)
            keys = [item.key for item in items]
            await self._redis(self.ledger.fold_done, keys, summary.key if accepted else None)
        opened_ms = await self._redis(self.ledger.fold_opened_ms)
        self.fold_opened_s = None if opened_ms is None else opened_ms / 1000

    async def retry_dead_letters(self) -> tuple[int, list[str]]:
        """Send the route's dead letters again, one attempt each, oldest first.

        Returns how many were delivered (or found delivered meanwhile) and the
        errors of those still failing, which stay. Stops at the first failure
        to reach the sink (it is still away: the rest would fail alike).
        """
        delivered, failing = 0, []
        for letter in await self.ledger.dead_letters():
            item = item_of(letter.topic, letter.payload)
            if item is None:
                failing.append(f"{letter.entry_id}: not an item liqmon can send")
                continue
            if not await self.ledger.delivered(item.key):
                try:
                    await self.sink.send(item)
                except Refused as refused:
                    failing.append(f"{item.key}: {refused}")
                    continue
                except Retryable as failed:
                    failing.append(f"{item.key}: {failed}")
                    break
                await self.ledger.record([item.key])
                self._delivered.inc()
            await self.ledger.forget([letter.entry_id])
            delivered += 1
        return delivered, failing

    async def _redis(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` retried while Redis is unavailable (nothing is settled without it)."""
        attempt = 0
        while True:
            raise_if_cancelling()
            try:
                result = await call(*args, **kwargs)
            except REDIS_DOWN as error:
                attempt += 1
                if self.redis_ok:
                    log.warning("alerts_redis_unavailable", route=self.route.name, error=str(error))
                self.redis_ok = False
                await self.sleep(backoff_s(attempt, 0.05, REDIS_RETRY_CAP_S, self.draw()))
                continue
            if not self.redis_ok:
                log.info("alerts_redis_available", route=self.route.name, tries=attempt + 1)
                self.redis_ok = True
            return result
