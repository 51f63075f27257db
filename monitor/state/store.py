"""The Redis adapter: positions, trigger index, prices, outbox and dead letters.

A thin async shell around two Lua scripts (``lua/candidates.lua`` and
``lua/commit.lua``) and a few plain commands. It decides nothing: the engine
reads through it, asks the pure core, and writes the decisions back through
:meth:`Store.commit`, whose compare-and-set makes every transition happen once.

Trigger prices are Decimals; Redis scores are doubles. A score is only used
to find candidates, so each is widened by one ulp away from the safe side:
a mark at or beyond the exact trigger is always inside the range queried, and
the occasional extra candidate is settled by exact Decimal math.

On a Redis Cluster (``redis.cluster = true``) every call still touches one
symbol's keys (one hash tag, one slot); what differs is how calls of several
symbols travel: the tick path's packed EVALSHAs go per node
(:class:`~monitor.state.channel.ClusterChannels`), pipelines are redis-py's cluster
pipelines (split per node), and the outbox cannot be read in one blocking
XREADGROUP over every symbol's stream (a cluster refuses keys of several
slots in one command), so commits announce their symbol on the
:attr:`~monitor.state.keys.Keys.outbox_ready` channel and the relay reads those
streams (:meth:`Store.read_outboxes`, :meth:`Store.watch_outbox`).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, TypeAlias, TypeVar, overload

import orjson
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

from monitor.config.settings import Limits, RedisSettings
from monitor.core.deadletter import DeadLetter, entry_of
from monitor.core.evaluation import Event, Quote, Triggers
from monitor.core.margin import Side
from monitor.core.position import PositionRecord
from monitor.core.wire import decimal_str
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.channel import (
    REPLY_DEADLINE_S,
    Channel,
    ClusterChannels,
    resp_command,
    resp_parts,
)
from monitor.state.epoch import Epoch
from monitor.state.keys import OUTBOX_GROUP, Keys

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

PUBLISHED_MAXLEN = 10_000
"""About how many published events the ``published`` stream keeps."""

MARK_ARGS = 4
"""candidates.lua's ARGV: mark, mark_ts, score, ceiling (see :meth:`Store._mark_command`)."""

EXPIRE_SLICE = 1000
"""Tombstones one expire.lua call forgets at most (it holds Redis while it runs)."""

OUTBOX_READS_KEPT = 16
"""Packed outbox reads kept (one per set of symbols read; the set changes with leases)."""

PIPELINE_SLICE = 50
"""Commands per round trip in the per-symbol sweeps (metrics, leases, claims).

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def script_source(name: str, *preludes: str) -> str:
    """A Lua script's source, after the preludes it uses (Redis has no includes)."""
    lua = resources.files("monitor.state").joinpath("lua")
    return "\n".join(lua.joinpath(part).read_text(encoding="utf-8") for part in (*preludes, name))


def score_at_or_above(price: Decimal) -> str:
    """A double no smaller than ``price`` (for triggers that fire at mark ≤ trigger)."""
    return repr(math.nextafter(float(price), math.inf))


def score_at_or_below(price: Decimal) -> str:
    """A double no larger than ``price`` (for triggers that fire at mark ≥ trigger)."""
    return repr(math.nextafter(float(price), -math.inf))


@dataclass(frozen=True, slots=True)
class Write:
    """One decided change: replace ``expected`` (None: absent) by ``record``."""

    record: PositionRecord
    expected: bytes | None
    triggers: Triggers
    event: Event | None = None
    topic: str = ""


@dataclass(frozen=True, slots=True)
class Candidates:
    """What a mark tick brought back: the symbol's quote and the positions to evaluate."""

    quote: Quote
    records: Sequence[tuple[PositionRecord, bytes]]


class CandidateRecords(Sequence[tuple[PositionRecord, bytes]]):
    """Candidates as Redis returned them, each decoded when it is read.

    A crash brings back a whole book side at once (100,000 records take over
    a second to decode): decoded slice by slice as they are decided, the
    most underwater positions' events go out while the rest wait.
    """

    __slots__ = ("raw", "symbol")

    def __init__(self, symbol: str, raw: list[tuple[bytes, bytes]]) -> None:
        self.symbol = symbol
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> tuple[PositionRecord, bytes]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[PositionRecord, bytes]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[PositionRecord, bytes] | list[tuple[PositionRecord, bytes]]:
        if isinstance(index, slice):
            return [self._decoded(pair) for pair in self.raw[index]]
        return self._decoded(self.raw[index])

    def _decoded(self, pair: tuple[bytes, bytes]) -> tuple[PositionRecord, bytes]:
        raw_id, raw = pair
        return PositionRecord.decode(raw_id.decode(), self.symbol, raw), raw


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


