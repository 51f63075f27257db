"""Unit and property tests of the pure price guards in :mod:`monitor.core.guards`.

Plain functions, no event loop: the clock is the ``now_s`` argument. Each rule
of the module docstring has worked examples with exact alerts; a hypothesis
property drives random tick sequences (bad prices included) and checks that
nothing raises and that alerts come in proper pairs.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.tick import PriceKind, PriceTick
from monitor.core.guards import (
    DEFAULT_GUARDS,
    Alert,
    AlertType,
    FeedState,
    GuardSettings,
    PriceGuards,
    RejectReason,
    Verdict,
)

pytestmark = pytest.mark.unit

D = Decimal
SYMBOL = "BTC-PERP"
MARK, INDEX = PriceKind.MARK, PriceKind.INDEX
NOW_MS = 1_732_400_000_000
"""The wall clock of these tests; their ticks are stamped long before it."""


def mark(price: str, ts_ms: int = 1, source: str = "binance", symbol: str = SYMBOL) -> PriceTick:
    return PriceTick(symbol, MARK, D(price), ts_ms, source)


def index(price: str, ts_ms: int = 1, source: str = "binance", symbol: str = SYMBOL) -> PriceTick:
    return PriceTick(symbol, INDEX, D(price), ts_ms, source)


def guards(**overrides: Any) -> PriceGuards:
    """Guards for SYMBOL with ``overrides`` on top of the defaults, SYMBOL watched from 0 s."""
    guard = PriceGuards({SYMBOL: GuardSettings(**overrides)})
    assert [] == guard.watch(SYMBOL, 0.0, NOW_MS)
    return guard


def reasons(guard: PriceGuards, ticks: list[PriceTick], now_s: float = 0.0) -> list[str | None]:
    return [guard.on_tick(tick, now_s, NOW_MS).reason for tick in ticks]


# --- acceptance and sanity -------------------------------------------------------------


def test_first_mark_is_accepted_and_evaluated() -> None:
    """A first good mark is accepted, handed back for evaluation, and raises nothing."""
    tick = mark("36512.4")
    assert Verdict(True, None, tick, None, ()) == guards().on_tick(tick, 0.0, NOW_MS)


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("0", "non_positive"),
        ("-0", "non_positive"),
        ("-1.5", "non_positive"),
        ("NaN", "non_finite"),
        ("sNaN", "non_finite"),
        ("Infinity", "non_finite"),
        ("-Infinity", "non_finite"),
    ],
)
def test_insane_prices_are_rejected(price: str, reason: str) -> None:
    """Zero, negative, NaN (quiet or signalling) and infinite prices are rejected, mark or index."""
    guard = guards()
    assert Verdict(False, RejectReason(reason), None, None, ()) == guard.on_tick(
        mark(price), 0.0, NOW_MS
    )
    assert reason == guard.on_tick(index(price), 0.0, NOW_MS).reason
    state = guard.state(SYMBOL, 0.0)
    assert (None, None) == (state.mark, state.index)


def test_tiny_and_huge_prices_do_not_raise() -> None:
    """Finite positive extremes are accepted, and a ratio that overflows is just a deviation."""
    guard = guards()
    assert guard.on_tick(index("1E-999999"), 0.0, NOW_MS).accepted
    verdict = guard.on_tick(mark("9E+999999"), 0.0, NOW_MS)
    assert [AlertType.PRICE_DEVIATION] == [a.type for a in verdict.alerts]
    assert "Infinity" == verdict.alerts[0].detail["deviation"]


# --- order -----------------------------------------------------------------------------


def test_older_mark_is_dropped_and_equal_ts_accepted() -> None:
    """A mark older than the last accepted one is out_of_order; an equal ts_ms is accepted."""
    guard = guards()
    assert [None, "out_of_order", None, None] == reasons(
        guard, [mark("100", 10), mark("101", 9), mark("102", 10), mark("103", 11)]
    )
    assert Decimal("103") == guard.state(SYMBOL, 0.0).mark


def test_order_is_per_kind() -> None:
    """An index tick is judged against the last index, not against a newer mark."""
    guard = guards()
    assert [None, None, "out_of_order", None] == reasons(
        guard, [mark("100", 50), index("100", 10), index("100", 9), mark("100", 50)]
    )


def test_index_order_is_per_source() -> None:
    """Each index source has its own order guard."""
    guard = guards()
    ticks = [index("100", 100, "a"), index("101", 50, "b"), index("99", 90, "a")]
    assert [None, None, "out_of_order"] == reasons(guard, ticks)


def test_order_is_per_symbol() -> None:
    """An old tick for one symbol is fine after a new tick for another."""
    guard = guards()
    ticks = [mark("100", 100), mark("100", 5, symbol="ETH-PERP")]
    assert [None, None] == reasons(guard, ticks)


# --- future timestamps -----------------------------------------------------------------


def test_a_tick_stamped_beyond_the_skew_is_rejected_and_changes_nothing() -> None:
    """ts_ms more than max_future_skew_s ahead of the wall clock: future_ts, mark or index."""
    guard = guards(max_future_skew_s=5.0)
    assert guard.on_tick(mark("100", NOW_MS - 1000), 0.0, NOW_MS).accepted
    in_microseconds = NOW_MS * 1000
    assert [RejectReason.FUTURE_TS, RejectReason.FUTURE_TS] == reasons(
        guard, [mark("100", in_microseconds), index("100", NOW_MS + 5001)]
    )
    # The next correctly stamped ticks are not "older" than the rejected one.
    assert [None, None] == reasons(guard, [mark("54", NOW_MS), index("54", NOW_MS + 5000)])
    assert NOW_MS == guard.state(SYMBOL, 0.0).mark_ts_ms


def test_the_future_skew_is_per_symbol() -> None:
    """Each symbol allows its own max_future_skew_s."""
    guard = PriceGuards({"LAX": GuardSettings(max_future_skew_s=60.0)})
    tick = NOW_MS + 30_000
    assert "future_ts" == guard.on_tick(mark("1", tick), 0.0, NOW_MS).reason
    assert guard.on_tick(mark("1", tick, symbol="LAX"), 0.0, NOW_MS).accepted
    assert NOW_MS + 60_000 == guard.ts_ceiling_ms("LAX", NOW_MS)


# --- watching (the lease), and marks stored before a restart ---------------------------


def test_a_watched_symbol_without_a_mark_goes_stale_from_the_watch() -> None:
    """No mark for stale_after_s since watching began: stale, no decisions, paired alerts."""
    guard = guards(stale_after_s=10.0)
    assert [] == guard.sweep(10.0)
    assert None is guard.state(SYMBOL, 10.0).age_s
    (stale,) = guard.sweep(10.5)
    assert Alert(SYMBOL, AlertType.FEED_STALE, {"age_s": "10.500"}, 10.5, NOW_MS + 10_000) == stale
    state = guard.state(SYMBOL, 12.0)
    assert (True, 12.0, None) == (state.stale, state.silent_s, state.age_s)
    assert not guard.may_decide(SYMBOL, 12.0)
    verdict = guard.on_tick(mark("100", 1), 13.0, NOW_MS)
    assert [f"{SYMBOL}:feed_resumed:{NOW_MS + 10_000}"] == [a.alert_id for a in verdict.alerts]
    assert guard.may_decide(SYMBOL, 13.0)


def test_stale_names_the_watched_stale_symbols_as_state_does() -> None:
    """stale() (what readiness asks every second) agrees with state() on every symbol: only
    watched symbols past stale_after_s, each with how long it has been silent."""
    other = "ETH-PERP"
    guard = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    guard.watch(SYMBOL, 0.0, NOW_MS)
    guard.watch(other, 0.0, NOW_MS, mark("3000", NOW_MS, symbol=other))
    guard.on_tick(mark("3001", NOW_MS + 1, symbol=other), 5.0, NOW_MS)
    for now_s in (9.0, 12.0, 16.0):
        expected = {
            symbol: state.silent_s
            for symbol in (SYMBOL, other)
            if (state := guard.state(symbol, now_s)).stale
        }
        assert expected == guard.stale(now_s)
    assert {SYMBOL: 16.0, other: 11.0} == guard.stale(16.0)
    guard.unwatch(other)
    assert [SYMBOL] == list(guard.stale(16.0))


def test_a_minutes_old_stored_mark_is_stale_at_once() -> None:
    """After a restart, the stored mark's age by its ts_ms counts: stale at the first sweep."""
    guard = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    stored = mark("64000", NOW_MS - 180_000)
    assert [] == guard.watch(SYMBOL, 5.0, NOW_MS, stored)
    assert 180.0 == guard.state(SYMBOL, 5.0).age_s
    assert not guard.may_decide(SYMBOL, 5.0)
    detail = {"age_s": "180.000", "mark": "64000"}
    assert [Alert(SYMBOL, AlertType.FEED_STALE, detail, 5.0, NOW_MS - 170_000)] == guard.sweep(5.0)
    assert "out_of_order" == guard.on_tick(mark("1", NOW_MS - 200_000), 6.0, NOW_MS).reason


