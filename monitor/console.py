"""Operator commands that talk to Redis directly: ``positions load | list | show``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson

from monitor.config import Settings
from monitor.engine import Engine
from monitor.errors import Rejection
from monitor.evaluation import Quote
from monitor.keys import Keys
from monitor.margin import Contract, Side, assess, bankruptcy_price, liquidation_price
from monitor.position import PositionRecord, PositionUpdate
from monitor.status import Status
from monitor.store import Store, connect
from monitor.wire import decimal_str


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


async def list_positions(settings: Settings, symbol: str | None, at_risk: bool, limit: int) -> None:
    """Print positions as a table, closest to liquidation first."""
    store = open_store(settings)
    rows = []
    try:
        for name in [symbol] if symbol else list(settings.symbols):
            contract = settings.symbols.get(name)
            if contract is None:
                raise SystemExit(f"liqmon: error: unknown symbol {name!r}")
            quote = await store.quote(name)
            for record in await store.all_records(name):
                if record.status is Status.CLOSED:
                    continue
                if at_risk and record.status is Status.HEALTHY:
                    continue
                rows.append(describe(contract, record, quote))
    finally:
        await store.client.aclose()
    rows.sort(
        key=lambda r: Decimal(r["distance_pct"]) if r["distance_pct"] else Decimal("Infinity")
    )
    columns = [
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
    ]
    table = [columns] + [
        [str(row[c]) if row[c] is not None else "-" for c in columns] for row in rows[:limit]
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        sys.stdout.write(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
        )
    sys.stdout.write(f"({len(rows)} positions{', at risk' if at_risk else ''})\n")


async def show_position(settings: Settings, position_id: str) -> bool:
    """Print one position as JSON; False if it is unknown."""
    store = open_store(settings)
    try:
        symbol = await store.symbol_of(position_id, settings.symbols)
        if symbol is None or symbol not in settings.symbols:
            return False
        found = (await store.records(symbol, [position_id]))[0]
        if found is None:
            return False
        row = describe(settings.symbols[symbol], found[0], await store.quote(symbol))
    finally:
        await store.client.aclose()
    sys.stdout.write(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode() + "\n")
    return True
