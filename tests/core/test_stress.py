"""Stress at a price and the liquidation map agree with a position-by-position reference.

The reference (tests/stress_book.py) decides each position from its trigger prices
(liquidated at or past its liquidation price, in margin call at or past its
margin-call price) and sums exact rationals; :mod:`monitor.core.stress` decides
with the model's comparison at the price. Both must give the same figures to the
last digit, for both sides, linear and inverse, every venue, at prices exactly on a
position's thresholds and one 28-digit step beside them.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stress_book import (
    CONTRACTS,
    RAGGED_MAPS,
    STEP,
    beside,
    center_of,
    map_range,
    random_book,
    reference,
    reference_map,
    threshold_prices,
)

from monitor.core.margin import Contract, ContractKind, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.stress import bucket_edges, decimal_text, liquidation_map, stress

pytestmark = pytest.mark.unit

D = Decimal
RISK = RiskLimits()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def figures(contract_name: str, book: list[PositionRecord], price: Decimal) -> dict[str, object]:
    """stress()'s answer in the reference's shape."""
    result = stress(CONTRACTS[contract_name], book, price, RISK)
    return {
        "liquidated": (
            result.liquidated.count,
            result.liquidated.notional,
            result.liquidated.margin,
        ),
        "margin_call": (result.margin_call.count, result.margin_call.notional),
        "shortfall": result.shortfall,
    }


def tier_edges(contract: Contract, record: PositionRecord) -> list[Decimal]:
    """The prices at which the record's notional meets a bracket's cap (Binance's tiers
    follow the notional at the mark, so the maintenance rate changes there)."""
    edges = []
    for bracket in contract.brackets:
        if bracket.notional_cap is None:
            continue
        if contract.kind is ContractKind.LINEAR:
            edges.append(STEP.divide(bracket.notional_cap, record.qty))
        else:
            edges.append(STEP.divide(record.qty * contract.contract_size, bracket.notional_cap))
    return edges


def thresholds(contract_name: str, book: list[PositionRecord]) -> list[Decimal]:
    """Every liquidation, margin-call and bankruptcy price of the book, and every price
    where a position's notional meets a tier's cap, with both 28-digit neighbours: the
    prices where an off-by-one would show."""
    contract = CONTRACTS[contract_name]
    return beside(
        [
            price
            for record in book
            for price in (*threshold_prices(contract, record, RISK), *tier_edges(contract, record))
        ]
    )


@PROPERTY
@given(
    name=st.sampled_from(sorted(CONTRACTS)),
    seed=st.integers(0, 10_000),
    factor=st.integers(500, 1500).map(lambda n: D(n) / 1000),
)
def test_stress_at_any_price_matches_the_reference(name: str, seed: int, factor: Decimal) -> None:
    """At a price anywhere from −50 % to +50 % of the book's centre, every figure matches."""
    center = center_of(name)
    book = random_book(CONTRACTS[name], 30, seed, center)
    price = center * factor
    assert figures(name, book, price) == reference(CONTRACTS[name], book, price, RISK)


@PROPERTY
@given(name=st.sampled_from(sorted(CONTRACTS)), seed=st.integers(0, 10_000), pick=st.integers(0))
def test_stress_exactly_at_a_threshold_matches_the_reference(
    name: str, seed: int, pick: int
) -> None:
    """At a position's own liquidation, margin-call or bankruptcy price, or where its
    notional meets a tier's cap (and one step beside each), every position is counted
    exactly as its trigger prices say."""
    book = random_book(CONTRACTS[name], 12, seed, center_of(name))
    prices = thresholds(name, book)
    price = prices[pick % len(prices)]
    assert figures(name, book, price) == reference(CONTRACTS[name], book, price, RISK)


def test_a_crash_liquidates_longs_with_a_shortfall_past_bankruptcy() -> None:
    """A long at 10x entered at 100 liquidates at 80 and costs what its balance is short."""
    contract = CONTRACTS["binance"]
    model = model_for(contract)
    long = PositionRecord("l", "a", contract.symbol, Side.LONG, D(2), D(100), D(20), 1)
    short = PositionRecord("s", "a", contract.symbol, Side.SHORT, D(1), D(100), D(10), 1)
    gone = PositionRecord(
        "x", "a", contract.symbol, Side.LONG, D(5), D(100), D(5), 1, Status.CLOSED
    )
    result = stress(contract, [long, short, gone], D(80), RISK).document(D(100))
    assert model.liquidatable(long, D(80))
    assert result == {
        "symbol": contract.symbol,
        "mark": "100",
        "price": "80",
        "liquidated": {"count": 1, "notional": "160", "margin": "20"},
        "margin_call": {"count": 0, "notional": "0"},
        "shortfall": "20",  # 20 margin − 2 × 20 loss
    }


def test_an_inverse_sum_is_printed_once_to_28_digits() -> None:
    """Coin notionals (x/P) are summed as rationals and rounded once."""
    assert decimal_text(Fraction(1, 3) + Fraction(1, 3)) == "0.6666666666666666666666666667"
    assert decimal_text(Fraction(D("1.25")) * 3) == "3.75"
    assert decimal_text(Fraction(0)) == "0"


@PROPERTY
@given(**RAGGED_MAPS)
def test_the_map_matches_the_reference_for_ragged_ranges(
    name: str, seed: int, low: int, width: int, step: str
) -> None:
    """Any range and step, the last bucket cut short when the step does not divide it."""
    book = random_book(CONTRACTS[name], 25, seed, center_of(name))
    edges = map_range(name, low, width, step)
    if edges is None:
        return
    lo, hi, st_ = edges
    buckets = liquidation_map(CONTRACTS[name], book, lo, hi, st_)
    actual = [
        (
            b.low,
            b.high,
            b.long_count,
            b.long_notional,
            b.short_count,
            b.short_notional,
            b.long_cumulative,
            b.short_cumulative,
        )
        for b in buckets
    ]
    assert actual == reference_map(CONTRACTS[name], book, bucket_edges(lo, hi, st_))
    assert buckets[0].low == lo and buckets[-1].high == hi


def test_bucket_edges_cut_the_last_bucket_at_high() -> None:
    """[10, 13) in steps of 1.5: two full buckets; in steps of 2: one and a ragged one."""
    assert bucket_edges(D(10), D(13), D("1.5")) == [D(10), D("11.5"), D(13)]
    assert bucket_edges(D(10), D(13), D(2)) == [D(10), D(12), D(13)]
    with pytest.raises(ValueError, match="at most"):
        bucket_edges(D(1), D(10000), D("0.001"))
