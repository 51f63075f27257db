"""The outbox relay: moves committed events from the Redis outbox to the broker.

Every state change and its event are written in one Lua script; the relay
reads the outbox streams as one consumer of the ``publishers`` group, writes
each batch to the broker on one connection (so per-position order holds) and
acknowledges the entries in Redis only once every PUBACK has arrived. An
entry whose publish did not complete stays pending and is sent again: event
ids are deterministic and subscribers de-duplicate on them.

The relay runs inside the monitor (``mqtt.publisher = "inline"``) or as a
process of its own, ``liqmon publish`` (``"separate"``): on a machine with
more than one core, a burst of liquidations then goes out while the monitor
is still evaluating it, instead of after.

A relay reads only the symbols its process holds a lease on (the monitor's
own leases inline; ``liqmon publish`` processes share the symbols by leases
of their own), so one symbol's outbox has one reader at a time and one
position's events leave in the order they were committed. When a lease
moves, the new holder starts reading within one blocking read
(:data:`READ_BLOCK_MS`), and first publishes every entry of that outbox
the old holder had read and not seen acknowledged (:meth:`Relay._take_over`),
so a position's events keep their commit order across the hand-over. Entries
read by a consumer that vanished are also claimed after
:data:`ABANDONED_AFTER_MS` (a safety net for symbols held throughout).

On a Redis Cluster one blocking read cannot span every symbol's outbox (their
keys live in different slots). There, each commit that queues an event
PUBLISHes its symbol on ``{prefix}:outbox-ready`` in the same script; the
relay subscribes, reads the announced symbols' outboxes with non-blocking
reads (grouped per node) and, since pub/sub drops what a lost connection
missed, sweeps every outbox each :data:`SWEEP_EVERY_S`. A read hands out
each entry once (consumer group ``>``), so a sweep and an announcement that
race read it once; an entry is acknowledged only after its PUBACK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from monitor.bus.client import Publisher
from monitor.service.backoff import Backoff
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.outbox import Outbox, OutboxEntry
from monitor.state.transport import REDIS_DOWN
from monitor.telemetry.metrics import Metrics

log = structlog.get_logger("liqmon.relay")

CLAIM_EVERY_S = 5.0
ABANDONED_AFTER_MS = 15_000
"""An outbox entry read this long ago and never acknowledged belongs to a dead publisher."""

READ_BLOCK_MS = 2000
"""How long one outbox read waits for new events (claimed entries wait at most this)."""

LEASE_WAIT_S = 0.1
"""How often a relay holding no lease looks again."""

SYMBOLS_PER_READ_SHARD = 32
MAX_READ_SHARDS = 16
"""On one server: outboxes per blocking read, and at most this many reads (connections)."""

SWEEP_EVERY_S = 2.0
"""On a cluster: how often every outbox is read, whatever was announced (the safety net)."""


class Relay:
    """Drains the outboxes of the symbols it ``owns`` through a connected
    :class:`~monitor.bus.client.Publisher`.

    ``consumer`` names this relay in the outbox's consumer group: a relay
    restarted under the same name sends what it had read and not seen
    acknowledged first; entries of a consumer that vanished are claimed by
    the others after :data:`ABANDONED_AFTER_MS`.
    """

    def __init__(
        self,
        outbox: Outbox,
        symbols: Sequence[str],
        consumer: str,
        metrics: Metrics,
        owns: Callable[[str], bool],
        batch_size: int = 500,
    ) -> None:
        self.outbox = outbox
        self.all_symbols = list(symbols)
        self.consumer = consumer
        self.metrics = metrics
        self.owns = owns
        self.batch_size = batch_size
        self._publishing = asyncio.Lock()
        self._sending: set[tuple[str, bytes]] = set()
        """Entries being published now (their PUBACKs not all in, so still pending)."""
        self._sent_while_claiming: set[tuple[str, bytes]] | None = None
        """Entries acknowledged while a claim was on its way: the claim may have seen them
        pending (None: no claim running)."""

    @property
    def symbols(self) -> list[str]:
        """The symbols whose outboxes this relay reads now (those it holds a lease on)."""
        return [symbol for symbol in self.all_symbols if self.owns(symbol)]

    async def run(self, publisher: Publisher) -> None:
        """Publish until cancelled or the publisher fails (its MqttError propagates)."""
        # Redis away is not an MQTT error: keep the broker connection up and
        # start the outbox over, pending entries first, once Redis answers.
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
        if self.outbox.announced:
            await self._publish_announced(publisher, claimed)
            return
        # One reader per shard of the symbols, each blocking on its own connection. A
        # commit's XADD wakes a read blocked on its outbox, and Redis (7.0) pays for
        # every key that read is blocked on, both when it blocks and when it wakes:
        # one read over 500 outboxes cost about 0.2 ms of Redis per event batch, in
        # the way of the next tick. A symbol is always in the same shard, so its
        # outbox still has one reader in this process and its events keep their order.
        count = min(MAX_READ_SHARDS, -(-len(self.all_symbols) // SYMBOLS_PER_READ_SHARD))
        shards = [self.all_symbols[n::count] for n in range(max(count, 1))]
        try:
            async with asyncio.TaskGroup() as group:
                readers = [
                    group.create_task(
                        self._publish_shard(publisher, claimed, n, frozenset(shard)),
                        name=f"outbox-reader-{n}",
                    )
                    for n, shard in enumerate(shards)
                ]
                # Waited for here, not left to the group's exit: on Python 3.11 a task
                # failing while the group waits at its exit leaves the caller cancelled
                # for good, and Relay.run would end instead of waiting for Redis.
                await asyncio.wait(readers)
        except ExceptionGroup as failures:
            # Relay.run retries on the one error (Redis down); an MqttError ends the relay.
            raise failures.exceptions[0] from failures

    async def _publish_shard(
        self,
        publisher: Publisher,
        claimed: dict[tuple[str, bytes], OutboxEntry],
        shard: int,
        members: frozenset[str],
    ) -> None:
        """:meth:`_publish` for the held symbols among ``members``."""
        # First what this consumer read but never saw acknowledged (a crash or
        # a lost connection), then new entries as they are committed.
        pending = True
        taken: set[str] = set()
        while True:
            raise_if_cancelling()
            symbols = [symbol for symbol in self.symbols if symbol in members]
            if not symbols:  # no lease yet (or any more): nothing to read
                await asyncio.sleep(LEASE_WAIT_S)
                continue
            await self._take_over(publisher, symbols, taken)
            entries = await self.outbox.read(
                symbols, self.consumer, self.batch_size, READ_BLOCK_MS, pending, shard
            )
            if pending and not entries:
                pending = False
                continue
            if entries:
                await self._send(publisher, entries)
            await self._send_claimed(publisher, claimed, members)

    async def _publish_announced(
        self, publisher: Publisher, claimed: dict[tuple[str, bytes], OutboxEntry]
    ) -> None:
        """:meth:`_publish` on a cluster: read the outboxes commits announce, sweep the rest."""
        ready: set[str] = set()
        announced = asyncio.Event()

        def on_ready(symbol: str) -> None:
            ready.add(symbol)
            announced.set()

        subscribed = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self.outbox.watch(on_ready, subscribed), name="outbox-announcements"
                )
                await subscribed.wait()
                # Subscribed first: whatever is committed from now on is
                # announced; what came before, the first sweep reads.
                await self._drain_pending(publisher)
                taken: set[str] = set()
                next_sweep = 0.0
                while True:
                    raise_if_cancelling()
                    held = self.symbols
                    await self._take_over(publisher, held, taken)
                    wait_s = next_sweep - time.monotonic()
                    if wait_s <= 0:
                        next_sweep = time.monotonic() + SWEEP_EVERY_S
                        symbols = held
                    else:
                        try:
                            async with asyncio.timeout(wait_s):
                                await announced.wait()
                        except TimeoutError:
                            continue
                        symbols = [symbol for symbol in held if symbol in ready]
                    announced.clear()
                    ready.clear()
                    entries = await self.outbox.read_each(
                        symbols, self.consumer, self.batch_size, pending=False
                    )
                    counts: dict[str, int] = {}
                    for entry in entries:
                        counts[entry.symbol] = counts.get(entry.symbol, 0) + 1
                    for symbol, count in counts.items():
                        if count >= self.batch_size:  # more waiting: read it again at once
                            on_ready(symbol)
                    if entries:
                        await self._send(publisher, entries)
                    await self._send_claimed(publisher, claimed)
        except ExceptionGroup as failures:
            # Relay.run retries on the one error (Redis down): subscribe and sweep again.
            raise failures.exceptions[0] from failures

    async def _drain_pending(self, publisher: Publisher) -> None:
        # What this consumer read but never saw acknowledged (a crash or a
        # lost connection) goes out first.
        while entries := await self.outbox.read_each(
            self.symbols, self.consumer, self.batch_size, pending=True
        ):
            await self._send(publisher, entries)

    async def _take_over(self, publisher: Publisher, symbols: list[str], taken: set[str]) -> None:
        """Before reading anything new of a symbol this relay just took (its lease), publish
        every entry of its outbox that some consumer read and never saw acknowledged.

        Its predecessor may have died (or stalled) with margin calls in flight whose clears
        were committed after: those must not reach subscribers first. ``taken`` holds the
        symbols already taken over; it follows the leases.
        """
        new = [symbol for symbol in symbols if symbol not in taken]
        taken.intersection_update(symbols)
        if not new:
            return
        while entries := await self.outbox.claim_abandoned(new, self.consumer, 0, self.batch_size):
            log.info("outbox_taken_over", count=len(entries))
            await self._send(publisher, entries)
        taken.update(new)

    async def _send_claimed(
        self,
        publisher: Publisher,
        claimed: dict[tuple[str, bytes], OutboxEntry],
        members: frozenset[str] | None = None,
    ) -> None:
        """Publish the claimed entries of ``members`` (None: of every symbol), from the
        loop that reads those symbols, so that they go out before its newer entries."""
        taken = [e for e in claimed.values() if members is None or e.symbol in members]
        if taken:
            await self._send(publisher, taken)
            for entry in taken:
                claimed.pop((entry.symbol, entry.entry_id), None)

    async def _claim_abandoned(self, claimed: dict[tuple[str, bytes], OutboxEntry]) -> None:
        # Events another relay read and never got acknowledged (it died).
        # Its own task: asking every symbol's outbox takes tens of
        # milliseconds, which the publishing loop must not wait for.
        while True:
            raise_if_cancelling()
            await asyncio.sleep(CLAIM_EVERY_S)
            symbols = self.symbols
            if not symbols:
                continue
            # PUBACKs slower than ABANDONED_AFTER_MS leave this relay's own entries idle
            # and pending: the claim returns them too, and sending them again would
            # deliver them twice. What was in flight or acknowledged since the claim
            # left is this relay's, not abandoned.
            self._sent_while_claiming = set()
            try:
                abandoned = await self.outbox.claim_abandoned(
                    symbols, self.consumer, ABANDONED_AFTER_MS, self.batch_size
                )
            except REDIS_DOWN:
                continue
            finally:
                ours, self._sent_while_claiming = self._sent_while_claiming, None
            ours |= self._sending
            abandoned = [e for e in abandoned if (e.symbol, e.entry_id) not in ours]
            if abandoned:
                log.warning("outbox_claimed", count=len(abandoned))
                for entry in abandoned:
                    claimed.setdefault((entry.symbol, entry.entry_id), entry)

    async def _send(self, publisher: Publisher, entries: Sequence[OutboxEntry]) -> None:
        # A batch is written on one connection in outbox order, so the broker
        # keeps per-position order; it is acknowledged in Redis only once
        # every PUBACK has arrived.
        keys = {(entry.symbol, entry.entry_id) for entry in entries}
        self._sending |= keys
        try:
            # One batch at a time on the connection (the shards take turns).
            async with self._publishing:
                await publisher.publish_batch([(e.topic, e.payload) for e in entries])
            await self.outbox.ack(entries)
        finally:
            self._sending -= keys
            if self._sent_while_claiming is not None:
                self._sent_while_claiming |= keys
        await self.outbox.record_published(entries)
        self.metrics.published.inc(len(entries))
