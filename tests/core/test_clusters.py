"""The liquidation gauges' figures and the cluster alert's decision, pure.

:class:`monitor.core.stress.Within` must give, per side and distance, exactly the
``liquidated`` notional of a stress at ``mark × (1 ∓ d)`` over that side's
positions, and the position-by-position reference of tests/stress_book.py; the
alert's decision must raise once, stay quiet in the hysteresis band, and clear once.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stress_book import CONTRACTS, random_book, reference

from monitor.core.clusters import (
    GAUGE_DISTANCES,
    ClusterAlert,
    ClusterRule,
    ClusterState,
    alert_id,
    decide,
)
from monitor.core.margin import Side
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits
from monitor.core.stress import Within, against, stress

pytestmark = pytest.mark.unit

D = Decimal
RISK = RiskLimits()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULE = ClusterRule(D("0.05"), D(1000), D(800))
CENTERS = {"binance-inverse": D(60000), "bybit-inverse": D(60000), "gate-inverse": D(60000)}


def side_of(book: list[PositionRecord], side: Side) -> list[PositionRecord]:
    """The book's positions of one side."""
    return [record for record in book if record.side is side]


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_within_is_the_stress_figure_of_each_side_and_the_reference(name: str) -> None:
    """For every venue, linear and inverse, at 1 %, 5 % and 10 % against each side, the
    figure is the stress test's liquidated notional over that side alone, and the
    position-by-position reference's."""
    contract = CONTRACTS[name]
    center = CENTERS.get(name, D(60000))
    book = random_book(contract, 400, seed=7, center=center)
    within = Within(contract, center, GAUGE_DISTANCES)
    for record in [*book, *book[:50]]:  # fed twice: counted once
        within.add(record)
    liquidating = 0
    for side in Side:
        for distance in GAUGE_DISTANCES:
            price = against(center, side, distance)
            alone = side_of(book, side)
            expected = stress(contract, alone, price, RISK).liquidated
            assert expected.notional == within.notional(side, distance)
            assert expected.count == within.count(side, distance)
            count, notional, _ = reference(contract, alone, price, RISK)["liquidated"]  # type: ignore[misc]
            assert (count, notional) == (
                within.count(side, distance),
                within.notional(side, distance),
            )
            liquidating += count
    assert liquidating > 0


def test_against_moves_each_side_the_wrong_way_exactly() -> None:
    """Longs lose as the mark falls, shorts as it rises; no rounding."""
    mark = D("64123.456789012345678901234567")
    five = Fraction(5, 100)
    assert Fraction(mark) * (1 - five) == Fraction(against(mark, Side.LONG, D("0.05")))
    assert Fraction(mark) * (1 + five) == Fraction(against(mark, Side.SHORT, D("0.05")))
    with pytest.raises(ValueError):
        against(mark, Side.LONG, D(1))


@PROPERTY
@given(
    name=st.sampled_from(sorted(CONTRACTS)),
    seed=st.integers(0, 10_000),
    distances=st.sets(st.decimals("0.001", "0.5", places=3), min_size=1, max_size=4),
)
def test_within_agrees_with_stress_at_any_distance(
    name: str, seed: int, distances: set[Decimal]
) -> None:
    """Any distances, any book: the stress figure of each side, fed in any order."""
    contract = CONTRACTS[name]
    center = CENTERS.get(name, D(60000))
    book = random_book(contract, 60, seed=seed, center=center)
    within = Within(contract, center, distances)
    for record in reversed(book):
        within.add(record)
    for side in Side:
        for distance in distances:
            price = against(center, side, distance)
            expected = stress(contract, side_of(book, side), price, RISK).liquidated
            assert (expected.count, expected.notional) == (
                within.count(side, distance),
                within.notional(side, distance),
            )


