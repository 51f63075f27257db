"""Intake: every message from outside goes through here, or is rejected here.

Parsing is pure (:mod:`monitor.wire`); this module routes what parsed and
rejects what did not: a structured log line naming the reason, a counter, and
the whole message kept in the dead-letter stream. A rejection never raises
and never touches stored state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container

import structlog

from feeds.tick import PriceKind, PriceTick
from monitor.coalesce import MarkCoalescer
from monitor.config import Limits
from monitor.errors import Rejection
from monitor.metrics import Metrics
from monitor.position import PositionUpdate
from monitor.store import REDIS_DOWN, Store
from monitor.wire import positions_from_payload, price_from_payload

log = structlog.get_logger("liqmon.intake")


class Intake:
    """Routes parsed ticks to the coalescer and position versions to their queue."""

    def __init__(
        self,
        store: Store,
        symbols: Container[str],
        limits: Limits,
        topic_prefix: str,
        coalescer: MarkCoalescer,
        positions: asyncio.Queue[list[PositionUpdate]],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.symbols = symbols
        self.limits = limits
        self.prefix = topic_prefix
        self.coalescer = coalescer
        self.positions = positions
        self.metrics = metrics

    @property
    def subscriptions(self) -> list[str]:
        """The MQTT topic filters the daemon reads."""
        return [
            f"{self.prefix}/prices/+/mark",
            f"{self.prefix}/prices/+/index",
            f"{self.prefix}/positions",
        ]

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one MQTT message; never raises on bad input."""
        try:
            await self._route(topic, payload)
        except Rejection as rejection:
            await self.reject("mqtt", rejection.reason, rejection.detail, payload, topic)

    async def on_tick(self, tick: PriceTick) -> None:
        """Accept a tick from any source (MQTT, a venue feed, a replay)."""
        self.metrics.ticks_received.labels(tick.symbol, tick.kind.value, tick.source).inc()
        if tick.symbol not in self.symbols:
            raise Rejection("unknown_symbol", f"no contract is configured for symbol {tick.symbol}")
        if tick.kind is PriceKind.INDEX:
            # Stored at once, in arrival order, so a mark that follows it is
            # reported with it. The index is informational: when Redis is down
            # it is dropped rather than holding up the message loop.
            try:
                accepted = await self.store.accept_index(tick.symbol, tick.price, tick.ts_ms)
            except REDIS_DOWN:
                accepted = False
            if not accepted:
                self.metrics.ticks_dropped.labels(tick.symbol, tick.kind.value).inc()
        elif not self.coalescer.offer(tick):
            self.metrics.ticks_dropped.labels(tick.symbol, tick.kind.value).inc()

    async def reject(
        self, source: str, reason: str, detail: str, payload: bytes, topic: str = ""
    ) -> None:
        """Count, log and dead-letter one unusable message."""
        self.metrics.rejected.labels(source, reason).inc()
        log.warning("message_rejected", source=source, topic=topic, reason=reason, detail=detail)
        await self.store.dead_letter(
            f"{source}:{topic}" if topic else source, reason, detail, payload
        )

    async def _route(self, topic: str, payload: bytes) -> None:
        levels = topic.split("/")
        if topic == f"{self.prefix}/positions":
            await self._positions(payload)
            return
        if len(levels) == 4 and levels[1] == "prices" and levels[3] in ("mark", "index"):
            symbol = levels[2]
            if symbol not in self.symbols:
                raise Rejection("unknown_symbol", f"no contract is configured for symbol {symbol}")
            tick = price_from_payload(
                payload, symbol, PriceKind(levels[3]), "mqtt", self.limits.max_payload_bytes
            )
            await self.on_tick(tick)
            return
        raise Rejection("unknown_topic", f"no handler for topic {topic[:200]}")

    async def _positions(self, payload: bytes) -> None:
        good: list[PositionUpdate] = []
        parsed = positions_from_payload(
            payload, self.symbols, self.limits.max_payload_bytes, self.limits.max_batch
        )
        for item in parsed:
            if isinstance(item, Rejection):
                await self.reject(
                    "mqtt", item.reason, item.detail, payload, f"{self.prefix}/positions"
                )
            else:
                good.append(item)
        if good:
            await self.positions.put(good)
