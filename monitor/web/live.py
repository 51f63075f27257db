"""The dashboard's live feed: what each connected page receives over ``/ws``, and when.

Rule 1: nothing in the daemon waits for a page. Every page has a bounded
queue; messages are offered without waiting, and one that does not fit is
dropped and counted (per page, and in
``liqmon_dashboard_dropped_messages_total``). A slow page gets fewer
snapshots; the daemon is not slowed.

Rule 2: a page receives only what it shows. Every ``snapshot_interval_s`` it
gets one snapshot: the closest ``limit`` positions for its filter, each
symbol's prices and feed state, and the totals. Events are throttled to
``events_per_s``: each flush window passes at most its share, and the rest are
only counted, by type.

Rule 3: Redis work is shared and happens only while a page is connected: one
positions query per distinct filter per snapshot (an account filter over a
large book, the one expensive kind, is reused for up to ``COST_FACTOR`` times
what it cost, at most 5 s), one tail of the ``published`` stream for all pages.
Without pages only in-process state is sampled (the counters for the rates),
plus the position counts (sizes of the hash and trigger sets, O(1) each) every
ten seconds for ``liqmon_positions``.

Rule 4: the charts' history is kept from the monitor's start, pages or not:
once a second each symbol's last accepted mark and index (from the guards, no
Redis) go into a ring of :data:`HISTORY_POINTS` (five minutes); nothing is done
per tick and memory is fixed. A page that opens gets the whole ring in its
hello. A second with a stale mark adds no point (the chart shows a gap).

Messages, server to page (JSON text frames)::

    {"type": "hello", "symbols": [{"symbol": S, "contract": kind, "units": {...}}, ...],
     "history": {S: [[ts_ms, mark, index], ...]}, "history_interval_s": 1.0, ...}
    {"type": "snapshot", "ts": ms, "filter": {...}, "positions": [...], "complete": true,
     "symbols": [...], "totals": {...}}
    {"type": "events", "events": [...], "skipped": n, "skipped_by_type": {type: n}}
    {"type": "error", "message": "..."}

Page to server: ``{"type": "filter", "symbol": S|null, "account": A|null, "limit": n}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson
import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from monitor.core.errors import Unavailable
from monitor.core.margin import Contract, ContractKind, Position, Side
from monitor.core.models import model_for
from monitor.core.wire import decimal_str
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.readmodel import REDIS_DOWN, Entry
from monitor.telemetry.metrics import Metrics
from monitor.web.api import (
    Api,
    ApiError,
    Listing,
    PositionsQuery,
    event_document,
    parse_positions_query,
)

log = structlog.get_logger("liqmon.live")

PAGE_ROWS = 50
MAX_PAGE_ROWS = 200
COST_FACTOR = 25
"""An account listing that took 0.2 s is reused for 5 s: at most ~4 % of the time on it."""
MAX_REUSE_S = 5.0
HISTORY_INTERVAL_S = 1.0
HISTORY_POINTS = 300
"""Chart points kept per symbol (one every :data:`HISTORY_INTERVAL_S`: five minutes)."""
HISTORY_BATCH = 50
"""Symbols sampled between two yields to the event loop (about 0.6 ms of work)."""
QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "EUR")
"""Quote currencies recognised at the end of a symbol, to name the units of its sizes."""


# -- one page's connection --------------------------------------------------


class PageClosed(Unavailable):
    """The page's connection is gone (raised by a :class:`Connection`'s send or receive)."""


class Connection(Protocol):
    """One page's websocket as the feed needs it; the HTTP edge adapts its server's
    websocket to this, so the feed does not depend on the server library."""

    async def send(self, text: str) -> None:
        """Send one text frame; :class:`PageClosed` once the page is gone."""

    async def receive(self) -> str | bytes:
        """The page's next frame; :class:`PageClosed` once the page is gone."""


# -- pure parts -------------------------------------------------------------


