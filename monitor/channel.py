"""A Redis connection of the tick path's own: packed commands in, replies out.

redis.asyncio spends ~80 µs of CPU per command on its layers (argument
encoding, retries, the pool's bookkeeping, the script object) before and
after the ~50 µs the round trip itself costs. A mark tick is one EVALSHA
whose keys never change for a symbol, so the tick path packs the command
itself (:func:`resp_command`) and writes it, several symbols in one write,
on a connection it keeps: about 55 µs per tick alone, 25 µs in fours.

The connection is borrowed from the client's pool, so it has the client's
address, credentials, TLS and protocol, and :meth:`redis.asyncio.Redis.aclose`
closes it; replies go through redis-py's parser (hiredis).

On a Redis Cluster (:class:`ClusterChannels`) there is one such channel per
primary, borrowed from that node's pool; each command goes to the node that
owns its key's slot, the nodes' writes in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, ResponseError

REDIRECTS = 3
"""Times a command answered MOVED or ASK (slots migrating) is sent again, to the new owner."""


def resp_parts(*parts: str | bytes | int) -> bytes:
    """Bulk strings of the RESP wire format, to follow an array header ``*N``."""
    out = []
    for part in parts:
        if isinstance(part, str):
            raw = part.encode()
        elif isinstance(part, int):
            raw = b"%d" % part
        else:
            raw = part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def resp_command(*parts: str | bytes | int) -> bytes:
    """One command in the RESP wire format (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + resp_parts(*parts)


class Channel:
    """Sends packed commands on one kept connection and reads their replies in order.

    Callers take turns (a lock): one write and its replies at a time, so a
    reply is never read by the wrong caller. Any failure, cancellation
    included, drops the connection, since a reply left unread would be
    taken for the next command's; the next call connects again.
    """

    def __init__(self, source: aioredis.Redis | ClusterNode) -> None:
        """A channel to ``source``: a client's server, or one node of a cluster."""
        self._source = source
        self._connection: AbstractConnection | None = None
        self._turn = asyncio.Lock()

    async def _borrow(self) -> AbstractConnection:
        source = self._source
        if isinstance(source, ClusterNode):
            return source.acquire_connection()
        connection: AbstractConnection = await source.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def _give_back(self, connection: AbstractConnection) -> None:
        source = self._source
        if isinstance(source, ClusterNode):
            source.release(connection)  # type: ignore[arg-type]
        else:
            await source.connection_pool.release(connection)

    async def execute(self, commands: Sequence[bytes]) -> list[Any]:
        """The replies to ``commands`` (packed with :func:`resp_command`), in order.

        An error reply comes back as its :class:`~redis.exceptions.ResponseError`
        instance, in its place, so one failed command leaves the others' replies
        readable. Connection errors raise redis-py's ``ConnectionError``.
        """
        async with self._turn:
            connection = self._connection or await self._connected()
            try:
                await connection.send_packed_command(b"".join(commands), check_health=False)
                return await _replies(connection, len(commands))
            except BaseException:
                await self._drop(connection)
                raise

    @staticmethod
    async def execute_each(batches: Sequence[tuple[Channel, Sequence[bytes]]]) -> list[list[Any]]:
        """:meth:`execute` on several channels at once, one list of replies per channel.

        Every channel's commands are written before any reply is read, so
        the servers work in parallel, without a task per channel. A failure
        drops every connection written to (their replies are unread).
        """
        async with contextlib.AsyncExitStack() as turns:
            # Turns taken in one order by every caller, so two never wait on each other.
            for channel in sorted((channel for channel, _ in batches), key=id):
                await turns.enter_async_context(channel._turn)
            written: list[tuple[Channel, AbstractConnection]] = []
            try:
                for channel, commands in batches:
                    connection = await channel._connected()
                    written.append((channel, connection))
                    await connection.send_packed_command(b"".join(commands), check_health=False)
                return [
                    await _replies(connection, len(commands))
                    for (_, connection), (_, commands) in zip(written, batches, strict=True)
                ]
            except BaseException:
                for channel, connection in written:
                    await channel._drop(connection)
                raise

    @property
    def source(self) -> aioredis.Redis | ClusterNode:
        """Where the connection comes from."""
        return self._source

    async def close(self) -> None:
        """Close the kept connection, if any (the next call connects again)."""
        async with self._turn:
            if self._connection is not None:
                await self._drop(self._connection)

    async def _connected(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:
            connection = self._connection = await self._borrow()
        return connection

    async def _drop(self, connection: AbstractConnection) -> None:
        self._connection = None
        await connection.disconnect(nowait=True)
        await self._give_back(connection)


async def _replies(connection: AbstractConnection, count: int) -> list[Any]:
    """The next ``count`` replies on ``connection``, error replies in their place."""
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


class ClusterChannels:
    """A :class:`Channel` per primary of a Redis Cluster; commands go where their slot lives.

    Each command names one key (hash-tagged: every key of one call shares a
    slot). A command answered MOVED (the slot moved for good) is sent again
    once the cluster's slot map is read again; one answered ASK (the slot is
    migrating) goes to the importing node after ``ASKING``. Nothing ran on
    the node that redirected, so sending again runs it once.
    """

    def __init__(self, client: aioredis.RedisCluster) -> None:
        self._client = client
        self._channels: dict[str, Channel] = {}
        self._slots: dict[str, int] = {}

    async def _channel(self, node: ClusterNode) -> Channel:
        channel = self._channels.get(node.name)
        if channel is None or channel.source is not node:
            # A node redis-py replaced (it left the slot map and came back):
            # the new one's pool is the one the client closes.
            if channel is not None:
                await channel.close()
            channel = self._channels[node.name] = Channel(node)
        return channel

    def node_of(self, key: str) -> ClusterNode:
        """The primary that owns ``key``'s slot (as last read from the cluster)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = key_slot(key.encode())
        return self._client.nodes_manager.get_node_from_slot(slot)

    async def execute(self, commands: Sequence[bytes], keys: Sequence[str]) -> list[Any]:
        """The replies to ``commands``, in order; ``keys[i]`` routes ``commands[i]``.

        Error replies come back in their place, as :meth:`Channel.execute` does.
        """
        await self._client.initialize()  # a no-op once the slot map is known
        replies: list[Any] = [None] * len(commands)
        sends: dict[Channel, list[tuple[int | None, bytes]]] = {}
        for index, key in enumerate(keys):
            channel = await self._channel(self.node_of(key))
            sends.setdefault(channel, []).append((index, commands[index]))
        for attempt in range(REDIRECTS + 1):
            await _send(sends, replies)
            redirected = [i for i, reply in enumerate(replies) if isinstance(reply, AskError)]
            if not redirected or attempt == REDIRECTS:
                break
            if any(isinstance(replies[i], MovedError) for i in redirected):
                await self._client.nodes_manager.initialize()
            sends = {}
            for index in redirected:
                error = replies[index]
                if isinstance(error, MovedError):
                    channel = await self._channel(self.node_of(keys[index]))
                    sends.setdefault(channel, []).append((index, commands[index]))
                    continue
                target = self._client.get_node(error.host, error.port)
                channel = await self._channel(target or self.node_of(keys[index]))
                sends.setdefault(channel, []).extend([(None, _ASKING), (index, commands[index])])
        return replies


_ASKING = resp_command("ASKING")


async def _send(sends: dict[Channel, list[tuple[int | None, bytes]]], replies: list[Any]) -> None:
    """Each channel's batch, all written before any is read; replies stored by index
    (None: dropped)."""
    batches = list(sends.items())
    answers = await Channel.execute_each(
        [(channel, [command for _, command in batch]) for channel, batch in batches]
    )
    for (_, batch), channel_answers in zip(batches, answers, strict=True):
        for (index, _), answer in zip(batch, channel_answers, strict=True):
            if index is not None:
                replies[index] = answer
