"""The synthetic market: determinism, scheduled crash and squeeze, pacing."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from feeds.synthetic import Jump, SyntheticMarket, SyntheticSource
from feeds.tick import PriceKind, PriceTick

pytestmark = pytest.mark.unit

STARTS = {"BTCUSDT": "50000.00", "ETHUSDT": "2000.000"}


def walk(market: SyntheticMarket, steps: int) -> list[PriceTick]:
    return [tick for _ in range(steps) for tick in market.step()]


def index_path(ticks: list[PriceTick], symbol: str) -> list[Decimal]:
    return [t.price for t in ticks if t.symbol == symbol and t.kind is PriceKind.INDEX]


def test_the_same_seed_gives_the_same_ticks() -> None:
    """Two markets with one seed agree tick for tick; another seed does not."""
    one = walk(SyntheticMarket(STARTS, seed=42, daily_vol=0.8), 300)
    two = walk(SyntheticMarket(STARTS, seed=42, daily_vol=0.8), 300)
    other = walk(SyntheticMarket(STARTS, seed=43, daily_vol=0.8), 300)
    assert one == two
    assert one != other
    assert len(set(index_path(one, "BTCUSDT"))) > 100, "the price actually moves"


def test_the_first_step_is_the_start_price_at_the_start_time() -> None:
    """Step 0 reports the configured prices; later steps are interval_s apart."""
    market = SyntheticMarket(STARTS, interval_s=0.5, basis_bp=0, start_ts_ms=1_700_000_000_000)
    first, second = market.step(), market.step()
    assert first[:2] == [
        PriceTick("BTCUSDT", PriceKind.MARK, Decimal("50000.00"), 1_700_000_000_000, "synthetic"),
        PriceTick("BTCUSDT", PriceKind.INDEX, Decimal("50000.00"), 1_700_000_000_000, "synthetic"),
    ]
    assert {t.ts_ms for t in second} == {1_700_000_000_500}
    assert first[2].price == Decimal("2000.000")
    assert all(t.price.as_tuple().exponent == -3 for t in second if t.symbol == "ETHUSDT")


def test_a_scheduled_crash_moves_the_price_by_its_fraction() -> None:
    """Without noise, a -30 % crash at t=10 s turns 50000 into exactly 35000."""
    market = SyntheticMarket(STARTS, daily_vol=0, basis_bp=0, jumps=[Jump(at_s=10, fraction=-0.3)])
    btc = index_path(walk(market, 15), "BTCUSDT")
    assert btc[:10] == [Decimal("50000.00")] * 10
    assert btc[10:] == [Decimal("35000.00")] * 5


def test_a_crash_on_top_of_noise_is_still_the_configured_fraction() -> None:
    """With volatility the step across the crash is 0.7x give or take one step of noise."""
    market = SyntheticMarket(
        STARTS, seed=7, daily_vol=0.5, basis_bp=0, jumps=[Jump(at_s=60, fraction=-0.3)]
    )
    btc = index_path(walk(market, 61), "BTCUSDT")
    ratio = btc[60] / btc[59]
    assert Decimal("0.69") < ratio < Decimal("0.71")


def test_a_squeeze_can_be_spread_over_time_and_limited_to_symbols() -> None:
    """+25 % over 5 s rises step by step, on the listed symbol only."""
    jump = Jump(at_s=5, fraction=0.25, symbols=("ETHUSDT",), over_s=5)
    ticks = walk(SyntheticMarket(STARTS, daily_vol=0, basis_bp=0, jumps=[jump]), 12)
    eth = index_path(ticks, "ETHUSDT")
    assert eth[:5] == [Decimal("2000.000")] * 5
    assert all(later > earlier for earlier, later in itertools.pairwise(eth[4:10]))
    assert eth[9:] == [Decimal("2500.000")] * 3
    assert set(index_path(ticks, "BTCUSDT")) == {Decimal("50000.00")}


def test_mark_follows_index_within_the_basis() -> None:
    """The mark is the index times a small random basis (here 5 bp stdev)."""
    ticks = walk(SyntheticMarket(STARTS, seed=1, basis_bp=5), 200)
    marks = [t.price for t in ticks if t.kind is PriceKind.MARK and t.symbol == "BTCUSDT"]
    indexes = index_path(ticks, "BTCUSDT")
    gaps = [abs(m / i - 1) for m, i in zip(marks, indexes, strict=True)]
    assert max(gaps) < Decimal("0.003")
    assert any(gap > 0 for gap in gaps)


def test_bad_settings_are_refused() -> None:
    """Impossible jumps and prices fail at construction."""
    with pytest.raises(ValueError, match="fraction"):
        Jump(at_s=1, fraction=-1)
    with pytest.raises(ValueError, match="positive"):
        SyntheticMarket({"X": "0"})
    with pytest.raises(ValueError, match="no symbols"):
        SyntheticSource({})


async def test_the_source_paces_steps_and_stops_after_max_steps() -> None:
    """At 10x with 1 s steps, each step is due 0.1 s after the previous one."""
    now = 0.0
    sleeps: list[float] = []

    def clock() -> float:
        return now

    async def sleep(seconds: float) -> None:
        nonlocal now
        sleeps.append(seconds)
        now += seconds

    emitted: list[PriceTick] = []

    async def emit(tick: PriceTick) -> None:
        emitted.append(tick)

    async def reject(source: str, reason: str, raw: bytes) -> None:
        raise AssertionError("a synthetic market has no bad frames")

    source = SyntheticSource(
        STARTS,
        seed=3,
        speed=10,
        max_steps=4,
        start_ts_ms=1_700_000_000_000,
        clock=clock,
        sleep=sleep,
    )
    async with asyncio.timeout(5):
        await source.run(emit, reject)
    assert sleeps == pytest.approx([0.1, 0.1, 0.1])
    assert len(emitted) == 4 * 2 * 2
    assert emitted == walk(source.market(1_700_000_000_000), 4)
    assert {t.source for t in emitted} == {"synthetic"}


async def test_the_source_can_be_cancelled_while_running_forever() -> None:
    """Without max_steps the source runs until cancelled, as fast as possible with speed=None."""
    seen = asyncio.Event()
    count = 0

    async def emit(tick: PriceTick) -> None:
        nonlocal count
        count += 1
        if count == 1000:
            seen.set()

    async def reject(source: str, reason: str, raw: bytes) -> None:
        raise AssertionError

    task = asyncio.create_task(SyntheticSource(STARTS, speed=None).run(emit, reject))
    async with asyncio.timeout(5):
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