class Throttle:
    """At most ``per_window`` events pass per window; the others are counted by type."""

    def __init__(self, per_window: int) -> None:
        self.per_window = per_window
        self._passed: list[dict[str, Any]] = []
        self._skipped: Counter[str] = Counter()

    def offer(self, event: dict[str, Any]) -> None:
        """Keep ``event`` for this window if there is room, else count it."""
        if len(self._passed) < self.per_window:
            self._passed.append(event)
        else:
            self._skipped[str(event.get("type"))] += 1

    def drain(self) -> tuple[list[dict[str, Any]], Counter[str]]:
        """This window's events and skipped counts; starts the next window."""
        passed, skipped = self._passed, self._skipped
        self._passed, self._skipped = [], Counter()
        return passed, skipped


@dataclass(frozen=True, slots=True)
class Sample:
    """The counters that the dashboard's rates are computed from, at ``at_s``."""

    at_s: float
    events: Mapping[str, float]
    buckets: tuple[tuple[float, float], ...]
    """Cumulative ``(upper bound in seconds, count)`` of ``liqmon_tick_evaluation_seconds``
    (a mark's receipt until its events are committed to the outbox)."""
    latency_sum_s: float
    latency_count: float


def quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` (None with no observation)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    for bound, count in ordered:
        if count >= rank:
            return bound
    return ordered[-1][0]


class Rates:
    """Events per minute and receipt-to-outbox latency over the last ``window_s`` of samples."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        """Record a sample; samples older than the window (but the one before it) are dropped."""
        self._samples.append(sample)
        while len(self._samples) > 2 and sample.at_s - self._samples[1].at_s >= self.window_s:
            self._samples.popleft()

    def summary(self) -> dict[str, Any]:
        """``events_per_min`` (total and by type) and ``latency`` over the last minute."""
        if not self._samples:
            return {"events_per_min": 0, "events_per_min_by_type": {}, "latency": None}
        first, last = self._samples[0], self._samples[-1]
        span_s = last.at_s - first.at_s
        # Over a full window, the count scaled to exactly a minute; before
        # that (a monitor up for less than a minute), the count so far.
        scale = 60.0 / span_s if span_s > 60.0 else 1.0
        by_type = {
            kind: round((count - first.events.get(kind, 0.0)) * scale, 1)
            for kind, count in last.events.items()
        }
        start = dict(first.buckets)
        recent = tuple((bound, count - start.get(bound, 0.0)) for bound, count in last.buckets)
        count = last.latency_count - first.latency_count
        total_s = last.latency_sum_s - first.latency_sum_s
        window = "last_minute"
        if count <= 0:  # nothing evaluated lately: show the whole run's figures
            recent, count, total_s, window = (
                last.buckets,
                last.latency_count,
                last.latency_sum_s,
                "since_start",
            )
        latency = None
        if count > 0:
            p50, p99 = quantile(recent, 0.5), quantile(recent, 0.99)
            latency = {
                "window": window,
                "count": int(count),
                "mean_ms": round(total_s / count * 1000, 3),
                "p50_le_ms": _ms(p50),
                "p99_le_ms": _ms(p99),
            }
        return {
            "events_per_min": round(sum(by_type.values()), 1),
            "events_per_min_by_type": by_type,
            "latency": latency,
        }


def assets(symbol: str) -> tuple[str, str]:
    """``(base, quote)`` read from a symbol such as ``BTCUSDT`` or ``ETH-USD``; the
    generic ``("coin", "quote")`` when no known quote currency ends it."""
    upper = symbol.upper()
    for quote in QUOTE_ASSETS:
        base = upper.removesuffix(quote).rstrip("-_/")
        if upper.endswith(quote) and base:
            return base, quote
    return "coin", "quote"


COUNTED_IN_CONTRACTS = ("okx", "gate")
"""Venues whose linear sizes are contracts of ``contract_size`` base units, not base units."""


def units(contract: Contract) -> dict[str, str]:
    """What a position's numbers are counted in: ``size`` (base coin for a linear
    contract, contracts for an inverse one or on OKX and Gate), ``value`` (notional
    and margin: quote for linear, coin for inverse), ``price`` (quote) and, for
    contracts, what one is worth (``contract``)."""
    base, quote = assets(contract.symbol)
    if contract.kind is ContractKind.LINEAR:
        if model_for(contract).venue in COUNTED_IN_CONTRACTS:
            size = decimal_str(contract.contract_size)
            return {
                "size": "contracts",
                "value": quote,
                "price": quote,
                "contract": f"1 contract = {size} {base}",
            }
        return {"size": base, "value": quote, "price": quote, "contract": ""}
    size = decimal_str(contract.contract_size)
    return {
        "size": "contracts",
        "value": base,
        "price": quote,
        "contract": f"1 contract = {size} {quote}",
    }


def with_values(contract: Contract, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` plus ``notional`` and ``margin_balance`` at its mark (in the contract's
    value unit; None without a mark)."""
    values: dict[str, str | None] = {"notional": None, "margin_balance": None}
    if row.get("mark_price") is not None:
        position = Position(
            Side(row["side"]),
            Decimal(row["qty"]),
            Decimal(row["entry_price"]),
            Decimal(row["margin"]),
        )
        with contextlib.suppress(ArithmeticError):
            state = model_for(contract).assess(position, Decimal(row["mark_price"]))
            values = {
                "notional": decimal_str(state.notional),
                "margin_balance": decimal_str(state.margin_balance),
            }
    return {**row, **values}


def _ms(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return None if seconds == float("inf") else round(seconds * 1000, 3)


def sample_metrics(metrics: Metrics, at_s: float) -> Sample:
    """Read the event counters and the receipt-to-outbox histogram from the registry."""
    events: dict[str, float] = {}
    for family in metrics.events.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                events[sample.labels["type"]] = sample.value
    buckets = []
    latency_sum = latency_count = 0.0
    for family in metrics.tick_seconds.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                latency_sum = sample.value
            elif sample.name.endswith("_count"):
                latency_count = sample.value
    return Sample(at_s, events, tuple(buckets), latency_sum, latency_count)


# -- pages ------------------------------------------------------------------


@dataclass(eq=False)
class Page:
    """One connected dashboard: its filter and its bounded queue of messages to send."""

    query: PositionsQuery
    queue: asyncio.Queue[bytes]
    dropped: int = 0
    sent: int = 0

    def offer(self, message: bytes) -> bool:
        """Queue ``message`` unless the queue is full (then it is dropped and counted)."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    @property
    def filter(self) -> dict[str, Any]:
        """The filter as the page sent it."""
        symbol = self.query.symbols[0] if len(self.query.symbols) == 1 else None
        return {"symbol": symbol, "account": self.query.account, "limit": self.query.limit}