Commit = tuple[str, Sequence[Write], "Quote | bool | None"]
"""The arguments of one :meth:`Store.commit` call: symbol, writes, quote decided at."""

Found = tuple[PositionRecord, bytes] | None
"""A stored record with its raw bytes (for compare-and-set), or None when absent."""

_QUOTE_FIELDS = ("mark", "mark_ts", "index")
_SIDE_BYTES = {side: side.value.encode() for side in Side}
_NO_EVENT = (b"", b"", b"")


def _quote(fields: Sequence[bytes | str | None]) -> Quote | None:
    """The Quote in a price hash's mark, mark_ts and index (None before the first mark)."""
    mark, mark_ts, index = fields
    if mark is None or mark_ts is None:
        return None
    return Quote(
        Decimal(_text(mark)),
        int(mark_ts),
        Decimal(_text(index)) if index else None,
        stamp=f"{_text(mark_ts)}|{_text(mark)}",
    )


def _found(symbol: str, ids: Sequence[str], raws: Sequence[bytes | str | None]) -> list[Found]:
    return [
        (PositionRecord.decode(position_id, symbol, raw), _raw(raw)) if raw is not None else None
        for position_id, raw in zip(ids, raws, strict=True)
    ]


def _outbox_entries(replies: Iterable[Any], symbol_of: Mapping[str, str]) -> list[OutboxEntry]:
    """The entries in XREADGROUP replies; ``symbol_of`` maps an outbox key to its symbol."""
    entries: list[OutboxEntry] = []
    for reply in replies:
        # RESP3 answers a map of stream → entries; RESP2 a list of [stream, entries].
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        for key, stream_entries in streams:
            symbol = symbol_of[_text(key)]
            for entry_id, flat in stream_entries:
                if not flat:  # acknowledged and deleted meanwhile
                    continue
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entries.append(OutboxEntry.from_fields(symbol, entry_id, fields))
    return entries


def _conflicts(reply: Sequence[bytes]) -> set[str] | None:
    """commit.lua's reply: the conflicting ids, or None for a stale quote."""
    if reply and reply[0] == b"stale_quote":
        return None
    return {raw.decode() for raw in reply}


_KEEPALIVE: dict[int, int] = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
"""TCP keep-alive probes after 10 s idle, every 5 s, given up after 3 (where the OS has them)."""