def test_a_recent_stored_mark_is_the_reference_and_not_stale() -> None:
    """A stored mark younger than stale_after_s keeps the symbol fresh for the rest of it."""
    guard = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    guard.watch(SYMBOL, 0.0, NOW_MS, mark("64000", NOW_MS - 4000))
    assert [] == guard.sweep(6.0)
    assert [AlertType.FEED_STALE] == [a.type for a in guard.sweep(6.5)]


def test_a_stored_mark_stamped_in_the_future_is_ignored() -> None:
    """A stored ts beyond the skew (an older version kept it) does not make good ticks old."""
    guard = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    guard.watch(SYMBOL, 0.0, NOW_MS, mark("64000", NOW_MS * 1000))
    assert None is guard.state(SYMBOL, 0.0).mark
    assert [] == guard.sweep(10.0)
    assert [NOW_MS + 10_000] == [a.episode_ms for a in guard.sweep(10.5)]
    assert guard.on_tick(mark("54000", NOW_MS), 11.0, NOW_MS).accepted


def test_an_unwatched_symbol_raises_nothing_but_is_still_guarded() -> None:
    """Ticks of a symbol another monitor holds are checked and kept; no alert is raised."""
    guard = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    assert () == guard.on_tick(mark("90", 1), 0.0, NOW_MS).alerts
    assert "out_of_order" == guard.on_tick(mark("100", 0), 0.0, NOW_MS).reason
    assert [] == guard.sweep(30.0)
    assert () == guard.on_tick(mark("91", 2), 31.0, NOW_MS).alerts
    assert True is guard.state(SYMBOL, 31.0).deviating
    assert frozenset() == guard.watching


