"""The position store: positions, trigger index, quotes, candidates, and the commit.

A thin async shell around two Lua scripts (``lua/candidates.lua`` and
``lua/commit.lua``) and a few plain commands. It decides nothing: the engine
reads through it, asks the pure core, and writes the decisions back through
:meth:`PositionStore.commit`, whose compare-and-set makes every transition
happen once, and which queues each transition's event in the symbol's outbox
in the same script (the outbox is read by :mod:`monitor.state.outbox`).

Trigger prices are Decimals; Redis scores are doubles. A score is only used
to find candidates, so each is widened by one ulp away from the safe side:
a mark at or beyond the exact trigger is always inside the range queried, and
the occasional extra candidate is settled by exact Decimal math.

One server or a cluster is the :class:`~monitor.state.transport.Transport`'s
business: every call touches one symbol's keys (one hash tag, one slot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, overload

import orjson

from monitor.config.model import Limits
from monitor.core.errors import Bug
from monitor.core.evaluation import Event, Quote, Triggers
from monitor.core.frozen import quick_init
from monitor.core.margin import Side
from monitor.core.position import PositionRecord
from monitor.core.triggers import WORSENING_FIRST
from monitor.core.wire import decimal_str
from monitor.state.channel import resp_command, resp_parts
from monitor.state.epoch import Epoch
from monitor.state.keys import Keys
from monitor.state.transport import (
    Client,
    Lane,
    Transport,
    evalsha_all,
    pipelined,
    raw,
    register,
    scripted,
    text,
)

TICK_LANES = 4
"""Most tick-path round trips in flight at once, each on a connection of its own (one
per tick worker the daemon starts)."""

MARK_ARGS = 4
"""candidates.lua's ARGV after the sets' directions: mark, mark_ts, score, ceiling
(see :meth:`PositionStore._mark_command`)."""

EXPIRE_SLICE = 1000
"""Tombstones one expire.lua call forgets at most (it holds Redis while it runs)."""

FUNDED_SLICE = 1000
"""Positions whose last funding time one HMGET reads (see :meth:`PositionStore.funded`)."""


def score_at_or_above(price: Decimal) -> str:
    """A double no smaller than ``price`` (for triggers that fire at mark ≤ trigger)."""
    return repr(math.nextafter(float(price), math.inf))


def score_at_or_below(price: Decimal) -> str:
    """A double no larger than ``price`` (for triggers that fire at mark ≥ trigger)."""
    return repr(math.nextafter(float(price), -math.inf))


def candidates_call(keys: Keys, symbol: str) -> tuple[list[str], list[str]]:
    """candidates.lua's KEYS for ``symbol`` and the first ARGV (its sets' directions).

    The sets go in the order their candidates are read, worsening first
    (:data:`~monitor.core.triggers.WORSENING_FIRST`), each with the direction
    that tells the script which way to range; the mark's own ARGV follow
    (:data:`MARK_ARGS`).
    """
    sets = WORSENING_FIRST
    names = [keys.price(symbol), keys.positions(symbol)]
    names += [keys.triggers(symbol, trigger_set) for trigger_set in sets]
    return names, [trigger_set.direction.value for trigger_set in sets]


@quick_init
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
class DecidedAt:
    """What a commit checks the stored mark against before it writes anything.

    Three cases, named: :data:`UNCHECKED` (write whatever the mark is: the tick
    path, whose compare-and-set on each record is enough), :data:`NO_MARK`
    (decided before any mark was stored: refused once one is), and
    :meth:`quote` (decided at that quote: refused once the stored mark is
    another). A refused commit writes nothing and returns None.
    """

    stamp: str
    """commit.lua's ARGV[1]: ``""`` (unchecked), ``"-"`` (no mark), or ``"mark_ts|mark"``."""

    @classmethod
    def quote(cls, quote: Quote | None) -> DecidedAt:
        """Decided at ``quote`` (None: before any mark, :data:`NO_MARK`)."""
        if quote is None:
            return NO_MARK
        # The exact stored text, so a mark written by another tool in another
        # spelling ("64000.00") still matches itself.
        return cls(quote.stamp or f"{quote.mark_ts_ms}|{decimal_str(quote.mark)}")


UNCHECKED = DecidedAt("")
"""Commit whatever the stored mark is."""

NO_MARK = DecidedAt("-")
"""Decided before any mark: commit only while none is stored."""


@dataclass(frozen=True, slots=True)
class FundingWrite:
    """One funding payment decided: replace ``expected`` by ``record``, queue ``events``
    (the ``funding_applied`` event, then the status event the mark decided, if any),
    each with its topic."""

    record: PositionRecord
    expected: bytes
    triggers: Triggers
    events: Sequence[tuple[Event, str]]


