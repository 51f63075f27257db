"""The outbox, read: what waits for the broker, claimed, acknowledged, counted.

Events are queued in a symbol's outbox stream by the position store's commit
(:meth:`monitor.state.positions.PositionStore.commit`, in the same script as
the state change) and alerts by :meth:`Outbox.enqueue`. Publishers read them
as consumers of one group (``XREADGROUP``), take over what a dead one left
(``XAUTOCLAIM``), and forget what the broker acknowledged (``lua/ack.lua``),
keeping a capped record of it (the ``published`` stream behind ``/api/events``).

Dead letters live here too: another stream of messages kept for someone to
read, the input liqmon rejected (``lua/deadletter.lua``).

On one server, the relay blocks in one XREADGROUP over every symbol's outbox
(:meth:`Outbox.read`). A Redis Cluster refuses keys of several slots in one
command, so there commits announce their symbol
(:attr:`~monitor.state.transport.Transport.announces`, :meth:`Outbox.watch`)
and the relay reads those outboxes (:meth:`Outbox.read_each`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError

from monitor.config.model import Limits
from monitor.core.deadletter import DeadLetter, entry_of
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.channel import REPLY_DEADLINE_S, resp_command
from monitor.state.keys import OUTBOX_GROUP, Keys
from monitor.state.transport import (
    REDIS_DOWN,
    AnyPipeline,
    Client,
    Lane,
    Transport,
    evalsha_all,
    pipelined,
    register,
    text,
)

PUBLISHED_MAXLEN = 10_000
"""About how many published events the ``published`` stream keeps."""

OUTBOX_READS_KEPT = 64
"""Packed outbox reads kept (one per set of symbols read: a reader's shard of them, which
changes with the leases)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event waiting in a symbol's outbox."""

    symbol: str
    entry_id: bytes
    event_id: str
    topic: str
    payload: bytes

    @classmethod
    def from_fields(cls, symbol: str, entry_id: bytes, fields: dict[bytes, bytes]) -> OutboxEntry:
        """An entry as XREADGROUP or XAUTOCLAIM returns it."""
        return cls(
            symbol,
            entry_id,
            fields[b"event_id"].decode(),
            fields[b"topic"].decode(),
            fields[b"payload"],
        )


def _outbox_entries(replies: Iterable[Any], symbol_of: Mapping[str, str]) -> list[OutboxEntry]:
    """The entries in XREADGROUP replies; ``symbol_of`` maps an outbox key to its symbol."""
    entries: list[OutboxEntry] = []
    for reply in replies:
        # RESP3 answers a map of stream → entries; RESP2 a list of [stream, entries].
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        for key, stream_entries in streams:
            symbol = symbol_of[text(key)]
            for entry_id, flat in stream_entries:
                if not flat:  # acknowledged and deleted meanwhile
                    continue
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entries.append(OutboxEntry.from_fields(symbol, entry_id, fields))
    return entries