@dataclass
class LiveFeed:
    """Serves ``/ws``: snapshots, throttled events, and charts' history for every page."""

    api: Api
    metrics: Metrics
    snapshot_interval_s: float = 1.0
    events_per_s: int = 50
    flush_interval_s: float = 0.2
    queue_size: int = 32
    history_interval_s: float = HISTORY_INTERVAL_S
    pages: set[Page] = field(default_factory=set)

    def __post_init__(self) -> None:
        registry = self.metrics.registry
        self.page_gauge = Gauge(
            "liqmon_dashboard_clients", "Dashboard pages connected", registry=registry
        )
        self.dropped_counter = PromCounter(
            "liqmon_dashboard_dropped_messages_total",
            "Messages not sent to a dashboard page because its queue was full",
            registry=registry,
        )
        self.errors = PromCounter(
            "liqmon_dashboard_errors_total",
            "Unexpected errors in the dashboard feed (logged; the monitor goes on)",
            registry=registry,
        )
        self.positions_gauge = Gauge(
            "liqmon_positions",
            "Stored positions by status (other: liquidated, closed or not liquidatable)",
            ["symbol", "status"],
            registry=registry,
        )
        per_window = max(1, round(self.events_per_s * self.flush_interval_s))
        self.throttle = Throttle(per_window)
        self.rates = Rates()
        self.history: dict[str, deque[list[Any]]] = {
            symbol: deque(maxlen=HISTORY_POINTS) for symbol in self.api.symbols
        }
        self.counts: dict[str, dict[str, int]] = {}
        self._attached = asyncio.Event()
        self._listings: dict[PositionsQuery, tuple[float, float, Listing]] = {}

    # -- the daemon side: never waits for a page --

    async def run(self) -> None:
        """Sample, snapshot, tail and flush until cancelled. Cancelling is safe."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._record_history(), name="live-history")
            group.create_task(self._sample(), name="live-sample")
            group.create_task(self._snapshots(), name="live-snapshots")
            group.create_task(self._tail(), name="live-tail")
            group.create_task(self._flush(), name="live-flush")

    def broadcast(self, message: bytes) -> None:
        """Offer ``message`` to every page (dropping it for pages that are behind)."""
        for page in list(self.pages):
            if not page.offer(message):
                self.dropped_counter.inc()

    async def _record_history(self) -> None:
        """One point per symbol per interval into its ring, from start (Rule 4)."""
        interval_s = self.history_interval_s
        while True:
            raise_if_cancelling()
            now_ms = time.time_ns() // 1_000_000
            try:
                for n, (symbol, points) in enumerate(self.history.items(), start=1):
                    point = self._point(symbol, now_ms)
                    if point is not None:
                        points.append(point)
                    if n % HISTORY_BATCH == 0:
                        # ~11 µs a symbol: 500 symbols in one go would hold
                        # every tick behind them for ~6 ms.
                        await asyncio.sleep(0)
            except Exception:  # the dashboard must never take the monitor down
                self.errors.inc()
                log.exception("dashboard_history_failed")
            # On whole intervals of the wall clock: every page's points line up.
            await asyncio.sleep(interval_s - (time.time() % interval_s))

    async def _sample(self) -> None:
        while True:
            raise_if_cancelling()
            self.rates.add(sample_metrics(self.metrics, time.monotonic()))
            await self.refresh_counts()
            # Counting positions costs a command per symbol and set: every
            # second while a page watches, every ten seconds for the metrics.
            if self._attached.is_set():
                await asyncio.sleep(1.0)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10.0):
                        await self._attached.wait()

    def _point(self, symbol: str, now_ms: int) -> list[Any] | None:
        """``[ts_ms, mark, index]`` from the guards' view (no Redis); None before a mark
        and while it is stale."""
        if self.api.guards is None:
            return None
        state = self.api.guards.state(symbol, time.monotonic())
        if state.mark is None or state.stale:
            return None
        return [now_ms, str(state.mark), str(state.index) if state.index is not None else None]

    async def refresh_counts(self) -> None:
        """Re-read the positions per symbol and status (also at each /metrics scrape)."""
        try:
            self.counts = await self.api.counts()
        except REDIS_DOWN:
            return
        except Exception:  # the dashboard must never take the monitor down
            self.errors.inc()
            log.exception("dashboard_counts_failed")
            return
        for symbol, by_status in self.counts.items():
            for status, count in by_status.items():
                if status != "total":
                    self.positions_gauge.labels(symbol, status).set(count)

    async def _snapshots(self) -> None:
        while True:
            raise_if_cancelling()
            await self._attached.wait()
            started = time.monotonic()
            try:
                for message in (await self._snapshot_messages(self.pages)).values():
                    for page in message[1]:
                        if not page.offer(message[0]):
                            self.dropped_counter.inc()
            except REDIS_DOWN as error:
                self.broadcast(_error(f"redis unavailable: {error}"))
            except Exception:  # the dashboard must never take the monitor down
                self.errors.inc()
                log.exception("dashboard_snapshot_failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.snapshot_interval_s - elapsed))

    async def _snapshot_messages(
        self, pages: Iterable[Page], fresh: bool = False
    ) -> dict[PositionsQuery, tuple[bytes, list[Page]]]:
        """One encoded snapshot per distinct filter, with the pages that asked for it
        (``fresh``: recompute the rows even if recent ones could be reused)."""
        by_query: dict[PositionsQuery, list[Page]] = {}
        for page in pages:
            by_query.setdefault(page.query, []).append(page)
        if not by_query:
            return {}
        common = await self._common()
        messages = {}
        if not fresh:  # a periodic round: forget the filters no page uses any more
            for query in list(self._listings):
                if query not in by_query:
                    del self._listings[query]
        for query, asking in by_query.items():
            listing = await self._listing(query, fresh)
            document = {
                "type": "snapshot",
                "ts": time.time_ns() // 1_000_000,
                "filter": asking[0].filter,
                "positions": listing.rows,
                "complete": listing.complete,
                **common,
            }
            messages[query] = (orjson.dumps(document), asking)
        return messages

    async def _listing(self, query: PositionsQuery, fresh: bool = False) -> Listing:
        """The query's rows. An account filter's rows (the one filter whose cost grows
        with the book) are reused while younger than :data:`COST_FACTOR` times what they
        cost, at most :data:`MAX_REUSE_S`; every other listing is read anew, so the
        closest positions are never older than a snapshot, even in a crash."""
        now = time.monotonic()
        cached = self._listings.get(query)
        if cached is not None and not fresh and query.account is not None:
            at, cost_s, listing = cached
            if now - at < min(cost_s * COST_FACTOR, MAX_REUSE_S):
                return listing
        found = await self.api.positions(query)
        contracts = self.api.contracts
        rows = [with_values(contracts[row["symbol"]], row) for row in found.rows]
        listing = replace(found, rows=rows)
        self._listings[query] = (now, time.monotonic() - now, listing)
        return listing

    async def _common(self) -> dict[str, Any]:
        """The part of a snapshot every page gets: symbols and totals."""
        symbols = await self.api.symbols_state()
        for document in symbols:
            points = self.history.get(document["symbol"])
            document["point"] = points[-1] if points else None
        self.counts = await self.api.counts()
        by_status: Counter[str] = Counter()
        for counts in self.counts.values():
            by_status.update(counts)
        return {
            "symbols": symbols,
            "totals": {
                "positions": dict(by_status),
                "positions_by_symbol": self.counts,
                **self.rates.summary(),
                "outbox": _gauge_value(self.metrics.outbox_length),
                "pages": len(self.pages),
                "dropped": int(_gauge_value(self.dropped_counter)),
            },
        }

    async def _tail(self) -> None:
        """Read the ``published`` stream from its end while pages are connected."""
        reads = self.api.reads
        last: str | None = None
        while True:
            raise_if_cancelling()
            if not self._attached.is_set():
                last = None  # a page that connects later starts from now, not from a backlog
                await self._attached.wait()
            try:
                if last is None:
                    last = await reads.newest_published() or "0-0"
                entries = await reads.published_after(last, count=500, block_ms=1000)
            except REDIS_DOWN:
                await asyncio.sleep(1.0)
                continue
            try:
                last = self._offer_entries(entries) or last
            except Exception:  # a malformed entry must not stop the feed, nor the monitor
                self.errors.inc()
                log.exception("dashboard_tail_failed")
                last = None

    def _offer_entries(self, entries: list[Entry]) -> str | None:
        """Pass stream entries to the throttle; the last entry id, if any."""
        last = None
        for entry_id, fields in entries:
            last = _text(entry_id)
            self.throttle.offer(event_document(entry_id, fields))
        return last

    async def _flush(self) -> None:
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.flush_interval_s)
            events, skipped = self.throttle.drain()
            if (events or skipped) and self.pages:
                self.broadcast(
                    orjson.dumps(
                        {
                            "type": "events",
                            "events": events,
                            "skipped": skipped.total(),
                            "skipped_by_type": dict(skipped),
                        }
                    )
                )

    # -- the page side: one coroutine per connection --

    async def serve(self, connection: Connection) -> None:
        """Run one page's connection until it closes. Cancelling is safe."""
        page = Page(
            PositionsQuery(tuple(self.api.symbols), limit=PAGE_ROWS),
            asyncio.Queue(self.queue_size),
        )
        self.pages.add(page)
        self._attached.set()
        self.page_gauge.set(len(self.pages))
        log.info("dashboard_connected", pages=len(self.pages))
        try:
            await connection.send(self._hello().decode())
            await self._send_snapshot_now(connection, page)
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send(connection, page), name="page-send")
                await self._receive(connection, page)
                sender.cancel()
        except* PageClosed:
            pass
        finally:
            self.pages.discard(page)
            if not self.pages:
                self._attached.clear()
            self.page_gauge.set(len(self.pages))
            log.info("dashboard_disconnected", pages=len(self.pages), dropped=page.dropped)

    def _hello(self) -> bytes:
        return orjson.dumps(
            {
                "type": "hello",
                "symbols": [
                    {"symbol": symbol, "contract": contract.kind.value, "units": units(contract)}
                    for symbol, contract in self.api.contracts.items()
                ],
                "rows": PAGE_ROWS,
                "max_rows": MAX_PAGE_ROWS,
                "snapshot_interval_s": self.snapshot_interval_s,
                "events_per_s": self.events_per_s,
                "history": {symbol: list(points) for symbol, points in self.history.items()},
                "history_interval_s": self.history_interval_s,
                "history_points": HISTORY_POINTS,
            }
        )

    async def _send_snapshot_now(self, connection: Connection, page: Page) -> None:
        """A snapshot for this page alone, so a new filter shows at once."""
        try:
            messages = await self._snapshot_messages([page], fresh=True)
        except REDIS_DOWN as error:
            await connection.send(_error(f"redis unavailable: {error}").decode())
            return
        except Exception:
            self.errors.inc()
            log.exception("dashboard_snapshot_failed")
            await connection.send(_error("snapshot failed; see the monitor's log").decode())
            return
        for message, _ in messages.values():
            await connection.send(message.decode())

    async def _send(self, connection: Connection, page: Page) -> None:
        while True:
            message = await page.queue.get()
            await connection.send(message.decode())
            page.sent += 1

    async def _receive(self, connection: Connection, page: Page) -> None:
        """Apply the page's filters until it closes (:class:`PageClosed`)."""
        while True:
            message = await connection.receive()
            raise_if_cancelling()
            try:
                request = orjson.loads(message)
                if not isinstance(request, dict) or request.get("type") != "filter":
                    raise ApiError(400, 'expected {"type": "filter", ...}')
                page.query = self._filter(request)
            except (orjson.JSONDecodeError, ApiError) as error:
                text = error.message if isinstance(error, ApiError) else "not JSON"
                with contextlib.suppress(asyncio.QueueFull):
                    page.queue.put_nowait(_error(text))
                continue
            await self._send_snapshot_now(connection, page)

    def _filter(self, request: Mapping[str, Any]) -> PositionsQuery:
        params = {
            name: str(request[name])
            for name in ("symbol", "account", "limit")
            if request.get(name) not in (None, "")
        }
        return parse_positions_query(urlencode(params), self.api.symbols, MAX_PAGE_ROWS)


def _error(message: str) -> bytes:
    return orjson.dumps({"type": "error", "message": message})


def _gauge_value(metric: Any) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                return float(sample.value)
    return 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