def test_two_monitors_name_an_episode_alike_whatever_their_clocks() -> None:
    """One monitor watched all along, the other takes over mid-episode: the same alert ids."""
    holder = guards(stale_after_s=10.0)
    other = PriceGuards({SYMBOL: GuardSettings(stale_after_s=10.0)})
    holder.on_tick(index("100", 1), 0.0, NOW_MS)
    other.on_tick(index("100", 1), 1000.0, NOW_MS)
    (deviation,) = holder.on_tick(mark("90", 2), 0.0, NOW_MS).alerts
    assert () == other.on_tick(mark("90", 2), 1000.0, NOW_MS).alerts
    taken_over = other.watch(SYMBOL, 1001.0, NOW_MS + 7)
    assert [f"{SYMBOL}:price_deviation:2"] == [deviation.alert_id]
    assert [deviation.alert_id] == [a.alert_id for a in taken_over]
    assert [f"{SYMBOL}:feed_stale:10002"] == [a.alert_id for a in holder.sweep(10.5)]
    assert [f"{SYMBOL}:feed_stale:10002"] == [a.alert_id for a in other.sweep(1011.0)]
    assert [] == other.watch(SYMBOL, 1012.0, NOW_MS), "watching twice changes nothing"
    other.unwatch(SYMBOL)
    assert () == other.on_tick(mark("100", 3), 1013.0, NOW_MS).alerts
    resumed = holder.on_tick(mark("100", 3), 13.0, NOW_MS).alerts
    assert [f"{SYMBOL}:feed_resumed:10002"] == [
        a.alert_id for a in resumed if a.type is AlertType.FEED_RESUMED
    ]