@dataclass(frozen=True, slots=True)
class FundingResult:
    """What one funding commit did: None for a stale quote (nothing written), else the ids
    to decide again (changed meanwhile) and those that had paid this funding time."""

    conflicts: set[str]
    paid: set[str]


Commit = tuple[str, Sequence[Write], DecidedAt]
"""The arguments of one :meth:`PositionStore.commit` call: symbol, writes, decided at."""

Found = tuple[PositionRecord, bytes] | None
"""A stored record with its raw bytes (for compare-and-set), or None when absent."""

QUOTE_FIELDS = ("mark", "mark_ts", "index")
"""The price hash's fields a :class:`~monitor.core.evaluation.Quote` is read from."""

_SIDE_BYTES = {side: side.value.encode() for side in Side}
_NO_EVENT = (b"", b"", b"")


def decode_quote(fields: Sequence[bytes | str | None]) -> Quote | None:
    """The Quote in a price hash's mark, mark_ts and index (None before the first mark)."""
    mark, mark_ts, index = fields
    if mark is None or mark_ts is None:
        return None
    return Quote(
        Decimal(text(mark)),
        int(mark_ts),
        Decimal(text(index)) if index else None,
        stamp=f"{text(mark_ts)}|{text(mark)}",
    )


def _found(symbol: str, ids: Sequence[str], raws: Sequence[bytes | str | None]) -> list[Found]:
    return [
        (PositionRecord.decode(position_id, symbol, stored), raw(stored))
        if stored is not None
        else None
        for position_id, stored in zip(ids, raws, strict=True)
    ]


def _funding_fields(batch: Sequence[FundingWrite]) -> bytes:
    """funding.lua's ARGV[3]: 12 fields per write, separated by NUL (see the script)."""
    fields: list[bytes] = []
    for write in batch:
        record, down, up = write.record, write.triggers.down, write.triggers.up
        fields += (
            record.id.encode(),
            write.expected,
            record.encode(),
            _SIDE_BYTES[record.side],
            b"" if down is None else score_at_or_above(down).encode(),
            b"" if up is None else score_at_or_below(up).encode(),
        )
        events = write.events
        if len(events) > 2:
            raise Bug(f"funding.lua takes two events per write, got {len(events)}")
        for event, topic in events:
            fields += (event.event_id.encode(), topic.encode(), orjson.dumps(event.payload))
        fields += _NO_EVENT * (2 - len(events))
    return b"\0".join(fields)


def _conflicts(reply: Sequence[bytes]) -> set[str] | None:
    """commit.lua's reply: the conflicting ids, or None for a stale quote."""
    if reply and reply[0] == b"stale_quote":
        return None
    return {stored.decode() for stored in reply}


