"""Recording and replaying ticks: round trips, order, pacing, bad lines."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from feeds.errors import RejectReason
from feeds.replay import ReplaySource, TickWriter, parse_jsonl_line, to_record
from feeds.tick import PriceKind, PriceTick

pytestmark = pytest.mark.unit

TS0 = 1_700_000_000_000
TICKS = [
    PriceTick("BTCUSDT", PriceKind.MARK, Decimal("36512.40000000"), TS0, "binance"),
    PriceTick("BTCUSDT", PriceKind.INDEX, Decimal("36505.87636364"), TS0, "binance"),
    PriceTick("ETH,USD", PriceKind.MARK, Decimal("1E+3"), TS0 + 250, "okx"),  # comma in CSV
    PriceTick("1000PEPEUSDT", PriceKind.INDEX, Decimal("0.000012345678"), TS0 + 1000, "bybit"),
    PriceTick("BTCUSDT", PriceKind.MARK, Decimal("36400"), TS0 + 3000, "binance"),
]


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def replay(path: Path, h: Any, **kwargs: Any) -> ReplaySource:
    source = ReplaySource(path, **kwargs)
    async with asyncio.timeout(5):
        await source.run(h.collector.emit, h.collector.reject)
    return source


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
async def test_the_writer_and_the_reader_round_trip(tmp_path: Path, suffix: str, h: Any) -> None:
    """Every field of every tick survives a JSONL or CSV file, in order."""
    path = tmp_path / f"ticks{suffix}"
    with TickWriter(path) as writer:
        for tick in TICKS:
            await writer(tick)
    assert writer.count == len(TICKS)
    await replay(path, h, speed=None)
    assert h.collector.ticks == TICKS
    assert h.collector.rejects == []


def test_the_file_formats(tmp_path: Path) -> None:
    """One record per line; prices as plain decimal strings, never exponents."""
    jsonl, csv_path = tmp_path / "t.jsonl", tmp_path / "t.csv"
    for path in (jsonl, csv_path):
        with TickWriter(path) as writer:
            writer.write(TICKS[2])
    assert jsonl.read_text() == (
        '{"ts_ms":1700000000250,"symbol":"ETH,USD","kind":"mark","price":"1000","source":"okx"}\n'
    )
    assert (
        csv_path.read_text()
        == 'ts_ms,symbol,kind,price,source\n1700000000250,"ETH,USD",mark,1000,okx\n'
    )
    assert parse_jsonl_line(jsonl.read_bytes()) == TICKS[2]
    assert to_record(TICKS[3])["price"] == "0.000012345678"


def test_appending_to_a_csv_writes_the_header_once(tmp_path: Path) -> None:
    """record can resume an existing CSV file."""
    path = tmp_path / "t.csv"
    for tick in TICKS[:2]:
        with TickWriter(path, append=True) as writer:
            writer.write(tick)
    assert path.read_text().count("ts_ms,symbol") == 1
    assert len(path.read_text().splitlines()) == 3


async def test_fast_mode_emits_everything_in_file_order_and_rejects_bad_lines(
    tmp_path: Path, h: Any
) -> None:
    """speed=None: no waiting; out-of-order timestamps keep file order; bad lines rejected."""
    path = tmp_path / "t.jsonl"
    good = [to_record(t) for t in (TICKS[4], TICKS[0], TICKS[3])]
    lines = [orjson.dumps(record).decode() for record in good]
    bad = [
        "not json",
        '{"ts_ms":1700000000000,"symbol":"BTCUSDT","kind":"last","price":"1","source":"x"}',
        '{"ts_ms":1700000000000,"symbol":"BTCUSDT","kind":"mark","price":"-1","source":"x"}',
    ]
    path.write_text("\n".join([lines[0], bad[0], lines[1], "", bad[1], bad[2], lines[2]]) + "\n")

    fake = FakeTime()
    await replay(path, h, speed=None, clock=fake.clock, sleep=fake.sleep, source="replayed")

    assert [t.ts_ms for t in h.collector.ticks] == [TS0 + 3000, TS0, TS0 + 1000]
    assert {t.source for t in h.collector.ticks} == {"replayed"}
    assert fake.sleeps == []
    assert h.collector.rejects == [
        ("replay", RejectReason.NOT_JSON, b"not json"),
        ("replay", RejectReason.BAD_SHAPE, bad[1].encode()),
        ("replay", RejectReason.BAD_PRICE, bad[2].encode()),
    ]


async def test_paced_mode_keeps_the_recorded_gaps_divided_by_speed(tmp_path: Path, h: Any) -> None:
    """At 2x a 3 s recording takes 1.5 s, each tick due at (ts - ts0) / 2."""
    path = tmp_path / "t.csv"
    with TickWriter(path) as writer:
        for tick in TICKS:
            writer.write(tick)
    fake = FakeTime()
    emitted_at: list[float] = []

    async def emit(tick: PriceTick) -> None:
        emitted_at.append(fake.now - 100.0)

    source = ReplaySource(path, speed=2.0, clock=fake.clock, sleep=fake.sleep)
    await source.run(emit, h.collector.reject)
    assert emitted_at == [0.0, 0.0, 0.125, 0.5, 1.5]
    assert sum(fake.sleeps) == pytest.approx(1.5)


async def test_paced_mode_in_real_time(tmp_path: Path, h: Any) -> None:
    """Five ticks 100 ms apart at 4x take about 0.1 s of wall time."""
    path = tmp_path / "t.jsonl"
    with TickWriter(path) as writer:
        for n in range(5):
            writer.write(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(n + 1), TS0 + 100 * n, "x"))
    started = time.monotonic()
    await replay(path, h, speed=4.0)
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.6
    assert len(h.collector.ticks) == 5


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    """A non-positive speed or a CSV without the expected header is a usage error."""
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(tmp_path / "x.jsonl", speed=0)
    path = tmp_path / "x.csv"
    path.write_text("time,price\n1,2\n")
    source = ReplaySource(path, speed=None)

    async def ignore(*args: object) -> None:
        return None

    with pytest.raises(ValueError, match="CSV header"):
        asyncio.run(source.run(ignore, ignore))
