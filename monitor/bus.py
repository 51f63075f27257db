"""The MQTT adapter: a persistent session that reads prices and positions,
and a publisher connection that drains the Redis outbox, both lean
MQTT 3.1.1 clients from :mod:`monitor.mqtt`.

Both connections live in one loop that follows aiomqtt's reconnection guide:
connect both, back off on :class:`~monitor.mqtt.MqttError`; a failure of
either (keep-alive unanswered, a malformed packet, the broker gone) restarts
both. The consuming session, :class:`~monitor.mqtt.Subscriber`, is persistent
(``clean_session=False`` and a stable client id), so QoS 1 messages
addressed to the monitor while it was away are delivered when it returns;
it acknowledges a QoS 1 message only after the intake handled it, so a
message whose handling did not finish comes again. It costs about a third
of aiomqtt's CPU per message received (``benchmarks/receive.py``).
Events go out through :class:`~monitor.mqtt.Publisher` (client id
``{client_id}-out``, clean session: the outbox is the durable store), which
pipelines a whole batch where aiomqtt costs ~170 µs of Python per publish.
Events leave the outbox only after the broker's PUBACK; an entry whose
publish did not complete stays pending in Redis and is sent again after the
reconnect, which is why event ids are deterministic (subscribers
de-duplicate on them).

aiomqtt remains for the tools around the daemon (:func:`make_client`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiomqtt
import structlog

from feeds.ws import Backoff as ReconnectPolicy
from monitor.cancellation import raise_if_cancelling
from monitor.config import MqttSettings
from monitor.metrics import Metrics
from monitor.mqtt import MqttError, OnMessage, Publisher, Subscriber, tls_context
from monitor.store import REDIS_DOWN, OutboxEntry, Store

log = structlog.get_logger("liqmon.bus")

CLAIM_EVERY_S = 5.0
ABANDONED_AFTER_MS = 15_000
"""An outbox entry read this long ago and never acknowledged belongs to a dead publisher."""

READ_BLOCK_MS = 2000
"""How long one outbox read waits for new events (claimed entries wait at most this)."""


def make_client(settings: MqttSettings, identifier: str, *, persistent: bool) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker (TLS and credentials from the settings)."""
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=identifier,
        clean_session=not persistent,
        tls_context=tls_context(settings),
        max_inflight_messages=settings.max_inflight,
        max_queued_outgoing_messages=0,
        keepalive=30,
        timeout=10,
    )


class Backoff:
    """Sleeps along the feeds' reconnect policy (:class:`feeds.ws.Backoff`, equal
    jitter, doubling from ``first_s`` to ``cap_s``); :meth:`reset` after a success."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 10.0) -> None:
        self.policy = ReconnectPolicy(base_s=first_s, max_s=cap_s)
        self.reset()

    def reset(self) -> None:
        """Start again from the first delay (call after a connection succeeded)."""
        self._delays = self.policy.delays()

    async def wait(self) -> None:
        """Sleep for the next delay."""
        await asyncio.sleep(next(self._delays))


class Bus:
    """Keeps the MQTT connections up: subscriptions in (Subscriber), outbox out (Publisher).

    :attr:`connected` is set while both are up.
    """

    def __init__(
        self,
        settings: MqttSettings,
        store: Store,
        symbols: Sequence[str],
        subscriptions: Sequence[str],
        on_message: OnMessage,
        metrics: Metrics,
        batch_size: int = 500,
    ) -> None:
        self.settings = settings
        self.store = store
        self.symbols = list(symbols)
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.metrics = metrics
        self.batch_size = batch_size
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Connect, subscribe, consume and publish until cancelled. Cancelling is safe."""
        client_id = self.settings.client_id
        backoff = Backoff()
        while True:
            try:
                async with (
                    Subscriber.connect(self.settings, client_id, self.subscriptions) as subscriber,
                    Publisher.connect(self.settings, f"{client_id}-out") as publisher,
                ):
                    self.connected.set()
                    backoff.reset()
                    log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(subscriber.run(self.on_message), name="mqtt-consume")
                        group.create_task(
                            self._publish_while_redis(publisher), name="outbox-publish"
                        )
                        # An idle publisher connection that broke ends readiness now,
                        # not at the next event.
                        group.create_task(publisher.raise_when_lost(), name="outbox-watch")
            except* MqttError as errors:
                self.connected.clear()
                log.warning("mqtt_disconnected", error=str(errors.exceptions[0]))
            await backoff.wait()

    async def _publish_while_redis(self, publisher: Publisher) -> None:
        # Redis away is not an MQTT error: keep the session (and the intake
        # reading it) up and start the outbox over, pending entries first,
        # once Redis answers again. The daemon reports Redis as not ready.
        backoff = Backoff(first_s=0.5, cap_s=2.0)
        # Claimed entries wait here until the publishing loop is free; keyed
        # by entry, since a later claim may return them again meanwhile.
        claimed: dict[tuple[str, bytes], OutboxEntry] = {}
        async with asyncio.TaskGroup() as group:
            group.create_task(self._claim_abandoned(claimed), name="outbox-claim")
            while True:
                raise_if_cancelling()
                try:
                    await self._publish(publisher, claimed)
                except REDIS_DOWN as error:
                    log.warning("outbox_unavailable", error=str(error))
                    await backoff.wait()

    async def _publish(
        self, publisher: Publisher, claimed: dict[tuple[str, bytes], OutboxEntry]
    ) -> None:
        # First what this consumer read but never saw acknowledged (a crash or
        # a lost connection), then new entries as they are committed.
        pending = True
        while True:
            raise_if_cancelling()
            entries = await self.store.read_outbox(
                self.symbols, self.settings.client_id, self.batch_size, READ_BLOCK_MS, pending
            )
            if pending and not entries:
                pending = False
                continue
            if entries:
                await self._send(publisher, entries)
            if claimed:
                taken = list(claimed.values())
                await self._send(publisher, taken)
                for entry in taken:
                    claimed.pop((entry.symbol, entry.entry_id), None)

    async def _claim_abandoned(self, claimed: dict[tuple[str, bytes], OutboxEntry]) -> None:
        # Events another monitor read and never got acknowledged (it died).
        # Its own task: asking every symbol's outbox takes tens of
        # milliseconds, which the publishing loop must not wait for.
        while True:
            await asyncio.sleep(CLAIM_EVERY_S)
            try:
                abandoned = await self.store.claim_abandoned(
                    self.symbols, self.settings.client_id, ABANDONED_AFTER_MS, self.batch_size
                )
            except REDIS_DOWN:
                continue
            if abandoned:
                log.warning("outbox_claimed", count=len(abandoned))
                for entry in abandoned:
                    claimed.setdefault((entry.symbol, entry.entry_id), entry)

    async def _send(self, publisher: Publisher, entries: Sequence[OutboxEntry]) -> None:
        # A batch is written on one connection in outbox order, so the broker
        # keeps per-position order; it is acknowledged in Redis only once
        # every PUBACK has arrived.
        await publisher.publish_batch([(entry.topic, entry.payload) for entry in entries])
        await self.store.ack_outbox(entries)
        await self.store.record_published(entries)
        self.metrics.published.inc(len(entries))
