"""Operator commands that talk to Redis directly: ``positions load | list | show | reloaded``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from monitor.config import Settings
from monitor.engine import Engine
from monitor.epoch import Epoch
from monitor.errors import Rejection
from monitor.evaluation import Quote
from monitor.keys import Keys
from monitor.margin import Contract, Side, assess, bankruptcy_price, liquidation_price
from monitor.position import PositionRecord, PositionUpdate
from monitor.store import Store, connect
from monitor.wire import decimal_str

if TYPE_CHECKING:
    from monitor.api import Listing, PositionsQuery


def open_store(settings: Settings) -> Store:
    """A Store on the configured Redis (the caller closes ``store.client``)."""
    client = connect(settings.redis)
    return Store(client, Keys(settings.redis.key_prefix), settings.limits)


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What ``positions load`` did."""

    applied: int
    ignored: int
    rejected: int
    events: int
    seconds: float
    failed: int = 0
    first_rejections: tuple[tuple[int, str], ...] = ()
    """(line number, message) of the first :data:`REJECTIONS_SHOWN` rejected lines."""

    def report(self) -> str:
        """The closing lines ``positions load`` prints."""
        text = (
            f"loaded {self.applied:,} positions in {self.seconds:.1f} s; {self.ignored:,} "
            f"ignored (not newer), {self.rejected:,} rejected, {self.events:,} events queued\n"
        )
        if self.failed:
            text += f"{self.failed:,} positions could NOT be stored (see the log)\n"
        return text


REJECTIONS_SHOWN = 10


