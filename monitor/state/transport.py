"""How liqmon talks to Redis: one server or a Redis Cluster, chosen once at connect time.

:func:`connect` returns a :class:`Transport`: :class:`SingleNode` or
:class:`ClusterNodes` after ``redis.cluster``. Everything that differs
between the two lives in those two classes, so the position store and the
outbox (:mod:`monitor.state.positions`, :mod:`monitor.state.outbox`) never
ask which one they run on:

* the kept connections of the tick path and the outbox reader
  (:class:`Lane`): one :class:`~monitor.state.channel.Channel` on a single
  server, one per primary on a cluster
  (:class:`~monitor.state.channel.ClusterChannels`), each command sent to
  the node that owns its key's slot;
* announcements: a cluster refuses one blocking XREADGROUP over keys of
  several slots, so there commits name the symbol whose outbox they added
  to on the :attr:`~monitor.state.keys.Keys.outbox_ready` channel
  (:attr:`Transport.announces`), and the relay reads those outboxes.

Pipelines are redis-py's (split per node on a cluster); every call touches
one symbol's keys (one hash tag, one slot) either way.

Also here: the errors that mean Redis is down (:data:`REDIS_DOWN`), and the
helpers every Redis module shares (pipelines in slices, EVALSHA with a
reload after a flushed script cache, the Lua sources of ``lua/``).
"""

from __future__ import annotations

import inspect
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, ClassVar, TypeAlias, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.config.model import RedisSettings
from monitor.state.channel import REPLY_DEADLINE_S, Channel, ClusterChannels
from monitor.state.keys import Keys

REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    # A cluster without a primary for some slots, or in the middle of moving one.
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    # maxmemory reached (noeviction): writes are refused until memory frees.
    # An outage like the others, not a bug: a retry succeeds once it frees.
    OutOfMemoryError,
)
"""Errors that mean Redis cannot serve liqmon right now (unreachable, silent, or out of
memory): retry with backoff, report not ready (:func:`outage` says why)."""

OUT_OF_MEMORY = "out of memory: Redis refuses writes (maxmemory reached); raise it or free memory"


def outage(error: BaseException) -> tuple[str, str]:
    """The ``liqmon_redis_outage`` reason of a :data:`REDIS_DOWN` error (or a deadline
    missed), and the line ``/readyz`` shows for it."""
    if isinstance(error, OutOfMemoryError):
        return "out_of_memory", OUT_OF_MEMORY
    if isinstance(error, RedisTimeoutError | TimeoutError):
        return "no_reply", f"no reply within {REPLY_DEADLINE_S:g} s"
    return "unreachable", "not connected"


DATA_LOST = "data_lost"
"""The ``liqmon_redis_outage`` reason while Redis's data is lost and not yet reloaded."""

OUTAGES = ("unreachable", "no_reply", "out_of_memory", DATA_LOST)
"""Every reason ``liqmon_redis_outage`` has: those :func:`outage` gives, and data lost."""

PIPELINE_SLICE = 50
"""Commands per round trip in the per-symbol sweeps (metrics, leases, claims, counts).

redis-py packs and parses a pipeline synchronously: one of a thousand
commands holds the event loop for ~15 ms, longer than a tick's whole latency
budget. Slices of 50 hold it for under a millisecond and let ticks through.
"""

T = TypeVar("T")

Client: TypeAlias = aioredis.Redis | aioredis.RedisCluster
"""A client of one Redis server or of a Redis Cluster (``redis.cluster``)."""

AnyPipeline: TypeAlias = Pipeline | ClusterPipeline