class PositionStore:
    """Async access to one key prefix's positions, trigger index, prices and epoch."""

    def __init__(self, transport: Transport, keys: Keys, limits: Limits) -> None:
        self.transport = transport
        self.keys = keys
        self.limits = limits
        client = transport.client
        self._tick_lanes: list[Lane] = []
        self._idle_ticks: list[Lane] = []
        self._commits = transport.lane("commit path")
        self._marks: dict[str, tuple[bytes, str]] = {}
        self._candidates = register(client, "candidates.lua")
        self._commit = register(client, "commit.lua", "fields.lua", "tombstone.lua", "reindex.lua")
        self._funding = register(
            client, "funding.lua", "fields.lua", "tombstone.lua", "reindex.lua"
        )
        self._expire = register(client, "expire.lua", "tombstone.lua")
        self._versions = register(client, "versions.lua")
        self._epoch = register(client, "epoch.lua")
        self._writable = register(client, "writable.lua")

    @property
    def client(self) -> Client:
        """The transport's client (for tools and tests that read Redis directly)."""
        return self.transport.client

    async def ping(self) -> bool:
        """True when Redis answers and would take a write.

        Raises ``OutOfMemoryError`` when it would not (maxmemory reached), a
        :data:`REDIS_DOWN` error when it does not answer.
        """
        return bool(await self._writable())

    async def epoch(self) -> tuple[Epoch | None, bytes]:
        """The stored epoch (None: absent, Redis new or emptied, or unreadable) and its raw
        value (for :meth:`replace_epoch`): one GET."""
        stored = await self.client.get(self.keys.epoch)
        if stored is None:
            return None, b""
        try:
            return Epoch.decode(stored), raw(stored)
        except (ValueError, KeyError, TypeError):  # overwritten by something else
            return None, raw(stored)

    async def create_epoch(self, epoch: Epoch) -> tuple[Epoch, bool]:
        """Write ``epoch`` unless a readable one is stored (SET NX); the stored one, and
        whether it is the one just written.

        Read first: a Redis out of memory refuses even a SET NX that would write
        nothing, and a process must start there (it drains the outbox)."""
        stored, value = await self.epoch()
        if stored is not None:
            return stored, False
        if await self.client.set(self.keys.epoch, epoch.encode(), nx=True):
            return epoch, True
        while True:
            stored, value = await self.epoch()
            if stored is not None:
                return stored, False
            # Deleted in between, or unreadable: replaced, unless it changed again.
            after, written = await self.replace_epoch(value, epoch)
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
        routes = [self._marks[symbol][1] for symbol, _, _ in marks]
        # A connection of the tick path's own per round trip in flight, up to
        # TICK_LANES: with one, every worker waited for the others' round trips
        # (ticks of distinct symbols never depend on each other; the coalescer
        # gives one symbol to one worker at a time), and wake-ups, not Redis,
        # capped the ticks a second.
        lane, taken = self._tick_lane()
        try:
            replies = await scripted(
                self.client, self._candidates, lambda: lane.execute(commands, routes)
            )
        finally:
            if taken:
                self._idle_ticks.append(lane)
        return [
            self._candidates_of(symbol, mark, ts_ms, reply)
            for (symbol, mark, ts_ms), reply in zip(marks, replies, strict=True)
        ]

    def _tick_lane(self) -> tuple[Lane, bool]:
        """A connection of the tick path, and whether it was taken from the idle ones
        (a new one while fewer than :data:`TICK_LANES`; give it back when done)."""
        if self._idle_ticks:
            return self._idle_ticks.pop(), True
        if len(self._tick_lanes) < TICK_LANES:
            lane = self.transport.lane("tick path")
            self._tick_lanes.append(lane)
            return lane, True
        # Every lane busy (more callers than lanes): share one; its turns keep one
        # write and its replies at a time.
        return self._tick_lanes[0], False

    def _mark_command(self, symbol: str, mark: Decimal, ts_ms: int, ceiling: int | None) -> bytes:
        """EVALSHA of candidates.lua for one mark, packed; a symbol's keys (and the
        directions of its trigger sets) are packed once, with the key that routes it."""
        packed = self._marks.get(symbol)
        if packed is None:
            keys, directions = candidates_call(self.keys, symbol)
            # The array header counts EVALSHA, the sha, numkeys, the keys and ARGV.
            count = 3 + len(keys) + len(directions) + MARK_ARGS
            head = b"*%d\r\n" % count + resp_parts(
                "EVALSHA", self._candidates.sha, len(keys), *keys, *directions
            )
            packed = self._marks[symbol] = (head, self.keys.price(symbol))
        head = packed[0]
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
        for raw_id, stored in zip(reply[3::2], reply[4::2], strict=True):
            if raw_id not in seen:
                seen.add(raw_id)
                records.append((raw_id, stored))
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
        return decode_quote(await self.client.hmget(self.keys.price(symbol), QUOTE_FIELDS))

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
            symbol: (decode_quote(reply[:3]), _found(symbol, ids, reply[3:]))
            for (symbol, ids), reply in zip(wanted.items(), replies, strict=True)
        }

    async def commit(
        self, symbol: str, writes: Sequence[Write], decided_at: DecidedAt = UNCHECKED
    ) -> set[str] | None:
        """Apply ``writes`` atomically; returns the ids whose record changed meanwhile.

        Each write's event goes into the symbol's outbox in the same script.
        When the stored mark is no longer the one ``decided_at`` names, nothing
        is written and None is returned (see :class:`DecidedAt`).
        """
        if not writes:
            return set()
        keys, args = self._commit_call(symbol, writes, decided_at)
        # Packed and sent on a kept connection of its own, like the marks: redis.asyncio's
        # layers would add their CPU to every crossing tick's latency (see
        # monitor.state.channel), and a long burst commit must not hold the marks' lane.
        command = resp_command("EVALSHA", self._commit.sha, len(keys), *keys, *args)
        replies = await scripted(
            self.client, self._commit, lambda: self._commits.execute([command], keys[:1])
        )
        return _conflicts(replies[0])

    async def commit_many(self, calls: Sequence[Commit]) -> list[set[str] | None]:
        """Several :meth:`commit` calls in one round trip, each atomic on its own.

        Each result is what :meth:`commit` would return for that call; Redis
        runs the calls in the order given.
        """
        sent = [self._commit_call(*call) for call in calls if call[1]]
        replies = iter(await evalsha_all(self.client, self._commit, sent) if sent else [])
        return [_conflicts(next(replies)) if writes else set() for _, writes, _ in calls]

    def _commit_call(
        self, symbol: str, writes: Sequence[Write], decided_at: DecidedAt
    ) -> tuple[list[str], list[str | bytes]]:
        """Keys and arguments of ``commit.lua`` for ``writes``."""
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
        args: list[str | bytes] = [decided_at.stamp, b"\0".join(fields)]
        # Where commit.lua announces the events it queues (a cluster: see Transport).
        args += self.transport.announcement(self.keys, symbol)
        keys = [self.keys.positions(symbol), *self.keys.all_triggers(symbol)]
        keys += [self.keys.outbox(symbol), self.keys.price(symbol), self.keys.tombstones(symbol)]
        keys.append(self.keys.changes(symbol))
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
                    [self.keys.positions(s), self.keys.tombstones(s), self.keys.funding(s)],
                    (retention_s * 1000, EXPIRE_SLICE),
                )
                for s in pending
            ]
            replies = await evalsha_all(self.client, self._expire, calls)
            deleted += sum(int(reply[0]) for reply in replies)
            pending = [s for s, reply in zip(pending, replies, strict=True) if int(reply[1])]
        return deleted

    async def with_open_positions(self, symbols: Sequence[str]) -> list[str]:
        """Those of ``symbols`` that hold a position a mark could liquidate (one in a
        trigger set): one EXISTS per symbol, in one round trip."""
        found = await pipelined(
            self.client,
            symbols,
            lambda pipe, symbol: pipe.exists(*self.keys.all_triggers(symbol)),
        )
        return [symbol for symbol, count in zip(symbols, found, strict=True) if count]

    async def funding_many(
        self,
        symbol: str,
        funding_ts_ms: int,
        batches: Sequence[Sequence[FundingWrite]],
        decided_at: DecidedAt,
    ) -> list[FundingResult | None]:
        """Apply funding payments (``lua/funding.lua``), one atomic script per batch, every
        batch in one round trip; per batch its :class:`FundingResult`, or None when the
        stored mark is no longer the one ``decided_at`` names (nothing of it written).

        A position that paid ``funding_ts_ms`` (or a later one) already is skipped and
        named in ``paid``: a funding time applied twice pays once.
        """
        keys = [self.keys.positions(symbol), *self.keys.all_triggers(symbol)]
        keys += [self.keys.outbox(symbol), self.keys.price(symbol), self.keys.tombstones(symbol)]
        keys += [self.keys.funding(symbol), self.keys.changes(symbol)]
        announce = self.transport.announcement(self.keys, symbol)
        calls: list[tuple[list[str], Sequence[str | int | bytes]]] = [
            (keys, [decided_at.stamp, funding_ts_ms, _funding_fields(batch), *announce])
            for batch in batches
            if batch
        ]
        replies = iter(await evalsha_all(self.client, self._funding, calls) if calls else [])
        results: list[FundingResult | None] = []
        for batch in batches:
            if not batch:
                results.append(FundingResult(set(), set()))
                continue
            reply = next(replies)
            if reply and reply[0] == b"stale_quote":
                results.append(None)
                continue
            conflicts, paid = reply
            results.append(FundingResult({text(i) for i in conflicts}, {text(i) for i in paid}))
        return results

    async def funded(self, symbol: str, ids: Sequence[str]) -> list[int]:
        """The last funding time (epoch ms, 0: none) each of ``ids`` paid."""
        key = self.keys.funding(symbol)
        # In slices, pipelined: one HMGET of a whole book would hold Redis while it runs.
        step = FUNDED_SLICE
        slices = [list(ids[start : start + step]) for start in range(0, len(ids), step)]
        replies = await pipelined(self.client, slices, lambda pipe, part: pipe.hmget(key, part))
        return [int(value) if value is not None else 0 for reply in replies for value in reply]

    async def raw_records(
        self, symbol: str, count: int = 1000
    ) -> list[tuple[PositionRecord, bytes]]:
        """Every record of a symbol with its stored bytes (for compare-and-set), read in
        HSCAN pages of about ``count`` (not used on the tick path)."""
        found = []
        async for raw_id, stored in self.client.hscan_iter(
            self.keys.positions(symbol), count=count
        ):
            found.append((PositionRecord.decode(text(raw_id), symbol, stored), raw(stored)))
        return found

    async def all_records(self, symbol: str) -> list[PositionRecord]:
        """Every record of a symbol (for listings; not used on the tick path)."""
        records = []
        async for raw_id, stored in self.client.hscan_iter(self.keys.positions(symbol), count=1000):
            records.append(PositionRecord.decode(raw_id.decode(), symbol, stored))
        return records
