"""The liquidation book answers what the position-by-position reference does.

The book files each open position by its liquidation, bankruptcy and margin-call
price in cells, and answers a stress or a map from the cells' sums and the
members of the one cell a price falls in. These tests feed random books of every
venue's contracts (both sides, linear and inverse, tiers, positions closed and
liquidated) and compare with tests/stress_book.py's reference: at random prices,
exactly at every position's thresholds and one 28-digit step beside them, at cell
edges, after new versions, closes and liquidations replace records, and for maps
of ragged ranges and steps.

A linear figure agrees to the last digit. An inverse contract's ``Σx/E`` and
``Σx/L`` are kept to 60 decimal places per position (the book's module doc), so
its shortfall and map notionals agree to within half a unit there per position,
and to every digit printed.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stress_book import (
    CONTRACTS,
    RAGGED_MAPS,
    beside,
    center_of,
    map_range,
    random_book,
    reference,
    reference_map,
    threshold_prices,
)

from monitor.core.book import INVERSE_PLACES, LiquidationBook, cell_bounds, cell_of
from monitor.core.margin import Contract, ContractKind, Side
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.stress import Within, bucket_edges, decimal_text, stress

pytestmark = pytest.mark.unit

D = Decimal
RISK = RiskLimits()
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def book_of(contract: Contract, records: list[PositionRecord]) -> LiquidationBook:
    book = LiquidationBook(contract, RISK)
    for record in records:
        book.apply(record.id, record.encode())
    return book


def close(contract: Contract, actual: Fraction, expected: Fraction, count: int) -> bool:
    """Equal for a linear contract; within half a kept unit per position for an inverse one,
    and printed the same."""
    if contract.kind is ContractKind.LINEAR:
        return actual == expected
    slack = Fraction(count, 2 * 10**INVERSE_PLACES)
    return abs(actual - expected) <= slack and decimal_text(actual) == decimal_text(expected)


def agrees(contract: Contract, records: list[PositionRecord], price: Decimal) -> None:
    """The book's stress at ``price`` is the reference's."""
    book = book_of(contract, records)
    expected = reference(contract, records, price, RISK)
    actual = book.stress(price)
    assert (actual.liquidated.count, actual.liquidated.notional, actual.liquidated.margin) == (
        expected["liquidated"]
    )
    assert (actual.margin_call.count, actual.margin_call.notional) == expected["margin_call"]
    assert close(contract, actual.shortfall, expected["shortfall"], len(records))


def thresholds(contract: Contract, records: list[PositionRecord]) -> list[Decimal]:
    """Every position's liquidation, margin-call and bankruptcy price and its cell's edges,
    with their 28-digit neighbours."""
    return beside(
        [
            near
            for record in records
            for price in threshold_prices(contract, record, RISK)
            for near in (price, *cell_bounds(cell_of(price)))
        ]
    )


@PROPERTY
@given(
    name=st.sampled_from(sorted(CONTRACTS)),
    seed=st.integers(0, 10_000),
    factor=st.integers(500, 1500).map(lambda n: D(n) / 1000),
)
def test_a_stress_anywhere_matches_the_reference(name: str, seed: int, factor: Decimal) -> None:
    """At a price from −50 % to +50 % of the book's centre, every figure matches."""
    center = center_of(name)
    agrees(CONTRACTS[name], random_book(CONTRACTS[name], 40, seed, center), center * factor)


@PROPERTY
@given(name=st.sampled_from(sorted(CONTRACTS)), seed=st.integers(0, 10_000), pick=st.integers(0))
def test_a_stress_at_a_threshold_or_a_cell_edge_matches_the_reference(
    name: str, seed: int, pick: int
) -> None:
    """On a position's own threshold, on the edges of its cell, and one step beside each:
    where a cell read as a whole instead of member by member would show."""
    contract = CONTRACTS[name]
    records = random_book(contract, 15, seed, center_of(name))
    prices = thresholds(contract, records)
    agrees(contract, records, prices[pick % len(prices)])