# --- jump ------------------------------------------------------------------------------


def test_jump_beyond_max_is_rejected() -> None:
    """With max_jump 0.2, +20 % and −20 % pass, anything beyond is a jump."""
    guard = guards(max_jump=D("0.2"))
    ticks = [mark("100", 1), mark("120.01", 2), mark("120", 3), mark("95.99", 4), mark("96", 5)]
    assert [None, "jump", None, "jump", None] == reasons(guard, ticks)


def test_jump_is_relative_to_the_last_accepted_mark() -> None:
    """A rejected jump does not become the reference: the next normal mark passes."""
    guard = guards(max_jump=D("0.2"))
    ticks = [mark("100", 1), mark("1", 2), mark("1.1", 3), mark("101", 4)]
    assert [None, "jump", "jump", None] == reasons(guard, ticks)


def test_jump_disabled_by_default() -> None:
    """Without max_jump, a tenfold move is accepted."""
    assert [None, None] == reasons(guards(), [mark("100", 1), mark("1000", 2)])


def test_genuine_jump_is_accepted_after_the_symbol_goes_stale() -> None:
    """A real move beyond max_jump is rejected until stale_after_s, then becomes the reference."""
    guard = guards(max_jump=D("0.2"), stale_after_s=10.0)
    assert guard.on_tick(mark("100", 1), 0.0, NOW_MS).accepted
    assert "jump" == guard.on_tick(mark("60", 2), 5.0, NOW_MS).reason
    assert "jump" == guard.on_tick(mark("60", 3), 10.0, NOW_MS).reason
    assert [] == guard.sweep(10.0)
    assert [
        Alert(SYMBOL, AlertType.FEED_STALE, {"age_s": "11.000", "mark": "100"}, 11.0, 10_001)
    ] == (guard.sweep(11.0))
    verdict = guard.on_tick(mark("60", 4), 11.5, NOW_MS)
    assert (True, mark("60", 4)) == (verdict.accepted, verdict.mark)
    assert [AlertType.FEED_RESUMED] == [a.type for a in verdict.alerts]
    assert guard.may_decide(SYMBOL, 11.5)


# --- sources ---------------------------------------------------------------------------


def test_mark_source_filter() -> None:
    """Only the configured mark_source gives marks; other sources' index ticks still count."""
    guard = guards(mark_source="okx")
    assert "not_mark_source" == guard.on_tick(mark("100", 1, "binance"), 0.0, NOW_MS).reason
    assert guard.on_tick(index("100", 1, "binance"), 0.0, NOW_MS).accepted
    verdict = guard.on_tick(mark("101", 1, "okx"), 0.0, NOW_MS)
    assert (mark("101", 1, "okx"), D("100")) == (verdict.mark, verdict.index)


def test_index_sources_filter() -> None:
    """With index_sources, index ticks from other sources are rejected; marks are not affected."""
    guard = guards(index_sources=("okx", "bybit"))
    assert [None, "not_index_source", None] == reasons(
        guard, [index("100", 1, "okx"), index("100", 1, "binance"), mark("100", 1, "binance")]
    )


def test_source_filter_comes_before_sanity() -> None:
    """A bad price from an ignored source is reported as ignored, not as bad."""
    guard = guards(mark_source="okx")
    assert "not_mark_source" == guard.on_tick(mark("-1", 1, "binance"), 0.0, NOW_MS).reason


# --- median index ----------------------------------------------------------------------


def test_median_of_three_index_sources() -> None:
    """The index is the median of the sources' last index ticks."""
    guard = guards(stale_after_s=10.0)
    guard.on_tick(index("100", 1, "a"), 0.0, NOW_MS)
    assert D("102") == guard.on_tick(index("104", 1, "b"), 0.0, NOW_MS).index
    assert D("101") == guard.on_tick(index("101", 1, "c"), 0.0, NOW_MS).index
    assert D("102") == guard.on_tick(index("102", 2, "a"), 1.0, NOW_MS).index


def test_median_of_two_is_their_mean() -> None:
    """With two fresh sources, the median is the mean of the two."""
    guard = guards()
    guard.on_tick(index("100", 1, "a"), 0.0, NOW_MS)
    assert D("100.5") == guard.on_tick(index("101", 1, "b"), 0.0, NOW_MS).index