def test_raise_once_quiet_in_the_band_clear_once() -> None:
    """Raised at the threshold, not again while above the clear threshold, cleared once
    below it; the next raise opens episode 2."""
    state = ClusterState()
    seen = []
    for notional in [0, 999, 1000, 5000, 800, 1000, 799, 0, 799, 1000]:
        state, alert = decide(state, Fraction(notional), RULE)
        seen.append(alert)
    raised, cleared = ClusterAlert.RAISED, ClusterAlert.CLEARED
    assert [None, None, raised, None, None, None, cleared, None, None, raised] == seen
    assert ClusterState(True, 2) == state


def test_exact_comparison_at_the_thresholds() -> None:
    """A notional one part in 10^30 below the threshold does not raise."""
    below = Fraction(1000) - Fraction(1, 10**30)
    assert (ClusterState(), None) == decide(ClusterState(), below, RULE)
    raised = ClusterState(True, 1)
    assert (raised, None) == decide(raised, Fraction(800), RULE)


def test_state_text_round_trips_and_unknown_text_is_the_initial_state() -> None:
    """What Redis stores is read back; anything else is no episode yet."""
    for state in (ClusterState(), ClusterState(True, 7), ClusterState(False, 12)):
        assert state == ClusterState.parse(state.text())
    assert ClusterState() == ClusterState.parse(None)
    assert ClusterState() == ClusterState.parse("up:x")


def test_ids_name_symbol_type_side_and_episode() -> None:
    """The raise and clear of one episode differ only by type."""
    assert "BTCUSDT:liquidation_cluster:long:3" == alert_id(
        "BTCUSDT", Side.LONG, ClusterAlert.RAISED, 3
    )
    assert "BTCUSDT:liquidation_cluster_cleared:short:3" == alert_id(
        "BTCUSDT", Side.SHORT, ClusterAlert.CLEARED, 3
    )


def test_after_redis_lost_its_data_episode_one_is_a_new_id() -> None:
    """Episode counters restart with Redis's data; the generation keeps the ids new."""
    before = alert_id("BTCUSDT", Side.LONG, ClusterAlert.RAISED, 1)
    after = alert_id("BTCUSDT", Side.LONG, ClusterAlert.RAISED, 1, generation=2)
    assert before != after
    assert after == alert_id("BTCUSDT", Side.LONG, ClusterAlert.RAISED, 1, generation=2)


def test_rule_refuses_thresholds_out_of_order() -> None:
    """The clear threshold may not exceed the raise threshold, nor the distance 1."""
    with pytest.raises(ValueError):
        ClusterRule(D("0.05"), D(10), D(11))
    with pytest.raises(ValueError):
        ClusterRule(D(1), D(10), D(5))


@PROPERTY
@given(
    notionals=st.lists(st.integers(0, 2000), max_size=60),
    raise_at=st.integers(1, 1500),
    band=st.integers(0, 1500),
)
def test_alerts_alternate_and_follow_the_thresholds(
    notionals: list[int], raise_at: int, band: int
) -> None:
    """Any sequence: alerts alternate raise, clear, raise…; a raise only at or above the
    raise threshold, a clear only below the clear one; the state says raised exactly
    after a raise; the episode counts the raises."""
    rule = ClusterRule(D("0.1"), D(raise_at), D(max(1, raise_at - band)))
    state, alerts = ClusterState(), []
    for notional in notionals:
        before = state
        state, alert = decide(state, Fraction(notional), rule)
        if alert is ClusterAlert.RAISED:
            assert not before.raised and notional >= rule.raise_notional
        elif alert is ClusterAlert.CLEARED:
            assert before.raised and notional < rule.clear_notional
        else:
            assert before == state
            if before.raised:
                assert notional >= rule.clear_notional
            else:
                assert notional < rule.raise_notional
        if alert is not None:
            alerts.append(alert)
    expected = [ClusterAlert.RAISED, ClusterAlert.CLEARED] * len(alerts)
    assert expected[: len(alerts)] == alerts
    assert state.raised == (bool(alerts) and alerts[-1] is ClusterAlert.RAISED)
    assert alerts.count(ClusterAlert.RAISED) == state.episode
