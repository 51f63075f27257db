"""The HTTP API's reads: positions closest to liquidation, one position, events, symbols.

Everything here reads Redis (through the read model,
:class:`~monitor.state.readmodel.ReadModel`) and decides nothing. Query strings are parsed by
pure functions (:func:`parse_positions_query`, :func:`parse_events_query`)
that raise :class:`ApiError` with the HTTP status and a message for the
caller; :class:`Api` does the reads.

How "closest to liquidation" is found without scanning every position
---------------------------------------------------------------------

A monitored position sits in its side's worsening trigger set (see
:mod:`monitor.core.evaluation`): a long in ``trig:long:down`` at its margin-call
price while healthy and at its liquidation price in margin call; a short in
``trig:short:up`` likewise. For a long the margin-call price is above the
liquidation price, and each score is widened upwards, so **a long's score is
never below its liquidation price**; for a short, never above it. With the
distance to liquidation defined as ``side · (mark − liquidation) / mark``,
a long not yet read whose score is at most ``s`` is at least
``(mark − s) / mark`` away. So each symbol's longs are read by falling score
(its shorts by rising score) a page at a time, each read exactly; the walk
whose frontier is nearest the mark goes next, and all stop as soon as the
``limit``-th closest found so far is no farther than every frontier: the
answer is the exact top ``limit``, at a cost that depends on how many
positions sit near the mark, not on how many there are.

Filters (``account``, ``status``) are applied to the positions read, so a
filter that matches few of the closest positions makes the walk longer: it
gives up after rejecting :data:`FILTER_BUDGET` records per symbol and side
(any walk after :data:`READ_CAP`), and the answer then says
``"complete": false``. Positions in margin call are exactly the members of
the improving trigger sets (``trig:long:up``, ``trig:short:down``), so
``at_risk=true`` reads those, however far from the mark. Liquidated and closed
positions are in no trigger set: ``status=liquidated`` or ``closed`` reads
the symbol's hash with ``HSCAN`` up to :data:`READ_CAP` records
(``/api/events`` lists recent liquidations without that limit).

Decoded records and their liquidation prices are kept in a
:class:`RecordCache` keyed by the stored bytes, so the dashboard's
once-a-second listing mostly costs the Redis reads.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import orjson

from monitor.core.clusters import ClusterAlert
from monitor.core.errors import RequestFailed
from monitor.core.evaluation import Quote
from monitor.core.guards import AlertType, FeedState, PriceGuards
from monitor.core.margin import Contract, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import EventType, RiskLimits, Status
from monitor.core.triggers import Direction, TriggerSet
from monitor.core.view import describe
from monitor.state.books import Books
from monitor.state.readmodel import TURN, ReadModel

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DEFAULT_EVENTS = 100
FILTER_BUDGET = 2_000
"""Records a filtered walk may read and reject, per symbol and side, before it gives up."""
READ_CAP = 50_000
"""Records one walk (or scan) reads at most, per symbol and side (or per symbol)."""
MAX_PAGE = 2_000
CACHE_SIZE = 100_000
"""Liquidation prices (with the stored bytes they were solved from) kept between listings
and maps."""
MAX_ACCOUNT_LENGTH = 64

INDEXED = frozenset({Status.HEALTHY, Status.MARGIN_CALL})
"""The statuses found through the trigger sets."""

EVENT_TYPES = (
    frozenset(t.value for t in EventType)
    | frozenset(t.value for t in AlertType)
    | frozenset(t.value for t in ClusterAlert)
)
"""What ``/api/events?type=`` accepts: position events, price-guard and cluster alerts."""


class ApiError(RequestFailed):
    """A request the API cannot answer: ``status`` (400, 404, 503) and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    """A 400 with ``message``."""
    return ApiError(400, message)


# -- query strings (pure) ---------------------------------------------------


def query_params(query: str, allowed: Sequence[str]) -> dict[str, str]:
    """The parameters of ``query``; unknown or repeated names are a 400.

    An empty value (``symbol=``) counts as not given.
    """
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError as error:
        raise bad_request(f"malformed query string: {error}") from None
    for name, value in pairs:
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise bad_request(f"unknown parameter {name!r} (expected: {expected})")
        if name in params:
            raise bad_request(f"parameter {name!r} given more than once")
        if value != "":
            params[name] = value
    return params