def test_stale_index_source_drops_out_of_the_median() -> None:
    """A source whose last index is older than stale_after_s no longer counts."""
    guard = guards(stale_after_s=10.0)
    guard.on_tick(index("90", 1, "a"), 0.0, NOW_MS)
    guard.on_tick(index("100", 1, "b"), 5.0, NOW_MS)
    guard.on_tick(index("103", 1, "c"), 5.0, NOW_MS)
    assert Decimal("100") == guard.state(SYMBOL, 10.0).index
    assert 3 == guard.state(SYMBOL, 10.0).index_sources
    # at 10.5 "a" is 10.5 s old: the median of b and c is their mean
    assert D("101.5") == guard.on_tick(mark("101", 1), 10.5, NOW_MS).index
    assert 2 == guard.state(SYMBOL, 10.5).index_sources
    # "a" comes back
    assert D("100") == guard.on_tick(index("95", 2, "a"), 11.0, NOW_MS).index
    # everything goes quiet: no index
    assert guard.state(SYMBOL, 30.0).index is None


# --- staleness -------------------------------------------------------------------------


def test_stale_alert_once_then_resumed_and_the_fresh_tick_is_evaluated() -> None:
    """feed_stale once per stale period, no decisions meanwhile; the first fresh mark resumes."""
    guard = guards(stale_after_s=10.0)
    guard.on_tick(mark("100", 1), 0.0, NOW_MS)
    assert [] == guard.sweep(10.0)  # exactly stale_after_s is still fresh
    assert guard.may_decide(SYMBOL, 10.0)
    # The episode is named by the last mark's ts_ms + stale_after_s, the same on every monitor.
    stale = Alert(SYMBOL, AlertType.FEED_STALE, {"age_s": "10.500", "mark": "100"}, 10.5, 10_001)
    assert "BTC-PERP:feed_stale:10001" == stale.alert_id
    assert [stale] == guard.sweep(10.5)
    assert [] == guard.sweep(11.5)
    assert [] == guard.sweep(60.0)
    assert not guard.may_decide(SYMBOL, 11.5)
    assert not guard.may_liquidate(SYMBOL, 11.5)
    assert True is guard.state(SYMBOL, 11.5).stale

    fresh = mark("99", 2)
    resumed = Alert(SYMBOL, AlertType.FEED_RESUMED, {"gap_s": "62.000", "mark": "99"}, 62.0, 10_001)
    assert Verdict(True, None, fresh, None, (resumed,)) == guard.on_tick(fresh, 62.0, NOW_MS)
    assert guard.may_decide(SYMBOL, 62.0)
    assert guard.may_liquidate(SYMBOL, 62.0)
    assert [] == guard.sweep(62.0)
    # and a second stale period raises a second alert
    assert ["BTC-PERP:feed_stale:10002"] == [a.alert_id for a in guard.sweep(80.0)]


def test_gap_missed_by_the_sweep_raises_both_alerts() -> None:
    """If the sweep did not run during a gap, the fresh mark raises feed_stale and feed_resumed."""
    guard = guards(stale_after_s=10.0)
    guard.on_tick(mark("100", 1), 0.0, NOW_MS)
    verdict = guard.on_tick(mark("101", 2), 15.0, NOW_MS)
    assert [
        Alert(SYMBOL, AlertType.FEED_STALE, {"age_s": "15.000", "mark": "100"}, 15.0, 10_001),
        Alert(SYMBOL, AlertType.FEED_RESUMED, {"gap_s": "15.000", "mark": "101"}, 15.0, 10_001),
    ] == list(verdict.alerts)
    assert mark("101", 2) == verdict.mark


def test_rejected_marks_do_not_refresh_the_feed() -> None:
    """Only accepted marks keep a symbol fresh: bad, old and foreign ticks do not."""
    guard = guards(stale_after_s=10.0, mark_source="okx")
    guard.on_tick(mark("100", 5, "okx"), 0.0, NOW_MS)
    for now_s, tick in [(4.0, mark("-1", 6, "okx")), (8.0, mark("100", 4, "okx"))]:
        assert not guard.on_tick(tick, now_s, NOW_MS).accepted
    assert not guard.on_tick(mark("100", 9, "binance"), 9.0, NOW_MS).accepted
    assert guard.on_tick(index("100", 9, "okx"), 10.0, NOW_MS).accepted
    assert [AlertType.FEED_STALE] == [a.type for a in guard.sweep(10.1)]