def connect(settings: RedisSettings) -> Client:
    """liqmon's Redis client (TLS and credentials from the settings).

    With ``settings.cluster``, a cluster client that finds the other nodes
    from the one in the URL.
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
        return aioredis.RedisCluster.from_url(settings.url, **options)
    # One more try on a fresh connection (the old one died while idle), then
    # the error reaches the caller, which backs off and reports it; redis-py's
    # default (ten tries) would hold a call 20 s on a silent Redis.
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1)
    return aioredis.Redis.from_url(settings.url, retry=retry, **options)


class Store:
    """Async access to liqmon's Redis state for one key prefix."""

    def __init__(self, client: Client, keys: Keys, limits: Limits) -> None:
        self.client = client
        self.keys = keys
        self.limits = limits
        self._candidates = client.register_script(script_source("candidates.lua"))
        self.cluster = isinstance(client, aioredis.RedisCluster)
        """True on a Redis Cluster: see the module's docstring for what changes."""
        if isinstance(client, aioredis.RedisCluster):
            self._tick_nodes = ClusterChannels(client)
            self._outbox_nodes = ClusterChannels(client)
        else:
            self._ticks = Channel(client)
            self._outbox_reader = Channel(client)
        self._outbox_reads: dict[tuple[Any, ...], tuple[bytes, dict[str, str]]] = {}
        self._mark_heads: dict[str, bytes] = {}
        self._commit = client.register_script(
            script_source("commit.lua", "fields.lua", "tombstone.lua")
        )
        self._expire = client.register_script(script_source("expire.lua", "tombstone.lua"))
        self._versions = client.register_script(script_source("versions.lua"))
        self._ack = client.register_script(script_source("ack.lua"))
        self._published = client.register_script(script_source("published.lua", "fields.lua"))
        self._dead_letter = client.register_script(script_source("deadletter.lua"))
        self._epoch = client.register_script(script_source("epoch.lua"))
        # A script that may write (Redis 7 script flags: none) but writes
        # nothing: Redis refuses it exactly when it would refuse a write (out
        # of memory), and it touches no key (nothing to allow in an ACL).
        self._writable = client.register_script("#!lua\nreturn 1")

    async def ping(self) -> bool:
        """True when Redis answers and would take a write.

        Raises ``OutOfMemoryError`` when it would not (maxmemory reached), a
        :data:`REDIS_DOWN` error when it does not answer.
        """
        return bool(await self._writable())

    async def epoch(self) -> tuple[Epoch | None, bytes]:
        """The stored epoch (None: absent, Redis new or emptied, or unreadable) and its raw
        value (for :meth:`replace_epoch`): one GET."""
        raw = await self.client.get(self.keys.epoch)
        if raw is None:
            return None, b""
        try:
            return Epoch.decode(raw), _raw(raw)
        except (ValueError, KeyError, TypeError):  # overwritten by something else
            return None, _raw(raw)

    async def create_epoch(self, epoch: Epoch) -> tuple[Epoch, bool]:
        """Write ``epoch`` unless a readable one is stored (SET NX); the stored one, and
        whether it is the one just written.

        Read first: a Redis out of memory refuses even a SET NX that would write
        nothing, and a process must start there (it drains the outbox)."""
        stored, raw = await self.epoch()
        if stored is not None:
            return stored, False
        if await self.client.set(self.keys.epoch, epoch.encode(), nx=True):
            return epoch, True
        while True:
            stored, raw = await self.epoch()
            if stored is not None:
                return stored, False
            # Deleted in between, or unreadable: replaced, unless it changed again.
            after, written = await self.replace_epoch(raw, epoch)
            if after is not None:
                return after, written

    async def replace_epoch(self, expected: bytes, epoch: Epoch) -> tuple[Epoch | None, bool]:
        """Write ``epoch`` if the stored raw value is still ``expected`` (empty: absent);
        what is stored after, and whether it is ``epoch``."""
        stored = await self._epoch(keys=[self.keys.epoch], args=[expected, epoch.encode()])
        if stored is None:
            return None, False
        after = Epoch.decode(stored)
        return after, after == epoch

    def stuck(self) -> str | None:
        """Why a kept connection (the tick path's, the outbox reader's) is not answering
        (None: both answer). A request past its deadline is dropped and tried
        again; until a reply comes, Redis is silent, whatever a new connection says."""
        if self.cluster:
            named = [("tick path", self._tick_nodes), ("outbox reader", self._outbox_nodes)]
            for name, nodes in named:
                for why in nodes.stuck():
                    return f"{why} on the {name}"
            return None
        for name, channel in (("tick path", self._ticks), ("outbox reader", self._outbox_reader)):
            silent = channel.stuck()
            if silent is not None:
                return f"{silent} on the {name}"
        return None

    async def accept_mark(self, symbol: str, mark: Decimal, ts_ms: int) -> Candidates | None:
        """Store a mark tick and fetch the positions whose trigger it crossed.

        None when the tick is older than the stored mark (it is dropped).
        """
        return (await self.accept_marks([(symbol, mark, ts_ms)]))[0]

    async def accept_marks(
        self,
        marks: Sequence[tuple[str, Decimal, int]],
        ceilings: Sequence[int | None] | None = None,
    ) -> list[Candidates | None]:
        """:meth:`accept_mark` for several ``(symbol, mark, ts_ms)`` in one round trip.

        ``ceilings`` (one per mark): a stored mark stamped after its ceiling is
        not believed (a timestamp from the future) and does not hold the tick back.

        A round trip through redis.asyncio costs ~100 µs of CPU whatever it
        carries, so ticks of several symbols waiting together share one, on
        the tick path's own connection (:mod:`monitor.state.channel`).
        """
        bounds = ceilings if ceilings is not None else [None] * len(marks)
        commands = [
            self._mark_command(symbol, mark, ts_ms, ceiling)
            for (symbol, mark, ts_ms), ceiling in zip(marks, bounds, strict=True)
        ]
        if self.cluster:
            routes = [self.keys.price(symbol) for symbol, _, _ in marks]
            replies = await scripted(
                self.client, self._candidates, lambda: self._tick_nodes.execute(commands, routes)
            )
        else:
            replies = await scripted(
                self.client, self._candidates, lambda: self._ticks.execute(commands)
            )
        return [
            self._candidates_of(symbol, mark, ts_ms, reply)
            for (symbol, mark, ts_ms), reply in zip(marks, replies, strict=True)
        ]

    def _mark_command(self, symbol: str, mark: Decimal, ts_ms: int, ceiling: int | None) -> bytes:
        """EVALSHA of candidates.lua for one mark, packed; a symbol's keys are packed once."""
        head = self._mark_heads.get(symbol)
        if head is None:
            keys = [self.keys.price(symbol), self.keys.positions(symbol)]
            keys += self.keys.all_triggers(symbol)
            # The array header counts EVALSHA, the sha, numkeys, the keys and ARGV.
            count = 3 + len(keys) + MARK_ARGS
            head = b"*%d\r\n" % count + resp_parts(
                "EVALSHA", self._candidates.sha, len(keys), *keys
            )
            self._mark_heads[symbol] = head
        bound = "" if ceiling is None else ceiling
        return head + resp_parts(decimal_str(mark), ts_ms, repr(float(mark)), bound)

    @staticmethod
    def _candidates_of(symbol: str, mark: Decimal, ts_ms: int, reply: Any) -> Candidates | None:
        if int(reply[0]) == 0:
            return None
        index = Decimal(reply[1].decode()) if reply[1] else None
        quote = Quote(mark=mark, mark_ts_ms=ts_ms, index=index)
        seen: set[bytes] = set()
        records = []
        for raw_id, raw in zip(reply[3::2], reply[4::2], strict=True):
            if raw_id not in seen:
                seen.add(raw_id)
                records.append((raw_id, raw))
        return Candidates(quote, CandidateRecords(symbol, records))

    async def accept_index(
        self, symbol: str, index: Decimal, ts_ms: int, ceiling: int | None = None
    ) -> bool:
        """Store an index tick unless it is older than the stored one.

        A stored ``index_ts`` after ``ceiling`` (from the future) is not believed.
        """
        key = self.keys.price(symbol)
        stored = await self.client.hget(key, "index_ts")
        if (
            stored is not None
            and int(stored) > ts_ms
            and (ceiling is None or int(stored) <= ceiling)
        ):
            return False
        await self.client.hset(key, mapping={"index": decimal_str(index), "index_ts": ts_ms})
        return True

    async def quote(self, symbol: str) -> Quote | None:
        """The symbol's latest mark (and index), or None before the first mark."""
        return _quote(await self.client.hmget(self.keys.price(symbol), _QUOTE_FIELDS))

    async def records(self, symbol: str, ids: Sequence[str]) -> list[Found]:
        """The stored records (with their raw bytes, for compare-and-set) of ``ids``."""
        if not ids:
            return []
        raws = await self.client.hmget(self.keys.positions(symbol), list(ids))
        return _found(symbol, ids, raws)

    async def versions(
        self, wanted: Mapping[str, Sequence[str]]
    ) -> dict[str, tuple[Quote | None, list[Found]]]:
        """Per symbol, its quote and the stored records of its ids: one round trip in all.

        What new versions are decided on (``lua/versions.lua``): each symbol's
        mark and records are read together, its ids sent as one argument.
        """
        calls = [
            ([self.keys.price(symbol), self.keys.positions(symbol)], ["\0".join(ids)])
            for symbol, ids in wanted.items()
        ]
        replies = await evalsha_all(self.client, self._versions, calls)
        return {
            symbol: (_quote(reply[:3]), _found(symbol, ids, reply[3:]))
            for (symbol, ids), reply in zip(wanted.items(), replies, strict=True)
        }

    async def commit(
        self, symbol: str, writes: Sequence[Write], decided_at: Quote | bool | None = True
    ) -> set[str] | None:
        """Apply ``writes`` atomically; returns the ids whose record changed meanwhile.

        ``decided_at`` is the quote the decisions were made at (None: before
        any mark), or True not to check it. When the stored mark is no longer
        that quote's, nothing is written and None is returned.
        """
        if not writes:
            return set()
        keys, args = self._commit_call(symbol, writes, decided_at)
        return _conflicts(await self._commit(keys=keys, args=args))

    async def commit_many(self, calls: Sequence[Commit]) -> list[set[str] | None]:
        """Several :meth:`commit` calls in one round trip, each atomic on its own.

        Each result is what :meth:`commit` would return for that call; Redis
        runs the calls in the order given.
        """
        sent = [self._commit_call(*call) for call in calls if call[1]]
        replies = iter(await evalsha_all(self.client, self._commit, sent) if sent else [])
        return [_conflicts(next(replies)) if writes else set() for _, writes, _ in calls]

    def _commit_call(
        self, symbol: str, writes: Sequence[Write], decided_at: Quote | bool | None
    ) -> tuple[list[str], list[str | bytes]]:
        """Keys and arguments of ``commit.lua`` for ``writes``."""
        if decided_at is True:
            check = ""
        elif decided_at is None or decided_at is False:
            check = "-"
        else:
            # The exact stored text, so a mark written by another tool in
            # another spelling ("64000.00") still matches itself.
            check = decided_at.stamp or f"{decided_at.mark_ts_ms}|{decimal_str(decided_at.mark)}"
        # One argument for the whole batch, fields separated by NUL: redis-py
        # packs each argument in Python (~4 µs), and a burst commits 9 fields
        # per position. NUL cannot occur in ids (check_name), JSON or scores.
        fields: list[bytes] = []
        for write in writes:
            record, triggers, event = write.record, write.triggers, write.event
            down, up = triggers.down, triggers.up
            fields += (
                record.id.encode(),
                write.expected or b"",
                record.encode(),
                _SIDE_BYTES[record.side],
                b"" if down is None else score_at_or_above(down).encode(),
                b"" if up is None else score_at_or_below(up).encode(),
            )
            if event is None:
                fields += _NO_EVENT
            else:
                fields += (
                    event.event_id.encode(),
                    write.topic.encode(),
                    orjson.dumps(event.payload),
                )
        args: list[str | bytes] = [check, b"\0".join(fields)]
        if self.cluster:  # commit.lua announces the events it queues (see watch_outbox)
            args += [self.keys.outbox_ready, symbol]
        keys = [self.keys.positions(symbol), *self.keys.all_triggers(symbol)]
        keys += [self.keys.outbox(symbol), self.keys.price(symbol), self.keys.tombstones(symbol)]
        return keys, args

    async def expire_tombstones(self, symbols: Sequence[str], retention_s: int) -> int:
        """Forget the tombstones older than ``retention_s`` (``lua/expire.lua``), in slices.

        Returns how many records were deleted. The age is the Redis server's clock.
        """
        deleted = 0
        pending = list(symbols)
        while pending:
            calls = [
                (
                    [self.keys.positions(s), self.keys.tombstones(s)],
                    (retention_s * 1000, EXPIRE_SLICE),
                )
                for s in pending
            ]
            replies = await evalsha_all(self.client, self._expire, calls)
            deleted += sum(int(reply[0]) for reply in replies)
            pending = [s for s, reply in zip(pending, replies, strict=True) if int(reply[1])]
        return deleted

    async def enqueue(self, symbol: str, event_id: str, topic: str, payload: bytes) -> None:
        """Queue a message (an alert) in the symbol's outbox, to go out like events do."""
        await self.client.xadd(
            self.keys.outbox(symbol), {"event_id": event_id, "topic": topic, "payload": payload}
        )
        if self.cluster:
            await self.client.publish(self.keys.outbox_ready, symbol)

    async def with_open_positions(self, symbols: Sequence[str]) -> list[str]:
        """Those of ``symbols`` that hold a position a mark could liquidate (one in a
        trigger set): one EXISTS per symbol, in one round trip."""
        found = await pipelined(
            self.client,
            symbols,
            lambda pipe, symbol: pipe.exists(*self.keys.all_triggers(symbol)),
        )
        return [symbol for symbol, count in zip(symbols, found, strict=True) if count]

    async def symbol_of(self, position_id: str, symbols: Iterable[str]) -> str | None:
        """The symbol a position id belongs to, if any holds it.

        One HEXISTS per symbol in a single round trip: a look-up (an operator,
        the API) costs about a millisecond, and no global id index costs
        ~60 bytes per position in Redis.
        """
        names = list(symbols)
        found = await pipelined(
            self.client,
            names,
            lambda pipe, symbol: pipe.hexists(self.keys.positions(symbol), position_id),
        )
        return next((symbol for symbol, hit in zip(names, found, strict=True) if hit), None)

    async def all_records(self, symbol: str) -> list[PositionRecord]:
        """Every record of a symbol (for listings; not used on the tick path)."""
        records = []
        async for raw_id, raw in self.client.hscan_iter(self.keys.positions(symbol), count=1000):
            records.append(PositionRecord.decode(raw_id.decode(), symbol, raw))
        return records

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

    async def ensure_outbox_groups(self, symbols: Iterable[str]) -> None:
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
                if not await self._has_outbox_group(key):
                    raise
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def _has_outbox_group(self, key: str) -> bool:
        try:
            groups = await self.client.xinfo_groups(key)
        except ResponseError:  # no such key
            return False
        return any(_text(group["name"]) == OUTBOX_GROUP for group in groups)

    async def read_outbox(
        self, symbols: Sequence[str], consumer: str, count: int, block_ms: int, pending: bool
    ) -> list[OutboxEntry]:
        """Entries for ``consumer``: its unacknowledged ones (``pending``) or new ones."""
        # The command names every symbol's outbox: packed once (redis-py took
        # ~2 ms per call for 500 symbols, each time the publisher came back
        # for more) and sent on the reader's own connection.
        shape = (tuple(symbols), consumer, count, block_ms, pending)
        read = self._outbox_reads.get(shape)
        if read is None:
            if len(self._outbox_reads) >= OUTBOX_READS_KEPT:  # leases moved many times
                self._outbox_reads.clear()
            keys = [self.keys.outbox(symbol) for symbol in symbols]
            block: list[str | int] = [] if pending else ["BLOCK", block_ms]
            command = resp_command(
                "XREADGROUP", "GROUP", OUTBOX_GROUP, consumer, "COUNT", count, *block,
                "STREAMS", *keys, *(["0" if pending else ">"] * len(keys)),
            )  # fmt: skip
            read = self._outbox_reads[shape] = (command, dict(zip(keys, symbols, strict=True)))
        command, symbol_of = read
        # A blocking read may take its block time, then the usual deadline.
        deadline_s = REPLY_DEADLINE_S + (0 if pending else block_ms / 1000)
        replies = await self._outbox_reader.execute([command], deadline_s)
        return _outbox_entries(await self._readable(replies, symbols), symbol_of)

    async def read_outboxes(
        self, symbols: Sequence[str], consumer: str, count: int, pending: bool
    ) -> list[OutboxEntry]:
        """:meth:`read_outbox` on a cluster: one non-blocking XREADGROUP per symbol.

        Up to ``count`` entries per symbol; the reads of one node share a
        round trip, the nodes in parallel. Which symbols to read is the
        caller's (those announced by :meth:`watch_outbox`, or all of them).
        """
        commands, keys = [], []
        for symbol in symbols:
            shape = (symbol, consumer, count, pending)
            read = self._outbox_reads.get(shape)
            if read is None:
                key = self.keys.outbox(symbol)
                command = resp_command(
                    "XREADGROUP", "GROUP", OUTBOX_GROUP, consumer, "COUNT", count,
                    "STREAMS", key, "0" if pending else ">",
                )  # fmt: skip
                read = self._outbox_reads[shape] = (command, {key: symbol})
            commands.append(read[0])
            keys.append(self.keys.outbox(symbol))
        replies = await self._outbox_nodes.execute(commands, keys)
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
            await self.ensure_outbox_groups(symbols)
        return [reply for reply in replies if not isinstance(reply, ResponseError)]

    async def watch_outbox(
        self, on_ready: Callable[[str], None], subscribed: asyncio.Event
    ) -> None:
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
                    on_ready(_text(message["data"]))
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

    async def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
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

    async def outbox_length(self, symbols: Sequence[str]) -> int:
        """Events waiting for the broker, over all symbols."""
        return sum(
            await pipelined(
                self.client, symbols, lambda pipe, symbol: pipe.xlen(self.keys.outbox(symbol))
            )
        )

    async def outbox_backlog(self, symbols: Sequence[str], now_ms: int) -> tuple[int, float]:
        """Events waiting for the broker, and the age in seconds of the oldest (0 if none).

        Stream ids start with the time they were added, so the first id of
        each outbox tells its oldest entry's age without reading the entry.
        """

        def queue(pipe: AnyPipeline, symbol: str) -> None:
            pipe.xlen(self.keys.outbox(symbol))
            pipe.xrange(self.keys.outbox(symbol), count=1)

        replies = await pipelined(self.client, symbols, queue, per_item=2)
        length = sum(replies[0::2])
        firsts = [int(_text(first[0][0]).split("-")[0]) for first in replies[1::2] if first]
        return length, max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0