def parse_limit(value: str | None, default: int, maximum: int = MAX_LIMIT) -> int:
    """``limit``: an integer from 1 to ``maximum``."""
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise bad_request(f"limit must be an integer from 1 to {maximum}, got {value!r}")
    return int(value)


def parse_bool(name: str, value: str | None) -> bool:
    """``true``/``false`` (or ``1``/``0``)."""
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise bad_request(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class PositionsQuery:
    """``GET /api/positions``: which positions, and how many."""

    symbols: tuple[str, ...]
    account: str | None = None
    statuses: frozenset[Status] = INDEXED
    limit: int = DEFAULT_LIMIT

    @property
    def selection(self) -> str:
        """What the query lists, in words: ``open positions``, ``margin call positions``..."""
        if self.statuses == INDEXED:
            return "open positions"
        names = sorted(status.value.replace("_", " ") for status in self.statuses)
        return " and ".join(names) + " positions"


POSITIONS_PARAMS = ("symbol", "account", "status", "at_risk", "limit")


def check_symbol(symbol: str, symbols: Sequence[str]) -> str:
    """``symbol``: one of the configured ``symbols``."""
    if symbol not in symbols:
        raise bad_request(f"unknown symbol {symbol!r} (configured: {', '.join(symbols)})")
    return symbol


def check_account(account: str) -> str:
    """``account``: at most :data:`MAX_ACCOUNT_LENGTH` characters."""
    if len(account) > MAX_ACCOUNT_LENGTH:
        raise bad_request(f"account must be at most {MAX_ACCOUNT_LENGTH} characters")
    return account


def parse_status(value: str) -> Status:
    """``status``: a position status by its name."""
    try:
        return Status(value)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise bad_request(f"status must be one of {names}, got {value!r}") from None


def check_event_type(kind: str) -> str:
    """``type``: a position event or an alert (:data:`EVENT_TYPES`)."""
    if kind not in EVENT_TYPES:
        raise bad_request(f"type must be one of {', '.join(sorted(EVENT_TYPES))}, got {kind!r}")
    return kind


def parse_positions_query(
    query: str, symbols: Sequence[str], maximum: int = MAX_LIMIT
) -> PositionsQuery:
    """Validate ``symbol``, ``account``, ``status``, ``at_risk`` and ``limit``
    (their meaning: :func:`positions_query`)."""
    params = query_params(query, POSITIONS_PARAMS)
    symbol = params.get("symbol")
    account = params.get("account")
    status = params.get("status")
    return positions_query(
        symbols,
        symbol=check_symbol(symbol, symbols) if symbol is not None else None,
        account=check_account(account) if account is not None else None,
        status=parse_status(status) if status is not None else None,
        at_risk=parse_bool("at_risk", params.get("at_risk")),
        limit=parse_limit(params.get("limit"), DEFAULT_LIMIT, maximum),
    )


def positions_query(
    symbols: Sequence[str],
    *,
    symbol: str | None = None,
    account: str | None = None,
    status: Status | None = None,
    at_risk: bool = False,
    limit: int = DEFAULT_LIMIT,
) -> PositionsQuery:
    """What a positions listing selects, for ``/api/positions`` and ``liqmon positions list``.

    Without ``status``, the open positions (healthy and in margin call) are
    listed; ``at_risk`` keeps those in margin call (a liquidated position is no
    longer at risk: ``status=liquidated`` lists those).
    """
    statuses = INDEXED if status is None else frozenset({status})
    if at_risk:
        if status is not None and status is not Status.MARGIN_CALL:
            raise bad_request("at_risk=true lists positions in margin call; it excludes status")
        statuses = frozenset({Status.MARGIN_CALL})
    return PositionsQuery(
        symbols=(symbol,) if symbol else tuple(symbols),
        account=account,
        statuses=statuses,
        limit=limit,
    )


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """``GET /api/events``: how many recent events, of which type."""

    limit: int = DEFAULT_EVENTS
    type: str | None = None


def parse_events_query(query: str) -> EventsQuery:
    """Validate ``limit`` and ``type``."""
    params = query_params(query, ("limit", "type"))
    kind = params.get("type")
    return EventsQuery(
        parse_limit(params.get("limit"), DEFAULT_EVENTS),
        check_event_type(kind) if kind is not None else None,
    )


# -- rows -------------------------------------------------------------------


def distance(side: Side, mark: Decimal, liquidation: Decimal) -> Decimal:
    """How far the mark may move against the position before it is liquidated, as a fraction."""
    sign = 1 if side is Side.LONG else -1
    return sign * (mark - liquidation) / mark


@dataclass(frozen=True, slots=True)
class Candidate:
    """A position read while listing, with its exact distance (None: no mark or no
    liquidation price). Only the candidates that make the list are described in full."""

    distance: Decimal | None
    record: PositionRecord

    @property
    def order(self) -> tuple[int, Decimal]:
        """Sort key: closest first, unknown distances last."""
        return (1, Decimal(0)) if self.distance is None else (0, self.distance)


def candidate(contract: Contract, record: PositionRecord, quote: Quote | None) -> Candidate:
    """``record`` with its exact distance to liquidation at ``quote``'s mark."""
    liquidation = model_for(contract).liquidation_price(record.position) if record.qty else None
    if quote is None or liquidation is None:
        return Candidate(None, record)
    return Candidate(distance(record.side, quote.mark, liquidation), record)


def event_document(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """One entry of the ``published`` stream as the API and the dashboard show it."""
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    try:
        payload = orjson.loads(fields.get(b"payload", b"null"))
    except orjson.JSONDecodeError:
        payload = None
    kind = payload.get("type") if isinstance(payload, dict) else None
    return {
        "id": entry,
        "published_at": int(entry.split("-", 1)[0]),
        "event_id": fields.get(b"event_id", b"").decode(),
        "type": kind,
        "symbol": fields.get(b"symbol", b"").decode(),
        "topic": fields.get(b"topic", b"").decode(),
        "payload": payload,
    }


# -- reads ------------------------------------------------------------------


class RecordCache:
    """Liquidation prices of stored records, least recently used out.

    The dashboard asks for the same closest positions every second, and its
    map for every position near the mark; solving a record's liquidation
    price is most of that cost. An entry is used only while the stored bytes
    are the same, so a new version or status is always seen. Only the bytes
    and the price are kept, and the record is decoded again at each use (a
    few µs): neither is an object Python's garbage collector scans, where
    100,000 decoded records made each of its full passes hold the daemon's
    event loop, and its ticks, for 40-100 ms.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, Decimal | None]] = OrderedDict()

    def get(
        self, contract: Contract, position_id: str, raw: bytes
    ) -> tuple[PositionRecord, Decimal | None]:
        """The record stored as ``raw`` and its liquidation price."""
        record = PositionRecord.decode(position_id, contract.symbol, raw)
        key = (contract.symbol, position_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == raw:
            self._entries.move_to_end(key)
            return record, entry[1]
        liquidation = model_for(contract).liquidation_price(record.position) if record.qty else None
        self._entries[key] = (raw, liquidation)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return record, liquidation


@dataclass(frozen=True, slots=True)
class Listing:
    """The answer to a positions query: the rows, and whether the walk saw all it needed."""

    rows: list[dict[str, Any]]
    complete: bool
    matched: int | None = None
    """How many positions match the query, when asked for and countable (see
    :meth:`Api.positions`); ``len(rows)`` of them are listed."""

    def document(self, limit: int) -> dict[str, Any]:
        """The JSON answer of ``GET /api/positions`` (``matched`` only when counted)."""
        document: dict[str, Any] = {
            "positions": self.rows,
            "count": len(self.rows),
            "limit": limit,
            "complete": self.complete,
        }
        if self.matched is not None:
            document["matched"] = self.matched
        return document


@dataclass(slots=True)
class Walk:
    """Where one side's walk of its worsening trigger set stands.

    The cursor is the last score read (inclusive) and how many members at that
    score were already read; ``floor`` bounds the distance of every position
    not read yet (None without a mark); pages grow from the first to
    :data:`MAX_PAGE`.
    """

    contract: Contract
    side: Side
    quote: Quote | None
    trigger_set: TriggerSet
    page: int
    bound: float
    skip: int = 0
    read: int = 0
    rejected: int = 0
    floor: Decimal | None = None
    done: bool = False
    gave_up: bool = False


class Api:
    """Reads for ``/api/*`` and the dashboard, through the read model."""

    def __init__(
        self,
        reads: ReadModel,
        contracts: Mapping[str, Contract],
        guards: PriceGuards | None = None,
        clock: Callable[[], float] = time.monotonic,
        risk: RiskLimits | None = None,
        books: Books | None = None,
    ) -> None:
        self.reads = reads
        self.books = books
        """The daemon's liquidation books (None: a one-off command, which walks instead)."""
        self.contracts = dict(contracts)
        self.guards = guards
        self.risk = risk if risk is not None else RiskLimits()
        """The margin-call thresholds ``/api/stress`` counts margin calls with."""
        self.clock = clock
        self.cache = RecordCache(CACHE_SIZE)

    @property
    def symbols(self) -> list[str]:
        """The configured symbols, in configuration order."""
        return list(self.contracts)

    async def quotes(self, symbols: Sequence[str]) -> dict[str, Quote | None]:
        """The latest stored quote of each symbol, in one round trip."""
        return await self.reads.quotes(symbols)

    async def positions(self, query: PositionsQuery, count: bool = False) -> Listing:
        """The ``query.limit`` positions closest to liquidation that match ``query``.

        This is the one selection both ``GET /api/positions`` and ``liqmon
        positions list`` make. With ``count``, the listing also says how many
        positions match: from the trigger sets' sizes for open positions, by the
        scan itself for liquidated or closed ones; not with an ``account``
        filter (that would take a scan of every position).
        """
        quotes = await self.quotes(query.symbols)

        def accept(record: PositionRecord) -> bool:
            return record.status in query.statuses and (
                query.account is None or record.account == query.account
            )

        found: list[Candidate] = []
        walks: list[Walk] = []
        complete = True
        for symbol in query.symbols:
            contract, quote = self.contracts[symbol], quotes[symbol]
            if not query.statuses <= INDEXED:
                some, done = await self._scan(contract, quote, accept)
                found.extend(some)
                complete = complete and done
                continue
            for side in (Side.LONG, Side.SHORT):
                if query.statuses == {Status.MARGIN_CALL}:
                    members = await self._margin_call_members(contract, side, quote, accept)
                    if members is not None:
                        found.extend(members)
                        continue
                walks.append(self._walk(contract, side, quote, query.limit))
        complete = await self._best_first(walks, query.limit, accept, found) and complete
        matched = None
        if count and query.statuses <= INDEXED and query.account is None:
            matched = await self._indexed_count(query.symbols, query.statuses)
        elif count and not walks and complete:
            matched = len(found)
        found.sort(key=lambda c: c.order)
        rows = [
            describe(self.contracts[c.record.symbol], c.record, quotes[c.record.symbol])
            for c in found[: query.limit]
        ]
        return Listing(rows, complete, matched)

    async def _indexed_count(self, symbols: Sequence[str], statuses: frozenset[Status]) -> int:
        """Positions of ``symbols`` in ``statuses`` (both indexed), from the trigger sets' sizes."""
        counts = await self.counts(symbols)
        return sum(counts[symbol][status.value] for symbol in symbols for status in statuses)

    def _walk(self, contract: Contract, side: Side, quote: Quote | None, want: int) -> Walk:
        """A walk of ``side``'s worsening set, from the end where its positions are nearest
        liquidation (the highest scores of a ``down`` set, the lowest of an ``up`` one)."""
        trigger_set = TriggerSet.worsening_of(side)
        return Walk(
            contract,
            side,
            quote,
            trigger_set,
            page=min(max(want, 16), MAX_PAGE),
            bound=math.inf if trigger_set.direction is Direction.DOWN else -math.inf,
        )

    async def _best_first(
        self,
        walks: list[Walk],
        want: int,
        accept: Callable[[PositionRecord], bool],
        found: list[Candidate],
    ) -> bool:
        """Advance the walks (module doc), always the one whose frontier is nearest the mark,
        until no unread position can beat the ``want``-th closest found; False if a filtered
        walk gave up."""
        best: list[Decimal] = []  # the `want` smallest distances so far, as a max-heap (negated)

        def keep(items: list[Candidate]) -> None:
            found.extend(items)
            for item in items:
                if item.distance is not None:
                    heapq.heappush(best, -item.distance)
                    if len(best) > want:
                        heapq.heappop(best)

        for walk in walks:  # every walk's first page: its frontier
            keep(await self._step(walk, accept))
            if walk.quote is None:
                walk.done = True  # no mark, nothing to order by: one page will do
        while True:
            open_walks = [w for w in walks if not w.done and w.floor is not None]
            if not open_walks:
                break
            nearest = min(open_walks, key=_floor)
            if len(best) >= want and -best[0] <= _floor(nearest):
                break
            keep(await self._step(nearest, accept))
        return not any(w.gave_up for w in walks)

    async def _step(self, walk: Walk, accept: Callable[[PositionRecord], bool]) -> list[Candidate]:
        """Read the walk's next page; the accepted positions in it."""
        members = await self.reads.trigger_page(
            walk.contract.symbol, walk.trigger_set, walk.bound, walk.skip, walk.page
        )
        if not members:
            walk.done = True
            return []
        accepted = []
        for item in await self._read(walk.contract, [m for m, _ in members], walk.quote):
            if accept(item.record):
                accepted.append(item)
            else:
                walk.rejected += 1
        walk.read += len(members)
        last = members[-1][1]
        ties = sum(1 for _, score in members if score == last)
        walk.skip = walk.skip + len(members) if last == walk.bound else ties
        walk.bound = last
        if walk.quote is not None:
            walk.floor = distance(walk.side, walk.quote.mark, Decimal(repr(last)))
        if len(members) < walk.page:
            walk.done = True
        elif walk.rejected >= FILTER_BUDGET or walk.read >= READ_CAP:
            walk.done = walk.gave_up = True
        walk.page = min(2 * walk.page, MAX_PAGE)
        return accepted

    async def _margin_call_members(
        self,
        contract: Contract,
        side: Side,
        quote: Quote | None,
        accept: Callable[[PositionRecord], bool],
    ) -> list[Candidate] | None:
        """Positions in margin call are exactly the members of the improving trigger set:
        all of them, when they are at most :data:`READ_CAP` (else None: walk instead)."""
        trigger_set = TriggerSet.improving_of(side)
        if await self.reads.trigger_size(contract.symbol, trigger_set) > READ_CAP:
            return None
        found: list[Candidate] = []
        start = 0
        while True:
            members = await self.reads.trigger_members(
                contract.symbol, trigger_set, start, MAX_PAGE
            )
            if not members:
                return found
            found.extend(
                item for item in await self._read(contract, members, quote) if accept(item.record)
            )
            start += len(members)

    async def _read(
        self, contract: Contract, ids: Sequence[str], quote: Quote | None
    ) -> list[Candidate]:
        """The stored records of ``ids`` (the missing skipped), with their distances."""
        raws = await self.reads.raw_records(contract.symbol, ids)
        items = []
        for n, (position_id, raw) in enumerate(zip(ids, raws, strict=True), 1):
            if n % TURN == 0:
                await asyncio.sleep(0)  # a page is up to MAX_PAGE records: the ticks go on
            if raw is not None:
                record, liquidation = self.cache.get(contract, position_id, raw)
                exact = (
                    distance(record.side, quote.mark, liquidation)
                    if quote is not None and liquidation is not None
                    else None
                )
                items.append(Candidate(exact, record))
        return items

    async def _scan(
        self, contract: Contract, quote: Quote | None, accept: Callable[[PositionRecord], bool]
    ) -> tuple[list[Candidate], bool]:
        """Read a symbol's hash (for statuses no trigger set holds), up to the cap."""
        found: list[Candidate] = []
        read = 0
        async for position_id, raw in self.reads.scan_records(contract.symbol):
            record = PositionRecord.decode(position_id, contract.symbol, raw)
            if accept(record):
                found.append(candidate(contract, record, quote))
            read += 1
            if read >= READ_CAP:
                return found, False
            if read % TURN == 0:
                await asyncio.sleep(0)
        return found, True

    async def position(self, position_id: str) -> dict[str, Any]:
        """One position with its prices and live state; 404 when unknown."""
        symbol = await self.reads.symbol_of(position_id, self.contracts)
        contract = self.contracts.get(symbol) if symbol is not None else None
        if symbol is None or contract is None:
            raise ApiError(404, f"no position {position_id!r}")
        record = await self.reads.record(symbol, position_id)
        if record is None:
            raise ApiError(404, f"no position {position_id!r}")
        return describe(contract, record, await self.reads.quote(symbol))

    async def events(self, query: EventsQuery) -> list[dict[str, Any]]:
        """The most recent published events (and alerts), newest first."""
        events: list[dict[str, Any]] = []
        high = "+"
        while len(events) < query.limit:
            batch = await self.reads.published(high, count=max(query.limit, 200))
            if not batch:
                break
            for entry_id, fields in batch:
                document = event_document(entry_id, fields)
                if query.type is None or document["type"] == query.type:
                    events.append(document)
                    if len(events) == query.limit:
                        break
            high = "(" + _text(batch[-1][0])
        return events

    async def symbols_state(self) -> list[dict[str, Any]]:
        """Per symbol: stored mark and index, the guards' view of the feed, index counts."""
        symbols = self.symbols
        prices = await self.reads.prices(symbols)
        now_s = self.clock()
        documents = []
        for symbol, stored in zip(symbols, prices, strict=True):
            contract = self.contracts[symbol]
            feed = self.guards.state(symbol, now_s) if self.guards is not None else FeedState()
            documents.append(
                {
                    "symbol": symbol,
                    "contract": contract.kind.value,
                    "mark": stored.mark,
                    "mark_ts": stored.mark_ts,
                    "index": stored.index,
                    "index_ts": stored.index_ts,
                    "feed": {
                        "source": feed.mark_source,
                        "age_s": _rounded(feed.age_s),
                        "stale": feed.stale,
                        "guard_index": _digits(feed.index),
                        "index_sources": feed.index_sources,
                        "deviation": _digits(feed.deviation),
                        "deviating": feed.deviating,
                        "holding": feed.holding,
                    },
                }
            )
        return documents

    async def counts(self, symbols: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Positions per symbol (default: every configured one): ``total`` stored,
        ``healthy``, ``margin_call``, ``other``.

        From the sizes of the hash and the trigger sets (no scan): every open
        position is in its side's worsening set, one in margin call also in
        its improving set; ``other`` is liquidated, closed, or a position no
        price can liquidate.
        """
        symbols = self.symbols if symbols is None else list(symbols)
        sizes = await self.reads.sizes(symbols)
        counts = {}
        for symbol in symbols:
            total, by_set = sizes[symbol].total, sizes[symbol].sets
            monitored = sum(size for s, size in by_set.items() if s.worsening)
            margin_call = sum(size for s, size in by_set.items() if not s.worsening)
            counts[symbol] = {
                "total": total,
                "healthy": max(monitored - margin_call, 0),
                "margin_call": margin_call,
                "other": max(total - monitored, 0),
            }
        return counts


def _floor(walk: Walk) -> Decimal:
    if walk.floor is None:  # pragma: no cover - open walks always have one
        raise ValueError("a walk without a mark has no frontier")
    return walk.floor


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _rounded(value: object) -> float | None:
    return round(value, 3) if isinstance(value, float) else None


def _digits(value: Decimal | None) -> str | None:
    """A guard's Decimal as the API writes it (its own digits), or None."""
    return str(value) if value is not None else None