def test_no_mark_yet_and_not_watched_is_neither_stale_nor_holding() -> None:
    """Before its first mark, a symbol this monitor does not hold raises nothing, blocks nothing."""
    guard = PriceGuards({SYMBOL: GuardSettings(hold_on_deviation=True)})
    assert guard.on_tick(index("100", 1), 0.0, NOW_MS).accepted
    assert [] == guard.sweep(1000.0)
    assert guard.may_decide(SYMBOL, 1000.0)
    assert guard.may_liquidate(SYMBOL, 1000.0)
    assert guard.may_liquidate("UNKNOWN", 1000.0)
    state = guard.state(SYMBOL, 1000.0)
    assert (False, False, None) == (state.stale, state.holding, state.age_s)


def test_stale_after_is_per_symbol() -> None:
    """Each symbol uses its own stale_after_s; others use the default."""
    guard = PriceGuards({"FAST": GuardSettings(stale_after_s=1.0)})
    guard.watch("FAST", 0.0, NOW_MS)
    guard.watch("SLOW", 0.0, NOW_MS)
    guard.on_tick(mark("100", 1, symbol="FAST"), 0.0, NOW_MS)
    guard.on_tick(mark("100", 1, symbol="SLOW"), 0.0, NOW_MS)
    assert ["FAST"] == [a.symbol for a in guard.sweep(2.0)]
    assert ["SLOW"] == [a.symbol for a in guard.sweep(10.5)]
    assert DEFAULT_GUARDS == guard.settings_for("SLOW")


# --- deviation -------------------------------------------------------------------------


def test_deviation_alert_once_then_cleared() -> None:
    """Beyond max_mark_index_deviation: one price_deviation, then one cleared when back within."""
    guard = guards()
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    assert () == guard.on_tick(mark("105", 1), 0.0, NOW_MS).alerts  # exactly 5 % is within
    detail = {"mark": "106", "index": "100", "deviation": "0.06", "max": "0.05"}
    assert (Alert(SYMBOL, AlertType.PRICE_DEVIATION, detail, 1.0, 2),) == guard.on_tick(
        mark("106", 2), 1.0, NOW_MS
    ).alerts
    assert () == guard.on_tick(mark("107", 3), 2.0, NOW_MS).alerts
    assert () == guard.on_tick(mark("93", 4), 3.0, NOW_MS).alerts  # still beyond, the other way
    cleared = {"mark": "103", "index": "100", "deviation": "0.03", "max": "0.05"}
    # Both alerts of the episode are named by the tick that started it (ts_ms 2).
    assert (Alert(SYMBOL, AlertType.PRICE_DEVIATION_CLEARED, cleared, 4.0, 2),) == guard.on_tick(
        mark("103", 5), 4.0, NOW_MS
    ).alerts
    assert () == guard.on_tick(mark("102", 6), 5.0, NOW_MS).alerts


def test_index_tick_can_raise_and_clear_a_deviation() -> None:
    """The deviation is also checked when the index moves."""
    guard = guards()
    guard.on_tick(mark("100", 1), 0.0, NOW_MS)
    assert [AlertType.PRICE_DEVIATION] == [
        a.type for a in guard.on_tick(index("110", 1), 0.0, NOW_MS).alerts
    ]
    assert [AlertType.PRICE_DEVIATION_CLEARED] == [
        a.type for a in guard.on_tick(index("101", 2), 1.0, NOW_MS).alerts
    ]


def test_hold_blocks_liquidation_but_not_margin_calls() -> None:
    """With hold_on_deviation, a deviation holds liquidations; decisions still go ahead."""
    guard = guards(hold_on_deviation=True)
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    guard.on_tick(mark("90", 1), 0.0, NOW_MS)
    assert (True, False) == (guard.may_decide(SYMBOL, 0.0), guard.may_liquidate(SYMBOL, 0.0))
    assert True is guard.state(SYMBOL, 0.0).holding
    guard.on_tick(mark("99", 2), 1.0, NOW_MS)
    assert (True, True) == (guard.may_decide(SYMBOL, 1.0), guard.may_liquidate(SYMBOL, 1.0))