async def load_positions(
    settings: Settings,
    lines: Iterable[tuple[int, bytes, PositionUpdate | Rejection]],
    batch_size: int,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> LoadSummary:
    """Apply a stream of parsed lines in pipelined batches; rejections are dead-lettered.

    With ``progress``, the first rejections, a running count (on a terminal)
    and the summary go to stderr. ``on_batch`` hears the applied count after
    every batch.
    """
    store = open_store(settings)
    engine = Engine(store, settings.symbols, settings.risk, settings.mqtt.topic_prefix)
    applied = ignored = rejected = events = failed = 0
    first_rejections: list[tuple[int, str]] = []
    started = time.perf_counter()
    try:
        await store.ensure_outbox_groups(settings.symbols)
        # Event ids carry Redis's generation; a first load writes the first epoch.
        epoch, _ = await store.create_epoch(Epoch.first(time.time_ns() // 1_000_000))
        engine.generation = epoch.generation
        for chunk in _chunks(iter(lines), batch_size):
            updates = []
            for number, raw, item in chunk:
                if isinstance(item, Rejection):
                    rejected += 1
                    if rejected <= REJECTIONS_SHOWN:
                        message = f"line {number}: rejected: {item.reason}: {item.detail}"
                        first_rejections.append((number, message))
                        if progress:
                            sys.stderr.write(message + "\n")
                    await store.dead_letter(
                        "load", item.reason, f"line {number}: {item.detail}", raw
                    )
                else:
                    updates.append(item)
            outcome = await engine.apply_updates(updates)
            applied += outcome.applied
            ignored += outcome.ignored
            failed += outcome.failed
            events += len(outcome.events)
            if on_batch is not None:
                on_batch(applied)
            if progress and sys.stderr.isatty():
                rate = applied / max(time.perf_counter() - started, 1e-9)
                sys.stderr.write(f"\rloaded {applied:,} positions ({rate:,.0f}/s)")
        seconds = time.perf_counter() - started
    finally:
        await store.client.aclose()
    summary = LoadSummary(
        applied, ignored, rejected, events, seconds, failed, tuple(first_rejections)
    )
    if progress:
        sys.stderr.write(("\r" if sys.stderr.isatty() else "") + summary.report())
    return summary


async def mark_reloaded(settings: Settings) -> tuple[Epoch | None, bool]:
    """Mark Redis's epoch reloaded (the book lost with its data is loaded again): the
    epoch (None: Redis holds none), and whether it was awaiting the reload.

    Monitors read the epoch every second and report ready again once it is.
    """
    store = open_store(settings)
    try:
        while True:
            epoch, raw = await store.epoch()
            if epoch is None or not epoch.awaiting_reload:
                return epoch, False
            after, written = await store.replace_epoch(raw, epoch.reloaded())
            if written:
                return after, True
    finally:
        await store.client.aclose()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk


def describe(contract: Contract, record: PositionRecord, quote: Quote | None) -> dict[str, Any]:
    """A record with its prices and, given a mark, its live margin state."""
    position = record.position
    liq = liquidation_price(contract, position) if record.qty else None
    row: dict[str, Any] = {
        "id": record.id,
        "account": record.account,
        "symbol": record.symbol,
        "side": record.side.value,
        "qty": decimal_str(record.qty),
        "entry_price": decimal_str(record.entry_price),
        "margin": decimal_str(record.margin),
        "seq": record.seq,
        "status": record.status.value,
        "liquidation_price": decimal_str(liq) if liq is not None else None,
        "bankruptcy_price": None,
        "mark_price": None,
        "distance_pct": None,
        "margin_ratio": None,
    }
    if record.qty:
        bankrupt = bankruptcy_price(contract, position)
        row["bankruptcy_price"] = decimal_str(bankrupt) if bankrupt is not None else None
    if quote is not None and record.qty:
        row["mark_price"] = decimal_str(quote.mark)
        try:
            row["margin_ratio"] = decimal_str(assess(contract, position, quote.mark).margin_ratio)
        except ValueError:
            row["margin_ratio"] = None
        if liq is not None:
            sign = 1 if record.side is Side.LONG else -1
            distance = sign * (quote.mark - liq) / quote.mark * 100
            row["distance_pct"] = decimal_str(distance.quantize(Decimal("0.01")))
    return row


TABLE_COLUMNS = (
    "id",
    "account",
    "symbol",
    "side",
    "qty",
    "mark_price",
    "liquidation_price",
    "distance_pct",
    "margin_ratio",
    "status",
)
RATIO_PLACES = 4


def price_places(quote: Quote | None, row: Mapping[str, Any]) -> int:
    """Decimals a table shows a symbol's prices with: those of its mark as the venue
    quoted it (``55000`` → 0, ``11794.15000000`` → 8), else of the row's entry price."""
    exponent = quote.mark.as_tuple().exponent if quote is not None else None
    if not isinstance(exponent, int):
        exponent = Decimal(str(row["entry_price"])).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _rounded(text: str | None, places: int, rounding: str) -> str:
    if text is None:
        return "-"
    # Fixed decimals, trailing zeros kept: a column of prices lines up.
    return format(Decimal(text).quantize(Decimal(1).scaleb(-places), rounding), "f")


def table_cells(row: Mapping[str, Any], quote: Quote | None) -> list[str]:
    """A :func:`describe` row as table cells: prices at the symbol's precision
    (:func:`price_places`), the ratio at :data:`RATIO_PLACES` decimals.

    A liquidation price is rounded towards the mark (a long's up, a short's down),
    so the table never shows more room than there is. JSON keeps every digit.
    """
    places = price_places(quote, row)
    toward_mark = ROUND_CEILING if row["side"] == Side.LONG.value else ROUND_FLOOR
    shown = {
        **{column: "-" if row[column] is None else str(row[column]) for column in TABLE_COLUMNS},
        "mark_price": _rounded(row["mark_price"], places, ROUND_HALF_EVEN),
        "liquidation_price": _rounded(row["liquidation_price"], places, toward_mark),
        "margin_ratio": _rounded(row["margin_ratio"], RATIO_PLACES, ROUND_HALF_EVEN),
    }
    return [shown[column] for column in TABLE_COLUMNS]


def count_line(listing: Listing, query: PositionsQuery) -> str:
    """The closing line of a table: how many of how many matching positions it shows."""
    shown = len(listing.rows)
    if listing.matched is None:
        return f"({shown:,} {query.selection} shown; not all were read)"
    return f"({shown:,} of {max(shown, listing.matched):,} {query.selection} shown)"


async def list_positions(settings: Settings, query: PositionsQuery, as_json: bool) -> None:
    """Print the positions ``query`` selects, closest to liquidation first: the
    same selection as ``GET /api/positions`` (:meth:`monitor.api.Api.positions`)."""
    from monitor.api import Api  # monitor.api reads this module's describe()

    store = open_store(settings)
    try:
        api = Api(store, settings.symbols)
        listing = await api.positions(query, count=True)
        quotes = await api.quotes(query.symbols)
    finally:
        await store.client.aclose()
    if as_json:
        document = listing.document(query.limit)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = [list(TABLE_COLUMNS)] + [
        table_cells(row, quotes[row["symbol"]]) for row in listing.rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_COLUMNS))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
    sys.stdout.write(count_line(listing, query) + "\n")


async def show_position(settings: Settings, position_id: str) -> None:
    """Print one position as JSON, as ``GET /api/positions/{id}`` answers it.

    Raises :class:`monitor.api.ApiError` (404) when it is unknown.
    """
    from monitor.api import Api  # monitor.api reads this module's describe()

    store = open_store(settings)
    try:
        row = await Api(store, settings.symbols).position(position_id)
    finally:
        await store.client.aclose()
    sys.stdout.write(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode() + "\n")
