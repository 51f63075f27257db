"""Intake: every message from outside goes through here, or is rejected here.

Parsing is pure (:mod:`monitor.core.wire`); this module routes what parsed and
rejects what did not: a structured log line naming the reason, a counter, and
the whole message kept in the dead-letter stream. A rejection never raises
and never touches stored state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Container, Sequence

import orjson
import structlog
from redis.exceptions import ResponseError

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import Limits
from monitor.core import topics
from monitor.core.deadletter import DeadLetter, ObjectRejection, batch_letter
from monitor.core.errors import Rejection
from monitor.core.funding import FundingRate, funding_from_payload
from monitor.core.guards import Alert, AlertType, PriceGuards, RejectReason
from monitor.core.position import PositionUpdate
from monitor.core.wire import positions_from_payload, price_from_payload
from monitor.service.workers import Marks
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.outbox import Outbox
from monitor.state.positions import PositionStore
from monitor.state.transport import REDIS_DOWN
from monitor.telemetry.metrics import Metrics

log = structlog.get_logger("liqmon.intake")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


_DROPPED = {
    RejectReason.OUT_OF_ORDER.value,
    RejectReason.NOT_MARK_SOURCE.value,
    RejectReason.NOT_INDEX_SOURCE.value,
}


class LogThrottle:
    """Log at most ``burst`` rejections per source per ``window_s``; summarize the rest.

    A flood of garbage is then a few lines and a count, not a line per message
    (every rejection is still counted in the metrics and dead-lettered).
    """

    def __init__(self, burst: int = 10, window_s: float = 10.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int, int]] = {}

    def allow(self, source: str, now_s: float) -> int | None:
        """None: do not log this one. Otherwise log it, after a summary of the
        ``n`` lines suppressed in the previous window when ``n`` > 0."""
        start, logged, suppressed = self._windows.get(source, (now_s, 0, 0))
        if now_s - start >= self.window_s:
            self._windows[source] = (now_s, 1, 0)
            return suppressed
        if logged < self.burst:
            self._windows[source] = (start, logged + 1, suppressed)
            return 0
        self._windows[source] = (start, logged, suppressed + 1)
        return None


class Intake:
    """Routes parsed ticks to the tick path; stores position versions before they are acked."""

    def __init__(
        self,
        store: PositionStore,
        outbox: Outbox,
        symbols: Container[str],
        limits: Limits,
        topic_prefix: str,
        marks: Marks,
        apply_positions: Callable[[list[PositionUpdate]], Awaitable[None]],
        metrics: Metrics,
        guards: PriceGuards,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = _wall_ms,
        funding: Callable[[FundingRate], bool] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.symbols = symbols
        self.limits = limits
        self.prefix = topic_prefix
        self.marks = marks
        self.apply_positions = apply_positions
        """Stores a message's good versions; returns once they are stored (see _positions)."""
        self.metrics = metrics
        self.guards = guards
        self.clock = clock
        self.wall_clock_ms = wall_clock_ms
        self.last_mark: dict[str, PriceTick] = {}
        self.throttle = LogThrottle()
        self.dead_letters = DeadLetterWriter(outbox, metrics)
        self.funding = funding
        """Takes a funding announcement (False: ignored); None: funding topics not subscribed."""

    @property
    def price_topics(self) -> list[str]:
        """The MQTT topic filters of the price ticks."""
        filters = [
            topics.price_filter(self.prefix, "mark"),
            topics.price_filter(self.prefix, "index"),
        ]
        return filters + ([topics.funding_filter(self.prefix)] if self.funding else [])

    @property
    def position_topics(self) -> list[str]:
        """The MQTT topic filters of the position versions (a session of their own: their
        handler waits for Redis, and ticks must not wait behind it)."""
        return [topics.positions(self.prefix)]

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one MQTT message; never raises on bad input."""
        try:
            await self._route(topic, payload)
        except Rejection as rejection:
            await self.reject("mqtt", rejection.reason, rejection.detail, payload, topic)
        # A cancellation Redis swallowed on the way must still stop the subscriber that
        # called this (it would wait for the next message instead).
        raise_if_cancelling()

    async def on_tick(self, tick: PriceTick) -> None:
        """Accept a tick from any source (MQTT, a venue feed, a replay), through the guards.

        Raises :class:`Rejection` for a tick that must be dead-lettered (bad
        price, absurd jump, a ``ts`` in the future, unknown symbol);
        out-of-order ticks and ticks from a source not chosen for the symbol
        are dropped and counted. An accepted mark's latency is timed from here.
        """
        received_s = self.clock()
        self.metrics.ticks_received.labels(tick.symbol, tick.kind.value, tick.source).inc()
        if tick.symbol not in self.symbols:
            raise Rejection("unknown_symbol", f"no contract is configured for symbol {tick.symbol}")
        now_ms = self.wall_clock_ms()
        verdict = self.guards.on_tick(tick, received_s, now_ms)
        await self.alerts(verdict.alerts)
        if not verdict.accepted:
            reason = verdict.reason.value if verdict.reason else "rejected"
            if reason in _DROPPED:
                self.metrics.ticks_dropped.labels(tick.symbol, tick.kind.value).inc()
                return
            detail = f"{tick.kind.value} {tick.price} from {tick.source}"
            if verdict.reason is RejectReason.FUTURE_TS:
                ahead_s = (tick.ts_ms - now_ms) / 1000
                detail += (
                    f": ts {tick.ts_ms} is {ahead_s:.0f} s ahead of this monitor's clock"
                    " (ts is epoch milliseconds; see max_future_skew_s)"
                )
            raise Rejection(reason, detail)
        if tick.kind is PriceKind.INDEX and verdict.index is not None:
            # Stored at once, in arrival order, so a mark that follows it is
            # reported with it. The index is informational: when Redis is down
            # it is dropped rather than holding up the message loop.
            try:
                ceiling = self.guards.ts_ceiling_ms(tick.symbol, now_ms)
                await self.store.accept_index(tick.symbol, verdict.index, tick.ts_ms, ceiling)
            except REDIS_DOWN:
                self.metrics.ticks_dropped.labels(tick.symbol, tick.kind.value).inc()
        if verdict.mark is not None:
            self.last_mark[tick.symbol] = verdict.mark
            if not self.marks.offer(verdict.mark, received_s):
                self.metrics.ticks_dropped.labels(tick.symbol, tick.kind.value).inc()

    async def alerts(self, alerts: Sequence[Alert]) -> None:
        """Publish guard alerts (through the outbox) and log and count them."""
        for alert in alerts:
            self.metrics.alerts.labels(alert.symbol, alert.type.value).inc()
            log.warning("price_alert", symbol=alert.symbol, type=alert.type.value, **alert.detail)
            emitted_ms = self.wall_clock_ms()
            alert_id = alert.alert_id
            payload = {
                "schema": 1,
                "alert_id": alert_id,
                "type": alert.type.value,
                "symbol": alert.symbol,
                "detail": alert.detail,
                "emitted_at": emitted_ms,
            }
            topic = topics.alerts(self.prefix, alert.symbol, alert.type.value)
            try:
                await self.outbox.enqueue(alert.symbol, alert_id, topic, orjson.dumps(payload))
            except REDIS_DOWN as error:
                log.error("alert_not_queued", symbol=alert.symbol, error=str(error))
            last = self.last_mark.get(alert.symbol)
            if alert.type is AlertType.PRICE_DEVIATION_CLEARED and last is not None:
                # Liquidations held during the deviation are decided now, at
                # the current mark, rather than at the next tick.
                self.marks.offer(last, self.clock())

    async def reject(
        self, source: str, reason: str, detail: str, payload: bytes, topic: str = ""
    ) -> None:
        """Count, log and dead-letter one unusable message (without waiting for Redis)."""
        self.metrics.rejected.labels(source, reason).inc()
        self._log_rejection(source, topic, reason, detail)
        where = f"{source}:{topic}" if topic else source
        self.dead_letters.offer(DeadLetter(where, reason, detail, payload))

    def _log_rejection(self, source: str, topic: str, reason: str, detail: str) -> None:
        suppressed = self.throttle.allow(source, self.clock())
        if suppressed is not None:
            if suppressed:
                log.warning("messages_rejected_unlogged", source=source, count=suppressed)
            log.warning(
                "message_rejected", source=source, topic=topic, reason=reason, detail=detail
            )

    async def _route(self, topic: str, payload: bytes) -> None:
        if topic == topics.positions(self.prefix):
            await self._positions(payload)
            return
        price = topics.price_parts(topic)
        if price is not None:
            symbol, kind = price
            if symbol not in self.symbols:
                raise Rejection("unknown_symbol", f"no contract is configured for symbol {symbol}")
            tick = price_from_payload(
                payload, symbol, PriceKind(kind), "mqtt", self.limits.max_payload_bytes
            )
            await self.on_tick(tick)
            return
        funded = topics.funding_symbol(topic)
        if funded is not None:
            if self.funding is None:
                return  # funding applied by no symbol (left in the session from before)
            if funded not in self.symbols:
                raise Rejection("unknown_symbol", f"no contract is configured for symbol {funded}")
            announced = funding_from_payload(payload, funded, self.limits.max_payload_bytes)
            if not self.funding(announced):
                log.debug("funding_ignored", symbol=funded, ts=announced.funding_ts_ms)
            return
        raise Rejection("unknown_topic", f"no handler for topic {topic[:200]}")

    async def _positions(self, payload: bytes) -> None:
        good: list[PositionUpdate] = []
        bad: list[ObjectRejection] = []
        parsed = positions_from_payload(
            payload, self.symbols, self.limits.max_payload_bytes, self.limits.max_batch
        )
        for index, item in enumerate(parsed):
            if isinstance(item, Rejection):
                self.metrics.rejected.labels("mqtt", item.reason).inc()
                bad.append(ObjectRejection(index, item.reason, item.detail))
            else:
                good.append(item)
        if bad:
            # One entry for the message, listing its bad objects: a batch with many
            # is one write and one copy of the payload, whatever the count.
            topic = topics.positions(self.prefix)
            letter = batch_letter(f"mqtt:{topic}", payload, bad, len(good) + len(bad))
            self._log_rejection("mqtt", topic, letter.reason, letter.detail)
            self.dead_letters.offer(letter)
        if good:
            # Awaited, not queued: the broker gets this message's PUBACK only
            # once its versions are stored, so a stop or a crash meanwhile
            # leaves it unacknowledged, and it comes again.
            await self.apply_positions(good)


class DeadLetterWriter:
    """Dead letters written off the message loop: taken at once, written in pipelines.

    Rejecting a flood then costs the message loop no Redis round trip. While
    Redis is slow or away, up to ``capacity`` letters wait; past that, and on a
    Redis error, letters are lost, logged and counted (``liqmon_dead_letters_lost_total``):
    the rejection itself is counted either way.
    """

    def __init__(self, outbox: Outbox, metrics: Metrics, capacity: int = 1000) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self._queue: asyncio.Queue[DeadLetter] = asyncio.Queue(capacity)
        self._writing = 0

    @property
    def idle(self) -> bool:
        """True when no letter waits or is being written."""
        return self._queue.empty() and not self._writing

    def offer(self, letter: DeadLetter) -> None:
        """Queue ``letter`` for writing; never waits."""
        try:
            self._queue.put_nowait(letter)
        except asyncio.QueueFull:
            self._lost(1, "queue full")

    async def run(self) -> None:
        """Write letters as they come, up to :data:`DEAD_LETTER_BATCH` per round trip."""
        while True:
            raise_if_cancelling()
            letters = [await self._queue.get()]
            while len(letters) < DEAD_LETTER_BATCH and not self._queue.empty():
                letters.append(self._queue.get_nowait())
            self._writing = len(letters)
            try:
                await self.outbox.dead_letters(letters)
            except (*REDIS_DOWN, ResponseError) as error:
                self._lost(len(letters), str(error))
            finally:
                self._writing = 0

    def _lost(self, count: int, why: str) -> None:
        self.metrics.dead_letters_lost.inc(count)
        log.error("dead_letters_lost", count=count, error=why)


DEAD_LETTER_BATCH = 50
"""Dead letters per round trip (each may carry a payload of up to a mebibyte)."""
