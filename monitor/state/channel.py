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

Every call has a deadline (:data:`REPLY_DEADLINE_S` unless the call says
otherwise). A Redis that stops answering without closing (a frozen host, a
fail-over that black-holes the old address) would otherwise hold a read
until TCP keep-alive gives up, hours later. The deadline is kept by one
timer per channel, armed when a call finds none armed and re-armed from its
own callback while calls keep coming: a tick pays for two attribute writes,
not for a timer or a task of its own (redis-py's ``socket_timeout`` would
wrap each write in ``asyncio.wait_for``, a task per command on Python
3.11, so it is switched off on the borrowed connection). A call past its
deadline is cancelled, its connection dropped, and it raises redis-py's
``TimeoutError``; the channel reports itself :meth:`~Channel.stuck` until
a reply comes again.
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
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIRECTS = 3
"""Times a command answered MOVED or ASK (slots migrating) is sent again, to the new owner."""

REPLY_DEADLINE_S = 2.0
"""How long one Redis round trip may take before its connection is taken for dead.

A quiet tick takes well under a millisecond and a 1,000-write commit 10-20
ms; two seconds leaves room for a Redis busy forking or rewriting its AOF,
and is short enough that a dead connection costs a tick two seconds, not hours.
"""


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
    reply is never read by the wrong caller. Any failure, cancellation and
    a missed deadline included, drops the connection, since a reply left
    unread would be taken for the next command's; the next call connects again.
    """

    def __init__(
        self, source: aioredis.Redis | ClusterNode, deadline_s: float = REPLY_DEADLINE_S
    ) -> None:
        """A channel to ``source``: a client's server, or one node of a cluster.

        ``deadline_s`` bounds each call (borrowing and connecting included)
        unless the call gives its own.
        """
        self._source = source
        self.deadline_s = deadline_s
        self._connection: AbstractConnection | None = None
        self._socket_timeout: float | None = None
        self._turn = asyncio.Lock()
        # The deadline of the call in flight, kept by one lazily re-armed timer.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._caller: asyncio.Task[Any] | None = None
        self._due = 0.0
        self._allowed_s = deadline_s
        self._cancelling = 0
        self._expired = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._missed_s: float | None = None

    async def _borrow(self) -> AbstractConnection:
        source = self._source
        if isinstance(source, ClusterNode):
            connection = source.acquire_connection()
        else:
            connection = await source.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        # The watchdog keeps this connection's deadline; redis-py's own would
        # cost a task per write. Given back as it came.
        self._socket_timeout = connection.socket_timeout
        connection.socket_timeout = None
        return connection

    async def _give_back(self, connection: AbstractConnection) -> None:
        connection.socket_timeout = self._socket_timeout
        source = self._source
        if isinstance(source, ClusterNode):
            source.release(connection)  # type: ignore[arg-type]
        else:
            await source.connection_pool.release(connection)

    async def execute(
        self, commands: Sequence[bytes], deadline_s: float | None = None
    ) -> list[Any]:
        """The replies to ``commands`` (packed with :func:`resp_command`), in order.

        An error reply comes back as its :class:`~redis.exceptions.ResponseError`
        instance, in its place, so one failed command leaves the others' replies
        readable. Connection errors raise redis-py's ``ConnectionError``; no
        reply within ``deadline_s`` (default :attr:`deadline_s`; longer for a
        command that blocks on purpose) raises its ``TimeoutError``.
        Cancelling is safe: the connection is dropped.
        """
        async with self._turn:
            task = self._arm(self.deadline_s if deadline_s is None else deadline_s)
            connection = self._connection
            try:
                if connection is None:
                    connection = await self._connected()
                await connection.send_packed_command(b"".join(commands), check_health=False)
                replies = await _replies(connection, len(commands))
            except BaseException as error:
                expired = self._settle(task)
                if connection is not None:
                    await self._drop(connection)
                if expired and isinstance(error, asyncio.CancelledError):
                    raise self._timeout() from None
                raise
            self._caller = None
            self._missed_s = None
            return replies

    @staticmethod
    async def execute_each(batches: Sequence[tuple[Channel, Sequence[bytes]]]) -> list[list[Any]]:
        """:meth:`execute` on several channels at once, one list of replies per channel.

        Every channel's commands are written before any reply is read, so
        the servers work in parallel, without a task per channel. A failure
        (a missed deadline on any channel included) drops every connection
        written to (their replies are unread).
        """
        async with contextlib.AsyncExitStack() as turns:
            # Turns taken in one order by every caller, so two never wait on each other.
            for channel in sorted((channel for channel, _ in batches), key=id):
                await turns.enter_async_context(channel._turn)
            task = None
            for channel, _ in batches:
                task = channel._arm(channel.deadline_s)
            written: list[tuple[Channel, AbstractConnection]] = []
            try:
                for channel, commands in batches:
                    connection = await channel._connected()
                    written.append((channel, connection))
                    await connection.send_packed_command(b"".join(commands), check_health=False)
                replies = [
                    await _replies(connection, len(commands))
                    for (_, connection), (_, commands) in zip(written, batches, strict=True)
                ]
            except BaseException as error:
                expired = [channel for channel, _ in batches if channel._settle(task)]
                for channel, connection in written:
                    await channel._drop(connection)
                if expired and isinstance(error, asyncio.CancelledError):
                    raise expired[0]._timeout() from None
                raise
            for channel, _ in batches:
                channel._caller = None
                channel._missed_s = None
            return replies

    @property
    def source(self) -> aioredis.Redis | ClusterNode:
        """Where the connection comes from."""
        return self._source

    def stuck(self) -> str | None:
        """Why this channel cannot be relied on now (None: it answers).

        A call outstanding past its deadline, or one that missed it with no
        reply on the channel since: Redis is silent, not merely closed.
        """
        if self._missed_s is not None:
            return f"no reply within {self._missed_s:g} s"
        loop = self._loop
        if self._caller is not None and loop is not None and loop.time() > self._due:
            return f"no reply within {self._allowed_s:g} s"
        return None

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

    def _arm(self, deadline_s: float) -> asyncio.Task[Any]:
        """Start the deadline of a call by the current task; returns that task."""
        task = asyncio.current_task()
        assert task is not None, "a Channel is used from a task"
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        due = self._due = loop.time() + deadline_s
        self._allowed_s = deadline_s
        self._caller = task
        self._cancelling = task.cancelling()
        watchdog = self._watchdog
        # One timer for many calls: armed when none is, moved only when a
        # call is due before it (a short call after a blocking read).
        if watchdog is None or watchdog.when() > due:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = loop.call_at(due, self._check)
        return task

    def _check(self) -> None:
        """The timer: cancel the caller past its deadline, else wait for the current call's."""
        self._watchdog = None
        caller, loop = self._caller, self._loop
        if caller is None or loop is None:
            return  # idle: the next call arms it again
        if loop.time() < self._due:
            self._watchdog = loop.call_at(self._due, self._check)
            return
        self._expired = True
        caller.cancel()

    def _settle(self, task: asyncio.Task[Any] | None) -> bool:
        """End a failed call; True when its deadline cancelled it (and nothing else did)."""
        self._caller = None
        if not self._expired or task is None:
            return False
        self._expired = False
        self._missed_s = self._allowed_s
        return task.uncancel() <= self._cancelling

    def _timeout(self) -> RedisTimeoutError:
        return RedisTimeoutError(f"no reply from Redis within {self._allowed_s:g} s")


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

    def stuck(self) -> list[str]:
        """:meth:`Channel.stuck` of every node's channel that is (empty: all answer)."""
        return [why for channel in self._channels.values() if (why := channel.stuck())]

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
