"""The read model: every read the web edge (``/api/*``, the dashboard) makes of Redis.

Reads only, each answering in plain values (quotes, ids with scores, stored
records, stream entries), so that :mod:`monitor.web` decides what to read
and how to present it without speaking Redis: it imports nothing of
``redis`` nor of the position store, the outbox or the transport (an
import-linter contract in ``pyproject.toml`` checks it). The daemon's liquidation
books (:mod:`monitor.state.books`, which ``/api/stress``, the map and the gauges
answer from) read the stored records and each symbol's change log through it
(:meth:`ReadModel.changes_after`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from monitor.core.evaluation import Quote
from monitor.core.position import PositionRecord
from monitor.core.triggers import Direction, TriggerSet
from monitor.state.channel import resp_command
from monitor.state.keys import Keys
from monitor.state.positions import QUOTE_FIELDS, decode_quote
from monitor.state.transport import REDIS_DOWN, Transport, pipelined, register, swept, text

__all__ = [
    "REDIS_DOWN",
    "TURN",
    "WALK_PAGE",
    "Changes",
    "Entry",
    "ReadModel",
    "Sizes",
    "StoredPrices",
]

TURN = 100
"""Positions :meth:`ReadModel.reach_in_turns` hands over between two turns of the event
loop: a position decoded and tested by the caller costs 10-20 µs, so a turn comes every
1-2 ms."""

WALK_PAGE = 250
"""Ids, then records, read per round trip by :meth:`ReadModel.reach_in_turns`: small,
because a page's reply is decoded in one go, and the records of larger ones lived long
enough to bring on more of Python's full collections, each holding the loop for tens of
milliseconds."""

Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""


@dataclass(frozen=True, slots=True)
class StoredPrices:
    """A symbol's price hash as stored (None: not stored yet)."""

    mark: str | None
    mark_ts: int | None
    index: str | None
    index_ts: int | None


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many positions a symbol stores, and how many each trigger set holds."""

    total: int
    sets: dict[TriggerSet, int]


@dataclass(frozen=True, slots=True)
class Changes:
    """A page of a symbol's change log (``lua/changes.lua``), and the counts that say
    whether a reader missed entries."""

    added: int
    """Entries ever added to the log (0: there is no log)."""
    kept: int
    """Entries the log holds now (the oldest are trimmed)."""
    last: str
    """The id of the newest entry ("0-0": none)."""
    entries: list[tuple[str, list[str]]]
    """Entries after the cursor asked for: each id, and the position ids it names."""


class ReadModel:
    """Reads of one key prefix's positions, trigger sets, prices and published events."""

    def __init__(self, transport: Transport, keys: Keys) -> None:
        self._transport = transport
        self._client = transport.client
        self._keys = keys
        self._counting = transport.lane("position counts")
        self._size_commands: dict[str, list[bytes]] = {}
        self._changes = register(self._client, "changes.lua")

    async def aclose(self) -> None:
        """Close the connections (a command-line tool's, when it is done)."""
        await self._transport.aclose()

    async def quotes(self, symbols: Sequence[str]) -> dict[str, Quote | None]:
        """The latest stored quote of each symbol (None before its first mark)."""
        replies = await pipelined(
            self._client,
            symbols,
            lambda pipe, symbol: pipe.hmget(self._keys.price(symbol), QUOTE_FIELDS),
        )
        return {
            symbol: decode_quote(fields) for symbol, fields in zip(symbols, replies, strict=True)
        }

    async def quote(self, symbol: str) -> Quote | None:
        """The symbol's latest stored quote (None before its first mark)."""
        return decode_quote(await self._client.hmget(self._keys.price(symbol), QUOTE_FIELDS))

    async def prices(self, symbols: Sequence[str]) -> list[StoredPrices]:
        """Each symbol's stored mark and index, with their timestamps."""
        replies = await pipelined(
            self._client,
            symbols,
            lambda pipe, symbol: pipe.hmget(
                self._keys.price(symbol), ["mark", "mark_ts", "index", "index_ts"]
            ),
        )
        return [
            StoredPrices(
                text(mark) if mark is not None else None,
                int(mark_ts) if mark_ts is not None else None,
                text(index) if index is not None else None,
                int(index_ts) if index_ts is not None else None,
            )
            for mark, mark_ts, index, index_ts in replies
        ]

    async def symbol_of(self, position_id: str, symbols: Iterable[str]) -> str | None:
        """The symbol whose book holds ``position_id``, if any.

        One HEXISTS per symbol in a single round trip: a look-up costs about a
        millisecond, and no global id index costs ~60 bytes per position in Redis.
        """
        names = list(symbols)
        found = await pipelined(
            self._client,
            names,
            lambda pipe, symbol: pipe.hexists(self._keys.positions(symbol), position_id),
        )
        return next((symbol for symbol, hit in zip(names, found, strict=True) if hit), None)

    async def record(self, symbol: str, position_id: str) -> PositionRecord | None:
        """One stored record (None: absent)."""
        stored = await self._client.hget(self._keys.positions(symbol), position_id)
        return PositionRecord.decode(position_id, symbol, stored) if stored is not None else None

    async def raw_records(self, symbol: str, ids: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of each of ``ids`` (None where absent)."""
        # The client does not decode replies: the stored values are bytes.
        raws: Any = await self._client.hmget(self._keys.positions(symbol), list(ids))
        return list(raws)

    async def scan_records(self, symbol: str) -> AsyncIterator[tuple[str, bytes]]:
        """Every ``(id, stored bytes)`` of a symbol's book, read a thousand at a time."""
        key = self._keys.positions(symbol)
        async for raw_id, stored in self._client.hscan_iter(key, count=1000):
            yield text(raw_id), stored

    async def changes_after(self, symbol: str, cursor: str, count: int) -> Changes:
        """Up to ``count`` entries of the symbol's change log after entry ``cursor`` (0: only
        the counts), with the log's counts, read at one moment."""
        reply: Any = await self._changes(keys=[self._keys.changes(symbol)], args=[cursor, count])
        added, kept, last, entries = reply
        return Changes(
            int(added),
            int(kept),
            text(last),
            [
                # An entry has one field, ids: [b"ids", value].
                (text(entry_id), text(fields[1]).split("\0"))
                for entry_id, fields in entries
            ],
        )

    async def trigger_page(
        self, symbol: str, trigger_set: TriggerSet, bound: float, skip: int, count: int
    ) -> list[tuple[str, float]]:
        """Up to ``count`` ``(id, score)`` of a trigger set, from ``bound`` (inclusive, after
        ``skip`` members) away from where the set fires first: by falling score in a
        ``down`` set, by rising score in an ``up`` set."""
        key = self._keys.triggers(symbol, trigger_set)
        members: Any
        if trigger_set.direction is Direction.DOWN:
            members = await self._client.zrevrangebyscore(
                key, bound, "-inf", start=skip, num=count, withscores=True
            )
        else:
            members = await self._client.zrangebyscore(
                key, bound, "+inf", start=skip, num=count, withscores=True
            )
        return [(text(member), float(score)) for member, score in members]

    async def reach(
        self, symbol: str, trigger_set: TriggerSet, price: Decimal | None, page: int
    ) -> AsyncIterator[list[tuple[str, bytes]]]:
        """The stored ``(id, record)`` of a trigger set's members a mark at ``price`` (None:
        any price) reaches, from the end where the set fires first, ``page`` ids and then
        their records a round trip, one list per page.

        A ``down`` set's members scored at or above ``price``, an ``up`` set's at or below,
        each bound widened by one ulp of the float score so that rounding a price to a
        double never leaves a position out (an exact test decides what counts). Each
        page starts after the last score read, ties counted (as ``/api/positions`` walks).
        The pages are not one snapshot: a position moved meanwhile is read as it stands
        when its page is read. Cancelling between pages is safe (nothing is written).
        """
        down = trigger_set.direction is Direction.DOWN
        stop = (
            None if price is None else math.nextafter(float(price), -math.inf if down else math.inf)
        )
        bound, skip = (math.inf, 0) if down else (-math.inf, 0)
        while True:
            members = await self.trigger_page(symbol, trigger_set, bound, skip, page)
            kept = [
                position_id
                for position_id, score in members
                if stop is None or (score >= stop if down else score <= stop)
            ]
            raws = await self.raw_records(symbol, kept) if kept else []
            found = [
                (position_id, raw)
                for position_id, raw in zip(kept, raws, strict=True)
                if raw is not None
            ]
            if found:
                yield found
            if len(members) < page or len(kept) < len(members):
                return
            last = members[-1][1]
            ties = sum(1 for _, score in members if score == last)
            skip = skip + len(members) if last == bound else ties
            bound = last

    async def reach_in_turns(
        self, symbol: str, trigger_set: TriggerSet, price: Decimal | None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """:meth:`reach`, :data:`WALK_PAGE` a round trip, one ``(id, record)`` at a time, with
        the event loop given back every :data:`TURN` of them: what the caller does with each
        runs in between, so a walk over a large book in the daemon's loop (a stress, a map,
        the liquidation gauges) does not hold its ticks up."""
        handed = 0
        async for found in self.reach(symbol, trigger_set, price, WALK_PAGE):
            for item in found:
                yield item
                handed += 1
                if handed % TURN == 0:
                    await asyncio.sleep(0)

    async def trigger_size(self, symbol: str, trigger_set: TriggerSet) -> int:
        """How many positions a trigger set holds."""
        size: int = await self._client.zcard(self._keys.triggers(symbol, trigger_set))
        return size

    async def trigger_members(
        self, symbol: str, trigger_set: TriggerSet, start: int, count: int
    ) -> list[str]:
        """Up to ``count`` ids of a trigger set from rank ``start``, by rising score."""
        key = self._keys.triggers(symbol, trigger_set)
        members: Any = await self._client.zrange(key, start, start + count - 1)
        return [text(member) for member in members]

    async def sizes(self, symbols: Sequence[str]) -> dict[str, Sizes]:
        """Per symbol, its stored positions and the sizes of its trigger sets (no scan)."""
        # Packed once per symbol and sent on a kept connection of its own: the
        # dashboard and every metrics scrape count all symbols, and a few thousand
        # commands through redis.asyncio's pipeline held the event loop (and the
        # ticks) for milliseconds at a time.
        keys = self._keys
        sets = list(TriggerSet)
        commands: list[bytes] = []
        routes: list[str] = []
        for symbol in symbols:
            packed = self._size_commands.get(symbol)
            if packed is None:
                packed = self._size_commands[symbol] = [
                    resp_command("HLEN", keys.positions(symbol)),
                    *(resp_command("ZCARD", keys.triggers(symbol, s)) for s in sets),
                ]
            commands += packed
            routes += [keys.positions(symbol)] * len(packed)
        per = 1 + len(sets)
        replies = await swept(self._counting, commands, routes)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        sizes = {}
        for n, symbol in enumerate(symbols):
            total, *counts = replies[per * n : per * n + per]
            sizes[symbol] = Sizes(int(total), dict(zip(sets, counts, strict=True)))
        return sizes

    async def published(self, high: str, count: int) -> list[Entry]:
        """Up to ``count`` entries of the ``published`` stream, newest first, from id
        ``high`` (``+``: the newest; ``(ID``: before ID)."""
        batch: Any = await self._client.xrevrange(self._keys.published, high, "-", count=count)
        return list(batch)

    async def newest_published(self) -> str | None:
        """The id of the newest ``published`` entry (None: the stream is empty)."""
        newest = await self.published("+", 1)
        return text(newest[0][0]) if newest else None

    async def published_after(self, last: str, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` ``published`` entries after id ``last``, waiting up to
        ``block_ms`` for the first."""
        key = self._keys.published
        reply: Any = await self._client.xread({key: last}, count=count, block=block_ms)
        entries: list[Entry] = []
        # RESP3 answers a map of stream → [entries]; RESP2 a list of [stream, entries].
        streams = reply.values() if isinstance(reply, dict) else ([v] for _, v in reply or [])
        for batches in streams:
            for batch in batches:
                entries.extend(batch)
        return entries
