"""Recorded ticks: a writer (``liqmon record``) and a replay source (``liqmon replay``).

Two formats, chosen by the file's suffix (``.csv`` is CSV, anything else is
JSON Lines). One tick per line, prices as decimal strings::

    {"ts_ms":1700000000000,"symbol":"BTCUSDT","kind":"mark","price":"36500.1","source":"binance"}

    ts_ms,symbol,kind,price,source
    1700000000000,BTCUSDT,mark,36500.1,binance

:class:`ReplaySource` reads such a file and emits its ticks at the recorded
pace (``speed=1``), ``speed`` times faster, or as fast as possible
(``speed=None``); a bad line is rejected and skipped. Replayed ticks keep
their recorded ``source`` (so ``mark_source = "binance"`` still selects them)
unless ``source`` renames them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import orjson

from feeds.decode import as_object, epoch_ms, field, load_json, price, text
from feeds.errors import FrameError, RejectReason
from feeds.source import Emit, Reject
from feeds.tick import PriceKind, PriceTick

Format = Literal["jsonl", "csv"]
CSV_FIELDS = ("ts_ms", "symbol", "kind", "price", "source")
YIELD_EVERY = 500
"""In fast mode, give the event loop a turn after this many ticks."""


def format_of(path: Path) -> Format:
    """``csv`` for a ``.csv`` file, ``jsonl`` for anything else."""
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def to_record(tick: PriceTick) -> dict[str, str | int]:
    """A tick as a flat record; the price as a plain decimal string (no exponent)."""
    return {
        "ts_ms": tick.ts_ms,
        "symbol": tick.symbol,
        "kind": tick.kind.value,
        "price": format(tick.price, "f"),
        "source": tick.source,
    }


def from_record(record: Mapping[str, object]) -> PriceTick:
    """A tick from a JSON or CSV record; raises ``FrameError``."""
    kind = text(record, "kind")
    try:
        price_kind = PriceKind(kind)
    except ValueError:
        raise FrameError(RejectReason.BAD_SHAPE, f"kind={kind!r}") from None
    symbol = text(record, "symbol")
    if not symbol:
        raise FrameError(RejectReason.BAD_SHAPE, "empty symbol")
    return PriceTick(
        symbol=symbol,
        kind=price_kind,
        price=price(field(record, "price"), "price"),
        ts_ms=epoch_ms(field(record, "ts_ms"), "ts_ms"),
        source=text(record, "source"),
    )


def parse_jsonl_line(line: str | bytes) -> PriceTick:
    """One JSON Lines record as a tick; raises ``FrameError``."""
    return from_record(as_object(load_json(line), "line"))


def parse_csv_line(line: str, header: tuple[str, ...] = CSV_FIELDS) -> PriceTick:
    """One CSV data line (under ``header``) as a tick; raises ``FrameError``."""
    rows = list(csv.reader([line]))
    if len(rows) != 1 or len(rows[0]) != len(header):
        raise FrameError(RejectReason.NOT_JSON, f"expected {len(header)} CSV columns")
    return from_record(dict(zip(header, rows[0], strict=True)))


def read_ticks(path: Path) -> Iterator[tuple[bytes, PriceTick | FrameError]]:
    """Each non-blank line of a recording: (raw line, its tick or why it is bad).

    Reads lazily, so a recording larger than memory replays fine.
    """
    fmt = format_of(path)
    with path.open("r", encoding="utf-8", newline="") as lines:
        header: tuple[str, ...] = CSV_FIELDS
        if fmt == "csv":
            first = lines.readline()
            header = tuple(next(csv.reader([first]), ()))
            if set(header) != set(CSV_FIELDS):
                raise ValueError(f"{path}: CSV header must name {', '.join(CSV_FIELDS)}")
        for line in lines:
            stripped = line.rstrip("\r\n")
            if not stripped.strip():
                continue
            try:
                tick: PriceTick | FrameError = (
                    parse_csv_line(stripped, header) if fmt == "csv" else parse_jsonl_line(stripped)
                )
            except FrameError as exc:
                tick = exc
            yield stripped.encode(), tick


class TickWriter:
    """Appends ticks to a JSON Lines or CSV recording; a context manager.

    Awaiting the writer itself (``await writer(tick)``) writes one tick, so it
    can stand in for ``emit`` (that is all ``liqmon record`` needs). Writes
    are buffered; :meth:`flush` or closing makes them durable.
    """

    def __init__(
        self, path: Path | str, *, fmt: Format | None = None, append: bool = False
    ) -> None:
        self.path = Path(path)
        self.fmt: Format = fmt or format_of(self.path)
        had_content = append and self.path.exists() and self.path.stat().st_size > 0
        self._file: io.TextIOWrapper = self.path.open(
            "a" if append else "w", encoding="utf-8", newline=""
        )
        self._csv = csv.writer(self._file, lineterminator="\n") if self.fmt == "csv" else None
        if self._csv is not None and not had_content:
            self._csv.writerow(CSV_FIELDS)
        self.count = 0

    def write(self, tick: PriceTick) -> None:
        """Write one tick (buffered)."""
        record = to_record(tick)
        if self._csv is not None:
            self._csv.writerow([record[name] for name in CSV_FIELDS])
        else:
            self._file.write(orjson.dumps(record).decode())
            self._file.write("\n")
        self.count += 1

    async def __call__(self, tick: PriceTick) -> None:
        """``emit``-compatible: write one tick."""
        self.write(tick)

    def flush(self) -> None:
        """Push buffered lines to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ReplaySource:
    """Emits a recording's ticks, paced by their ``ts_ms`` (a ``PriceSource``).

    ``speed=1.0`` keeps the recorded gaps, ``speed=10`` makes them ten times
    shorter, ``speed=None`` emits as fast as ``emit`` accepts. Pacing follows
    the first tick's timestamp: tick *k* is due ``(ts_k - ts_0) / speed``
    seconds after the start (a tick older than its predecessor is due at
    once). ``clock`` and ``sleep`` are injectable for tests.

    Unlike a live source, ``run`` returns when the file is exhausted.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        speed: float | None = 1.0,
        name: str = "replay",
        source: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("replay: speed must be positive (or None for as fast as possible)")
        self.path = Path(path)
        self.speed = speed
        self.name = name
        self._rename = source
        self._clock = clock
        self._sleep = sleep

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Replay the whole file, then return. Cancelling is safe at any point."""
        start: tuple[float, int] | None = None
        emitted = 0
        for raw, item in read_ticks(self.path):
            if isinstance(item, FrameError):
                await reject(self.name, item.reason, raw)
                continue
            tick = item
            if self._rename is not None:
                tick = PriceTick(tick.symbol, tick.kind, tick.price, tick.ts_ms, self._rename)
            if self.speed is None:
                emitted += 1
                if emitted % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            elif start is None:
                start = (self._clock(), tick.ts_ms)
            else:
                due = start[0] + (tick.ts_ms - start[1]) / 1000 / self.speed
                delay = due - self._clock()
                if delay > 0:
                    await self._sleep(delay)
            await emit(tick)