def test_without_hold_a_deviation_only_alerts() -> None:
    """hold_on_deviation is off by default: the alert is raised, liquidations go ahead."""
    guard = guards()
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    assert [AlertType.PRICE_DEVIATION] == [
        a.type for a in guard.on_tick(mark("90", 1), 0.0, NOW_MS).alerts
    ]
    assert guard.may_liquidate(SYMBOL, 0.0)
    state = guard.state(SYMBOL, 0.0)
    assert (True, False, Decimal("0.1")) == (state.deviating, state.holding, state.deviation)


def test_deviation_check_disabled() -> None:
    """max_mark_index_deviation None raises nothing and never holds."""
    guard = guards(max_mark_index_deviation=None, hold_on_deviation=True)
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    assert () == guard.on_tick(mark("50", 1), 0.0, NOW_MS).alerts
    assert guard.may_liquidate(SYMBOL, 0.0)


def test_hold_stands_while_the_index_is_quiet() -> None:
    """When every index source is stale, the last deviation verdict stands."""
    guard = guards(hold_on_deviation=True, stale_after_s=10.0)
    guard.on_tick(index("100", 1), 0.0, NOW_MS)
    guard.on_tick(mark("90", 1), 0.0, NOW_MS)
    verdict = guard.on_tick(mark("100", 2), 20.0, NOW_MS)  # back in line, but no fresh index
    assert (None, [AlertType.FEED_STALE, AlertType.FEED_RESUMED]) == (
        verdict.index,
        [a.type for a in verdict.alerts],
    )
    assert not guard.may_liquidate(SYMBOL, 20.0)
    assert [AlertType.PRICE_DEVIATION_CLEARED] == [
        a.type for a in guard.on_tick(index("100", 2), 21.0, NOW_MS).alerts
    ]
    assert guard.may_liquidate(SYMBOL, 21.0)


def test_deviation_is_not_judged_against_a_stale_mark() -> None:
    """An index tick arriving while the mark is stale raises no deviation alert."""
    guard = guards(stale_after_s=10.0)
    guard.on_tick(mark("100", 1), 0.0, NOW_MS)
    assert () == guard.on_tick(index("150", 1), 11.0, NOW_MS).alerts
    assert [AlertType.FEED_STALE, AlertType.FEED_RESUMED, AlertType.PRICE_DEVIATION] == [
        a.type for a in guard.on_tick(mark("100", 2), 11.0, NOW_MS).alerts
    ]


# --- state -----------------------------------------------------------------------------


def test_state_snapshot() -> None:
    """state() reports the mark, the median index and the guard flags."""
    guard = guards()
    guard.on_tick(index("100", 7, "a"), 0.0, NOW_MS)
    guard.on_tick(index("102", 7, "b"), 0.0, NOW_MS)
    guard.on_tick(mark("101.5", 9, "okx"), 1.0, NOW_MS)
    assert FeedState(
        mark=Decimal("101.5"),
        mark_source="okx",
        mark_ts_ms=9,
        age_s=2.0,
        silent_s=2.0,
        index=Decimal(101),
        index_sources=2,
        stale=False,
        deviation=Decimal("0.004950495049504950495049505"),
        deviating=False,
        holding=False,
    ) == guard.state(SYMBOL, 3.0)


def test_state_of_an_unknown_symbol() -> None:
    """A symbol never seen has an empty snapshot."""
    assert FeedState() == guards().state("NOPE", 0.0)


# --- properties ------------------------------------------------------------------------