class Outbox:
    """The outboxes (and dead letters) of one key prefix."""

    def __init__(self, transport: Transport, keys: Keys, limits: Limits) -> None:
        self.transport = transport
        self.keys = keys
        self.limits = limits
        client = transport.client
        self._reader = transport.lane("outbox reader")
        self._shard_readers: dict[int, Lane] = {0: self._reader}
        self._reads: dict[tuple[Any, ...], tuple[bytes, dict[str, str]]] = {}
        self._ack = register(client, "ack.lua")
        self._published = register(client, "published.lua", "fields.lua")
        self._dead_letter = register(client, "deadletter.lua")

    @property
    def client(self) -> Client:
        """The transport's client (for tools and tests that read Redis directly)."""
        return self.transport.client

    @property
    def announced(self) -> bool:
        """Whether commits announce their outboxes (a cluster): then read them with
        :meth:`watch` and :meth:`read_each`, not :meth:`read`."""
        return self.transport.announces

    async def enqueue(self, symbol: str, event_id: str, topic: str, payload: bytes) -> None:
        """Queue a message (an alert) in the symbol's outbox, to go out like events do."""
        await self.client.xadd(
            self.keys.outbox(symbol), {"event_id": event_id, "topic": topic, "payload": payload}
        )
        await self.transport.announce(self.keys, symbol)

    async def dead_letter(self, source: str, reason: str, detail: str, payload: bytes) -> None:
        """Keep one rejected message for inspection (see :meth:`dead_letters`)."""
        await self.dead_letters([DeadLetter(source, reason, detail, payload)])

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Keep rejected messages, one entry each, in one round trip.

        The stream drops its oldest entries past ``limits.dead_letter_maxlen``
        entries or ``limits.dead_letter_max_bytes`` bytes (``lua/deadletter.lua``).
        """
        keys = [self.keys.dead_letter]
        bounds = (self.limits.dead_letter_maxlen, self.limits.dead_letter_max_bytes)
        calls = []
        for letter in letters:
            size, fields = entry_of(letter, self.limits.dead_letter_payload_bytes)
            calls.append((keys, (*bounds, size, *fields)))
        await evalsha_all(self.client, self._dead_letter, calls)

    async def ensure_groups(self, symbols: Iterable[str]) -> None:
        """Create the publishers' consumer group on every outbox (idempotent).

        On a Redis out of memory, XGROUP CREATE is refused even where the
        group exists: a group that exists is enough (the outbox can drain,
        which frees memory); one that does not raises ``OutOfMemoryError``.
        """
        for symbol in symbols:
            key = self.keys.outbox(symbol)
            try:
                await self.client.xgroup_create(key, OUTBOX_GROUP, id="0", mkstream=True)
            except OutOfMemoryError:
                if not await self._has_group(key):
                    raise
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def _has_group(self, key: str) -> bool:
        try:
            groups = await self.client.xinfo_groups(key)
        except ResponseError:  # no such key
            return False
        return any(text(group["name"]) == OUTBOX_GROUP for group in groups)

    async def read(
        self,
        symbols: Sequence[str],
        consumer: str,
        count: int,
        block_ms: int,
        pending: bool,
        shard: int = 0,
    ) -> list[OutboxEntry]:
        """Entries for ``consumer``: its unacknowledged ones (``pending``) or new ones,
        waiting up to ``block_ms`` for new ones, in one XREADGROUP over every symbol's
        outbox (on one server: see :attr:`announced`).

        Each ``shard`` reads on a connection of its own, so readers of disjoint sets
        of symbols block at the same time (see :class:`monitor.service.relay.Relay`)."""
        # The command names every symbol's outbox: packed once (redis-py took
        # ~2 ms per call for 500 symbols, each time the publisher came back
        # for more) and sent on the reader's own connection.
        shape = (tuple(symbols), consumer, count, block_ms, pending)
        read = self._reads.get(shape)
        if read is None:
            if len(self._reads) >= OUTBOX_READS_KEPT:  # leases moved many times
                self._reads.clear()
            keys = [self.keys.outbox(symbol) for symbol in symbols]
            block: list[str | int] = [] if pending else ["BLOCK", block_ms]
            command = resp_command(
                "XREADGROUP", "GROUP", OUTBOX_GROUP, consumer, "COUNT", count, *block,
                "STREAMS", *keys, *(["0" if pending else ">"] * len(keys)),
            )  # fmt: skip
            read = self._reads[shape] = (command, dict(zip(keys, symbols, strict=True)))
        command, symbol_of = read
        # A blocking read may take its block time, then the usual deadline.
        deadline_s = REPLY_DEADLINE_S + (0 if pending else block_ms / 1000)
        route = next(iter(symbol_of), "")  # a single server's lane does not route
        reader = self._shard_readers.get(shard)
        if reader is None:
            reader = self._shard_readers[shard] = self.transport.lane(f"outbox reader {shard}")
        replies = await reader.execute([command], [route], deadline_s)
        return _outbox_entries(await self._readable(replies, symbols), symbol_of)

    async def read_each(
        self, symbols: Sequence[str], consumer: str, count: int, pending: bool
    ) -> list[OutboxEntry]:
        """:meth:`read` on a cluster: one non-blocking XREADGROUP per symbol.

        Up to ``count`` entries per symbol; the reads of one node share a
        round trip, the nodes in parallel. Which symbols to read is the
        caller's (those announced by :meth:`watch`, or all of them).
        """
        commands, keys = [], []
        for symbol in symbols:
            shape = (symbol, consumer, count, pending)
            read = self._reads.get(shape)
            if read is None:
                key = self.keys.outbox(symbol)
                command = resp_command(
                    "XREADGROUP", "GROUP", OUTBOX_GROUP, consumer, "COUNT", count,
                    "STREAMS", key, "0" if pending else ">",
                )  # fmt: skip
                read = self._reads[shape] = (command, {key: symbol})
            commands.append(read[0])
            keys.append(self.keys.outbox(symbol))
        replies = await self._reader.execute(commands, keys)
        readable = await self._readable(replies, symbols)
        return _outbox_entries(readable, dict(zip(keys, symbols, strict=True)))

    async def _readable(self, replies: Sequence[Any], symbols: Sequence[str]) -> list[Any]:
        """The XREADGROUP replies that are not errors; an error but a lost stream's is raised."""
        errors = [reply for reply in replies if isinstance(reply, ResponseError)]
        for error in errors:
            # NOGROUP, or UNBLOCKED for a blocking read whose stream was deleted.
            if "NOGROUP" not in str(error) and "UNBLOCKED" not in str(error):
                raise error
        if errors:
            # Redis lost its data (restarted without persistence, or flushed):
            # make the groups again; there is nothing pending in those outboxes
            # (the epoch check reports the loss: monitor.state.epoch).
            await self.ensure_groups(symbols)
        return [reply for reply in replies if not isinstance(reply, ResponseError)]

    async def watch(self, on_ready: Callable[[str], None], subscribed: asyncio.Event) -> None:
        """Call ``on_ready(symbol)`` for each commit that queued events (on a cluster).

        Sets ``subscribed`` once the subscription is active: what is
        committed from then on is announced; what was committed before must
        be read by a sweep. Announcements are fire-and-forget (one lost with
        a connection is never repeated), so a reader also sweeps every
        stream now and then. Runs until cancelled (safe) or Redis fails.
        """
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.keys.outbox_ready)
            subscribed.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    on_ready(text(message["data"]))
        finally:
            await pubsub.aclose()

    async def claim_abandoned(
        self, symbols: Sequence[str], consumer: str, min_idle_ms: int, count: int
    ) -> list[OutboxEntry]:
        """Take over entries another consumer read but never acknowledged (it died).

        XAUTOCLAIM moves entries idle for ``min_idle_ms`` to ``consumer``; a
        monitor that died with events in flight leaves them there, and the
        survivors publish them.
        """
        entries: list[OutboxEntry] = []
        try:
            replies = await pipelined(
                self.client,
                symbols,
                lambda pipe, symbol: pipe.xautoclaim(
                    self.keys.outbox(symbol),
                    OUTBOX_GROUP,
                    consumer,
                    min_idle_ms,
                    "0-0",
                    count=count,
                ),
            )
        except ResponseError as error:
            # A server (a cluster node) lost its data: nothing is left to claim there.
            await self._readable([error], symbols)
            return entries
        for symbol, reply in zip(symbols, replies, strict=True):
            for entry_id, fields in reply[1]:
                if fields:
                    entries.append(OutboxEntry.from_fields(symbol, entry_id, fields))
        return entries

    async def ack(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget entries the broker has acknowledged."""
        by_symbol: dict[str, list[bytes]] = {}
        for entry in entries:
            by_symbol.setdefault(entry.symbol, []).append(entry.entry_id)
        calls: list[tuple[list[str], Sequence[str | int | bytes]]] = [
            ([self.keys.outbox(symbol)], [OUTBOX_GROUP, b" ".join(ids)])
            for symbol, ids in by_symbol.items()
        ]
        await evalsha_all(self.client, self._ack, calls)

    async def record_published(
        self, entries: Sequence[OutboxEntry], maxlen: int = PUBLISHED_MAXLEN
    ) -> None:
        """Keep acknowledged entries in the capped ``published`` stream (best effort).

        The outbox forgets an entry once the broker has it; this recent record
        serves ``/api/events`` and the dashboard. Losing it while Redis is
        down loses no event, so a failure is swallowed and publishing goes on.
        """
        if not entries:
            return
        fields: list[bytes] = []
        for entry in entries:
            fields += (entry.event_id.encode(), entry.symbol.encode(), entry.topic.encode())
            fields.append(entry.payload)
        try:
            await evalsha_all(
                self.client,
                self._published,
                [([self.keys.published], [maxlen, b"\0".join(fields)])],
            )
        except REDIS_DOWN:
            return
        finally:
            raise_if_cancelling()  # the publisher's loop must stop when asked (Python 3.11)

    async def length(self, symbols: Sequence[str]) -> int:
        """Events waiting for the broker, over all symbols."""
        return sum(
            await pipelined(
                self.client, symbols, lambda pipe, symbol: pipe.xlen(self.keys.outbox(symbol))
            )
        )

    async def backlog(self, symbols: Sequence[str], now_ms: int) -> tuple[int, float]:
        """Events waiting for the broker, and the age in seconds of the oldest (0 if none).

        Stream ids start with the time they were added, so the first id of
        each outbox tells its oldest entry's age without reading the entry.
        """

        def queue(pipe: AnyPipeline, symbol: str) -> None:
            pipe.xlen(self.keys.outbox(symbol))
            pipe.xrange(self.keys.outbox(symbol), count=1)

        replies = await pipelined(self.client, symbols, queue, per_item=2)
        length = sum(replies[0::2])
        firsts = [int(text(first[0][0]).split("-")[0]) for first in replies[1::2] if first]
        return length, max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0