async def pipelined(
    client: Client,
    items: Sequence[T],
    queue: Callable[[AnyPipeline, T], object],
    per_item: int = 1,
) -> list[Any]:
    """The replies of ``queue(pipe, item)`` for every item, in round trips of
    about :data:`PIPELINE_SLICE` commands (``queue`` adds ``per_item`` each).

    ``queue`` may be a coroutine function (a registered script called with
    ``client=pipe``).
    """
    replies: list[Any] = []
    step = max(PIPELINE_SLICE // per_item, 1)
    for start in range(0, len(items), step):
        pipe = client.pipeline(transaction=False)
        for item in items[start : start + step]:
            queued = queue(pipe, item)
            # Not isawaitable: a pipeline is awaitable too, and awaiting a
            # cluster pipeline empties its queue.
            if inspect.iscoroutine(queued):
                await queued
        replies.extend(await pipe.execute())
    return replies


async def swept(lane: Lane, commands: Sequence[bytes], routes: Sequence[str]) -> list[Any]:
    """The replies of a sweep's packed ``commands`` on ``lane``, in round trips of
    :data:`PIPELINE_SLICE` (replies are parsed in one go: a few thousand would hold
    the event loop, and the ticks waiting on it, for milliseconds)."""
    replies: list[Any] = []
    for start in range(0, len(commands), PIPELINE_SLICE):
        end = start + PIPELINE_SLICE
        replies += await lane.execute(commands[start:end], routes[start:end])
    return replies


async def evalsha_all(
    client: Client,
    script: AsyncScript,
    calls: Sequence[tuple[list[str], Sequence[str | int | bytes]]],
) -> list[Any]:
    """The replies of one pipeline of EVALSHAs of ``script`` (see :func:`scripted`)."""

    # Not Script-on-pipeline: redis-py then asks SCRIPT EXISTS on every
    # execute, a second round trip.
    async def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            # execute_command, not pipe.evalsha: redis-py's cluster pipeline
            # blocks the method (it routes the raw command by its keys).
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    return await scripted(client, script, send)


async def scripted(
    client: Client, script: AsyncScript, send: Callable[[], Awaitable[list[Any]]]
) -> list[Any]:
    """The replies of ``send()``, EVALSHAs of ``script``; the first error reply raised.

    A flushed script cache (Redis restarted) is rare: load the script and
    send again (nothing ran). On a cluster, redis-py sends SCRIPT LOAD to
    every primary, so whichever node answered NOSCRIPT has the script for
    the second send. Errors are raised here, not by redis-py, which would
    first quote the whole command in the message (a commit's argument of
    300 kB takes ~0.1 s to shorten).
    """
    replies = await send()
    if any(isinstance(reply, NoScriptError) for reply in replies):
        script.sha = await client.script_load(script.script)
        replies = await send()
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Still unknown right after a Redis restart (measured: a SCRIPT
            # LOAD answered as the server came back did not hold). An outage
            # like the restart itself: the caller backs off and calls again.
            raise RedisConnectionError(f"Redis does not hold script {script.sha} just loaded")
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def script_source(name: str, *preludes: str) -> str:
    """A Lua script's source (``lua/NAME``), after the preludes it uses (Redis has no
    includes). A script with a shebang line (``#!lua flags=...``) takes no prelude."""
    lua = resources.files("monitor.state").joinpath("lua")
    return "\n".join(lua.joinpath(part).read_text(encoding="utf-8") for part in (*preludes, name))


def register(client: Client, name: str, *preludes: str) -> AsyncScript:
    """``lua/NAME`` (after its preludes) registered on ``client``: called by its SHA."""
    return client.register_script(script_source(name, *preludes))


def text(value: bytes | str) -> str:
    """A reply decoded (replies are bytes, or str on a client that decodes)."""
    return value.decode() if isinstance(value, bytes) else value


def raw(value: bytes | str) -> bytes:
    """A reply as bytes."""
    return value if isinstance(value, bytes) else value.encode()


class Lane(ABC):
    """A kept connection for packed commands (one per primary on a cluster).

    The tick path and the outbox reader each keep one (see
    :mod:`monitor.state.channel` for why). Every call has a deadline.
    """

    @abstractmethod
    async def execute(
        self, commands: Sequence[bytes], routes: Sequence[str], deadline_s: float | None = None
    ) -> list[Any]:
        """The replies to ``commands`` (packed), in order, error replies in their place.

        ``routes[i]`` is a key of ``commands[i]`` (which node runs it, on a
        cluster). ``deadline_s`` (default :data:`REPLY_DEADLINE_S`) is for
        a command that blocks on purpose, which only a single server is sent.
        """

    @abstractmethod
    def stuck(self) -> str | None:
        """Why this lane is not answering (None: it answers)."""


class _ServerLane(Lane):
    def __init__(self, client: aioredis.Redis) -> None:
        self._channel = Channel(client)

    async def execute(
        self, commands: Sequence[bytes], routes: Sequence[str], deadline_s: float | None = None
    ) -> list[Any]:
        return await self._channel.execute(commands, deadline_s)

    def stuck(self) -> str | None:
        return self._channel.stuck()


class _NodesLane(Lane):
    def __init__(self, client: aioredis.RedisCluster) -> None:
        self._nodes = ClusterChannels(client)

    async def execute(
        self, commands: Sequence[bytes], routes: Sequence[str], deadline_s: float | None = None
    ) -> list[Any]:
        # Nothing blocks on a cluster (the relay reads what was announced):
        # every node's channel keeps the usual deadline.
        return await self._nodes.execute(commands, routes)

    def stuck(self) -> str | None:
        return next(iter(self._nodes.stuck()), None)


class Transport(ABC):
    """A Redis client and what differs between one server and a cluster (module doc)."""

    cluster: ClassVar[bool]
    """True on a Redis Cluster (for callers' policies; the state modules never ask)."""

    announces: ClassVar[bool]
    """Whether commits announce on :attr:`~monitor.state.keys.Keys.outbox_ready` the symbol
    whose outbox they added to (a cluster's outboxes are read after announcements)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lanes: list[tuple[str, Lane]] = []

    @staticmethod
    def of(client: Client) -> Transport:
        """The transport of ``client``: :class:`ClusterNodes` for a cluster client, else
        :class:`SingleNode`."""
        if isinstance(client, aioredis.RedisCluster):
            return ClusterNodes(client)
        return SingleNode(client)

    def lane(self, name: str) -> Lane:
        """A new kept connection (lazily connected), reported by :meth:`stuck` as ``name``."""
        lane = self._new_lane()
        self._lanes.append((name, lane))
        return lane

    def stuck(self) -> str | None:
        """Why a kept connection (the tick path's, the outbox reader's) is not answering
        (None: all answer). A request past its deadline is dropped and tried again;
        until a reply comes, Redis is silent, whatever a new connection says."""
        for name, lane in self._lanes:
            why = lane.stuck()
            if why is not None:
                return f"{why} on the {name}"
        return None

    @abstractmethod
    def announcement(self, keys: Keys, symbol: str) -> list[str]:
        """commit.lua's ARGV after the writes: the channel and symbol to announce, or none."""

    @abstractmethod
    async def announce(self, keys: Keys, symbol: str) -> None:
        """Announce that ``symbol``'s outbox was added to outside commit.lua (if announced)."""

    async def aclose(self) -> None:
        """Close the client and its connections (the lanes' included)."""
        await self.client.aclose()

    @abstractmethod
    def _new_lane(self) -> Lane: ...


class SingleNode(Transport):
    """One Redis server: a lane is one kept connection; the relay blocks on every outbox."""

    cluster = False
    announces = False

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._server = client

    def announcement(self, keys: Keys, symbol: str) -> list[str]:
        return []

    async def announce(self, keys: Keys, symbol: str) -> None:
        return None

    def _new_lane(self) -> Lane:
        return _ServerLane(self._server)


class ClusterNodes(Transport):
    """A Redis Cluster: a lane keeps a connection per primary; commits announce."""

    cluster = True
    announces = True

    def __init__(self, client: aioredis.RedisCluster) -> None:
        super().__init__(client)
        self._cluster = client

    def announcement(self, keys: Keys, symbol: str) -> list[str]:
        return [keys.outbox_ready, symbol]

    async def announce(self, keys: Keys, symbol: str) -> None:
        await self._cluster.publish(keys.outbox_ready, symbol)

    def _new_lane(self) -> Lane:
        return _NodesLane(self._cluster)


_KEEPALIVE: dict[int, int] = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
"""TCP keep-alive probes after 10 s idle, every 5 s, given up after 3 (where the OS has them)."""


def connect(settings: RedisSettings) -> Transport:
    """liqmon's Redis transport (TLS and credentials from the settings).

    With ``settings.cluster``, a cluster client that finds the other nodes
    from the one in the URL (:class:`ClusterNodes`); else :class:`SingleNode`.
    """
    options: dict[str, Any] = dict(
        # Every reply within a deadline: a Redis that stops answering without
        # closing (a frozen host, a fail-over that black-holes the old
        # address) fails the call instead of holding it until TCP keep-alive
        # gives up, hours later. redis-py then wraps each write in
        # asyncio.wait_for (a task, ~30 µs; on Python 3.11 it can swallow a
        # cancellation, which the loops' raise_if_cancelling catches): paid
        # per commit of up to 1,000 writes, per lease refresh, per publish
        # batch. The tick path and the outbox reader keep their deadlines on
        # their own connections without it (monitor.state.channel).
        socket_timeout=REPLY_DEADLINE_S,
        socket_connect_timeout=5,
        socket_keepalive=True,
        # A peer that vanished from the network is noticed in about 25 s even
        # on a connection that only waits (a cluster's pub/sub).
        socket_keepalive_options=_KEEPALIVE,
        # A pooled connection idle for a second is checked before use, so the
        # first command after a Redis restart does not fail on it.
        health_check_interval=1,
        **settings.client_options(),
    )
    if settings.cluster:
        return ClusterNodes(aioredis.RedisCluster.from_url(settings.url, **options))
    # One more try on a fresh connection (the old one died while idle), then
    # the error reaches the caller, which backs off and reports it; redis-py's
    # default (ten tries) would hold a call 20 s on a silent Redis.
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1)
    return SingleNode(aioredis.Redis.from_url(settings.url, retry=retry, **options))