# mostly sane prices near 100 (so deviations come and go, and jumps happen), some bad or extreme
NEAR = st.integers(97, 103).map(D)
PRICES = st.one_of(
    NEAR,
    NEAR,
    st.integers(60, 140).map(D),
    st.sampled_from(["0", "-5", "NaN", "sNaN", "Infinity", "1E-999999", "9E+999999"]).map(D),
    st.decimals(allow_nan=True, allow_infinity=True),
)
TICKS = st.builds(
    PriceTick,
    symbol=st.sampled_from(["A", "B"]),
    kind=st.sampled_from(list(PriceKind)),
    price=PRICES,
    # offset from the receipt time: late, a little early, or beyond max_future_skew_s
    ts_ms=st.one_of(st.integers(-3000, 200), st.integers(-3000, 8000)),
    source=st.sampled_from(["s1", "s2", "s3"]),
)
# an event is a tick or a sweep (None), after a pause: usually short, sometimes long
PAUSES = st.one_of(st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.floats(0.0, 15.0))
EVENTS = st.lists(st.tuples(PAUSES, st.one_of(st.none(), TICKS, TICKS)), min_size=10, max_size=60)
SETTINGS = st.builds(
    GuardSettings,
    stale_after_s=st.sampled_from([1.0, 5.0, 10.0]),
    max_mark_index_deviation=st.sampled_from([None, D("0.01"), D("0.05")]),
    hold_on_deviation=st.booleans(),
    max_jump=st.sampled_from([None, D("0.1"), D("0.5")]),
    mark_source=st.sampled_from([None, "s1"]),
    index_sources=st.sampled_from([(), ("s1", "s2"), ("s2", "s3", "s1")]),
    max_future_skew_s=st.sampled_from([1.0, 5.0]),
)
FAMILY = {
    AlertType.FEED_STALE: "feed",
    AlertType.FEED_RESUMED: "feed",
    AlertType.PRICE_DEVIATION: "deviation",
    AlertType.PRICE_DEVIATION_CLEARED: "deviation",
}
OPENS = {AlertType.FEED_STALE, AlertType.PRICE_DEVIATION}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, symbol_settings=SETTINGS)
def test_any_tick_sequence_is_handled_and_alerts_pair_up(
    events: list[tuple[float, PriceTick | None]], symbol_settings: GuardSettings
) -> None:
    """on_tick never raises, verdicts agree with the rules, and alerts open and close in pairs.

    Both symbols are watched from the start (A with the drawn settings, B with the
    defaults); the two alerts of a pair name the same episode.
    """
    guard = PriceGuards({"A": symbol_settings})
    guard.watch("A", 0.0, 0)
    guard.watch("B", 0.0, 0)
    now_s = 0.0
    open_alert: dict[tuple[str, str], Alert] = {}
    last_mark_ts: dict[str, int] = {}
    for pause_s, event in events:
        now_s += pause_s
        if event is None:
            alerts = guard.sweep(now_s)
        else:
            tick = replace(event, ts_ms=int(now_s * 1000) + event.ts_ms)
            verdict = guard.on_tick(tick, now_s, int(now_s * 1000))
            alerts = list(verdict.alerts)
            assert verdict.accepted == (verdict.reason is None)
            if verdict.accepted:
                assert tick.price.is_finite() and tick.price > 0
                assert tick.ts_ms <= guard.ts_ceiling_ms(tick.symbol, int(now_s * 1000))
            else:
                assert () == verdict.alerts
            if verdict.accepted and tick.kind == MARK:
                assert tick is verdict.mark
                assert tick.ts_ms >= last_mark_ts.get(tick.symbol, tick.ts_ms)
                last_mark_ts[tick.symbol] = tick.ts_ms
                assert guard.may_decide(tick.symbol, now_s)
            else:
                assert verdict.mark is None
        for alert in alerts:
            assert now_s == alert.at_s
            key = (alert.symbol, FAMILY[alert.type])
            was_open = key in open_alert
            assert was_open != (alert.type in OPENS), f"{alert.type} after {open_alert.get(key)}"
            if alert.type in OPENS:
                open_alert[key] = alert
            else:
                assert open_alert.pop(key).episode_ms == alert.episode_ms
        for symbol in ("A", "B"):
            state = guard.state(symbol, now_s)
            if (symbol, "feed") in open_alert:
                assert state.stale and not guard.may_decide(symbol, now_s)
            assert ((symbol, "deviation") in open_alert) == state.deviating
            if state.holding or not guard.may_decide(symbol, now_s):
                assert not guard.may_liquidate(symbol, now_s)