@PROPERTY
@given(name=st.sampled_from(sorted(CONTRACTS)), seed=st.integers(0, 10_000))
def test_the_sums_follow_new_versions_closes_and_liquidations(name: str, seed: int) -> None:
    """Records replaced many times (new sizes, sides and margins, closes, liquidations,
    reopened, deleted, and status changes alone: healthy to margin call and back) leave
    the book as if it were filed afresh from the last ones."""
    contract = CONTRACTS[name]
    center = center_of(name)
    rng = random.Random(seed)
    book = LiquidationBook(contract, RISK)
    current: dict[str, PositionRecord] = {}
    for round_ in range(6):
        for record in random_book(contract, 25, seed * 7 + round_, center):
            if rng.random() < 0.5:
                continue
            if rng.random() < 0.1:
                book.apply(record.id, None)
                current.pop(record.id, None)
                continue
            book.apply(record.id, record.encode())
            current[record.id] = record
        for record in list(current.values())[::3]:
            if record.status in (Status.HEALTHY, Status.MARGIN_CALL):
                flipped = record.moved_to(
                    Status.MARGIN_CALL if record.status is Status.HEALTHY else Status.HEALTHY
                )
                book.apply(flipped.id, flipped.encode())
                current[flipped.id] = flipped
    records = list(current.values())
    fresh = book_of(contract, records)
    assert book.records == fresh.records
    for factor in ("0.6", "0.9", "0.97", "1.03", "1.1", "1.4"):
        price = center * D(factor)
        assert book.stress(price) == fresh.stress(price)
        agrees(contract, records, price)


def test_an_empty_book_and_positions_not_open_count_nothing() -> None:
    contract = CONTRACTS["binance"]
    gone = PositionRecord("x", "a", contract.symbol, Side.LONG, D(5), D(100), D(5), 1)
    book = book_of(contract, [gone.moved_to(Status.LIQUIDATED)])
    assert len(book) == 0
    result = book.stress(D(50))
    assert (result.liquidated.count, result.margin_call.count, result.shortfall) == (0, 0, 0)


def test_a_crash_liquidates_longs_with_a_shortfall_past_bankruptcy() -> None:
    """A long at 10x entered at 100 liquidates at 80 and costs what its balance is short
    (the same example :func:`stress` is checked with)."""
    contract = CONTRACTS["binance"]
    long = PositionRecord("l", "a", contract.symbol, Side.LONG, D(2), D(100), D(20), 1)
    short = PositionRecord("s", "a", contract.symbol, Side.SHORT, D(1), D(100), D(10), 1)
    book = book_of(contract, [long, short])
    assert book.stress(D(80)).document(D(100)) == stress(
        contract, [long, short], D(80), RISK
    ).document(D(100))
    assert book.stress(D(80)).document(D(100))["shortfall"] == "20"


@PROPERTY
@given(**RAGGED_MAPS)
def test_the_map_matches_the_reference_for_ragged_ranges(
    name: str, seed: int, low: int, width: int, step: str
) -> None:
    """Any range and step: cells inside a bucket by their sums, cells an edge cuts member
    by member."""
    contract = CONTRACTS[name]
    records = random_book(contract, 40, seed, center_of(name))
    edges = map_range(name, low, width, step)
    if edges is None:
        return
    lo, hi, st_ = edges
    buckets = book_of(contract, records).liquidation_map(lo, hi, st_).buckets()
    expected = reference_map(contract, records, bucket_edges(lo, hi, st_))
    assert len(buckets) == len(expected)
    for bucket, row in zip(buckets, expected, strict=True):
        assert (bucket.low, bucket.high, bucket.long_count, bucket.short_count) == (
            row[0],
            row[1],
            row[2],
            row[4],
        )
        pairs = (
            (bucket.long_notional, row[3]),
            (bucket.short_notional, row[5]),
            (bucket.long_cumulative, row[6]),
            (bucket.short_cumulative, row[7]),
        )
        for actual, wanted in pairs:
            assert isinstance(wanted, Fraction)
            assert close(contract, actual, wanted, len(records))


@PROPERTY
@given(name=st.sampled_from(sorted(CONTRACTS)), seed=st.integers(0, 10_000))
def test_the_gauges_notional_within_a_move_matches_a_walk(name: str, seed: int) -> None:
    """What the liquidation gauges report: the same as :class:`Within` fed every position."""
    contract = CONTRACTS[name]
    center = center_of(name)
    records = random_book(contract, 40, seed, center)
    distances = [D("0.01"), D("0.05"), D("0.1"), D("0.25")]
    walked = Within(contract, center, distances)
    for record in records:
        walked.add(record)
    filed = book_of(contract, records).within(center, distances)
    for side in Side:
        for distance in distances:
            assert filed.count(side, distance) == walked.count(side, distance)
            assert filed.notional(side, distance) == walked.notional(side, distance)


def test_cells_sort_as_their_prices_and_hold_them() -> None:
    prices = [D("0.0812345"), D("0.09999999"), D("0.1"), D("9.99995"), D(10), D("64123.456")]
    cells = [cell_of(price) for price in prices]
    assert cells == sorted(cells)
    for price, cell in zip(prices, cells, strict=True):
        low, high = cell_bounds(cell)
        assert low <= price < high
    assert cell_bounds(cell_of(D("64123.456"))) == (D(64123), D(64124))
    assert cell_bounds(cell_of(D("0.0812345"))) == (D("0.081234"), D("0.081235"))
