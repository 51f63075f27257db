"""Coalescing marks: three kept per symbol, never a crossing skipped, one worker per symbol;
and the marks held back for a hand-over."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.tick import PriceKind, PriceTick
from monitor.core.coalescing import Coalescing, HeldBack, Mark, Offered

pytestmark = pytest.mark.unit

SYMBOL = "BTCUSDT"


def mark(price: int, ts_ms: int, received_s: float = 0.0, symbol: str = SYMBOL) -> Mark:
    """A mark of ``symbol`` at ``price``, stamped ``ts_ms``, received at ``received_s``."""
    return Mark(PriceTick(symbol, PriceKind.MARK, Decimal(price), ts_ms, "test"), received_s)


def prices(marks: list[Mark]) -> list[tuple[int, int]]:
    """(price, ts_ms) of each mark, for readable comparisons."""
    return [(int(m.tick.price), m.tick.ts_ms) for m in marks]


# --- Coalescing --------------------------------------------------------------------------------


def test_a_first_mark_makes_its_symbol_ready_and_later_ones_fold_in() -> None:
    """Only the first mark of an idle symbol asks for a worker; the next ones join it."""
    coalescing = Coalescing()
    assert Offered.READY is coalescing.offer(mark(100, 1))
    assert Offered.FOLDED is coalescing.offer(mark(101, 2))
    assert Offered.READY is coalescing.offer(mark(5, 1, symbol="ETHUSDT"))
    assert 2 == coalescing.backlog


def test_a_mark_older_than_the_last_offered_is_stale_and_not_kept() -> None:
    """A mark stamped before the last one offered is dropped; one stamped the same is kept."""
    coalescing = Coalescing()
    coalescing.offer(mark(100, 5))
    assert Offered.STALE is coalescing.offer(mark(1, 4))
    assert Offered.FOLDED is coalescing.offer(mark(102, 5))
    assert [(100, 5), (102, 5)] == prices(coalescing.take(SYMBOL))


def test_falling_behind_keeps_the_low_the_high_and_the_last_in_time_order() -> None:
    """Six marks waiting: the lowest, the highest and the last are evaluated, oldest first."""
    coalescing = Coalescing()
    for ts_ms, price in enumerate([100, 97, 91, 95, 120, 110], 1):
        coalescing.offer(mark(price, ts_ms, received_s=ts_ms / 10))
    taken = coalescing.take(SYMBOL)
    assert [(91, 3), (120, 5), (110, 6)] == prices(taken)
    assert [0.3, 0.5, 0.6] == [m.received_s for m in taken]


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([100], [(100, 1)]),
        ([100, 90], [(100, 1), (90, 2)]),
        ([100, 100, 100], [(100, 1), (100, 3)]),  # the first of equal prices is the extreme
        ([90, 100, 95], [(90, 1), (100, 2), (95, 3)]),
    ],
)
def test_a_mark_that_is_both_an_extreme_and_the_last_is_evaluated_once(
    sequence: list[int], expected: list[tuple[int, int]]
) -> None:
    """The last mark is never repeated, even when it is also the low or the high."""
    coalescing = Coalescing()
    for ts_ms, price in enumerate(sequence, 1):
        coalescing.offer(mark(price, ts_ms))
    assert expected == prices(coalescing.take(SYMBOL))


def test_a_symbol_being_evaluated_is_handed_out_again_only_when_done() -> None:
    """Marks arriving while a worker has the symbol wait; done() says to hand it out again."""
    coalescing = Coalescing()
    coalescing.offer(mark(100, 1))
    assert [(100, 1)] == prices(coalescing.take(SYMBOL))
    assert coalescing.busy
    assert Offered.FOLDED is coalescing.offer(mark(99, 2))
    assert coalescing.done(SYMBOL)
    assert not coalescing.busy
    assert [(99, 2)] == prices(coalescing.take(SYMBOL))
    assert not coalescing.done(SYMBOL)
    assert (False, 0) == (coalescing.busy, coalescing.backlog)


def test_taking_a_symbol_with_nothing_waiting_takes_nothing() -> None:
    """An empty take leaves the symbol free: its next mark asks for a worker again."""
    coalescing = Coalescing()
    assert [] == coalescing.take(SYMBOL)
    assert not coalescing.busy
    assert Offered.READY is coalescing.offer(mark(100, 1))


# One step of a run: a mark offered (symbol, price, how far its ts moves), or a worker
# taking a symbol, or a worker finishing it.
_offers = st.tuples(st.just("offer"), st.sampled_from("AB"), st.integers(1, 50), st.integers(-3, 5))
_workers = st.tuples(st.sampled_from(["take", "done"]), st.sampled_from("AB"))


@given(st.lists(st.one_of(_offers, _workers), max_size=80))
def test_coalescing_never_skips_a_crossing(steps: list[tuple[object, ...]]) -> None:
    """Whatever the marks and however late the workers, every trigger price the offered
    marks crossed (down or up), the evaluated ones cross too; the last mark is always
    evaluated; nothing is evaluated twice or out of order; and a symbol with marks waiting
    and no worker always has exactly one wake-up outstanding."""
    coalescing = Coalescing()
    last_ts: dict[str, int] = {}
    since_take: dict[str, list[Mark]] = {"A": [], "B": []}
    wakeups = {"A": 0, "B": 0}
    working: set[str] = set()
    evaluated: list[Mark] = []

    def take(symbol: str) -> None:
        wakeups[symbol] -= 1
        taken = coalescing.take(symbol)
        working.add(symbol)
        offered = since_take[symbol]
        since_take[symbol] = []
        assert bool(taken) == bool(offered)
        if not offered:
            return
        assert taken[-1] == offered[-1]
        assert [m.tick.ts_ms for m in taken] == sorted(m.tick.ts_ms for m in taken)
        assert set(taken) <= set(offered)
        for level in {m.tick.price for m in offered}:
            assert any(m.tick.price <= level for m in taken)
            assert any(m.tick.price >= level for m in taken)
        evaluated.extend(taken)

    for n, step in enumerate(steps):
        if step[0] == "offer":
            _, symbol, price, move = step
            assert isinstance(symbol, str) and isinstance(price, int) and isinstance(move, int)
            ts_ms = last_ts.get(symbol, 100) + move
            # Each mark's receipt time is its step number: marks are told apart by value.
            new = mark(price, ts_ms, received_s=n, symbol=symbol)
            offered = coalescing.offer(new)
            if ts_ms < last_ts.get(symbol, -1):
                assert Offered.STALE is offered
                continue
            last_ts[symbol] = ts_ms
            since_take[symbol].append(new)
            if offered is Offered.READY:
                wakeups[symbol] += 1
        elif step[0] == "take" and wakeups[str(step[1])] and str(step[1]) not in working:
            take(str(step[1]))
        elif step[0] == "done" and step[1] in working:
            symbol = str(step[1])
            working.discard(symbol)
            if coalescing.done(symbol):
                wakeups[symbol] += 1
        for symbol in "AB":
            waiting = bool(since_take[symbol]) and symbol not in working
            assert wakeups[symbol] == (1 if waiting else 0)
    for symbol in "AB":
        working.discard(symbol)
        if coalescing.done(symbol):
            wakeups[symbol] += 1
        if wakeups[symbol]:
            take(symbol)
    assert 0 == coalescing.backlog
    assert len(set(evaluated)) == len(evaluated)


# --- HeldBack ----------------------------------------------------------------------------------


def test_held_back_marks_come_out_as_low_high_and_last_in_time_order() -> None:
    """A hand-over evaluates the extremes and the last of what another monitor was given."""
    held = HeldBack(window_s=6.0)
    for ts_ms, price in enumerate([100, 80, 130, 110], 1):
        held.offer(mark(price, ts_ms, received_s=10.0 + ts_ms))
    assert [(80, 2), (130, 3), (110, 4)] == prices(held.take(SYMBOL, 15.0))
    assert [] == held.take(SYMBOL, 15.0), "taken once"


def test_held_back_marks_start_afresh_after_the_window() -> None:
    """Marks older than the window when a newer one arrives were the holder's business."""
    held = HeldBack(window_s=6.0)
    held.offer(mark(50, 1, received_s=10.0))
    held.offer(mark(100, 2, received_s=16.5))
    held.offer(mark(101, 3, received_s=17.0))
    assert [(100, 2), (101, 3)] == prices(held.take(SYMBOL, 18.0))


def test_held_back_marks_too_old_at_the_take_over_are_forgotten() -> None:
    """Two windows after the first held mark, a take-over evaluates only the stored mark."""
    held = HeldBack(window_s=6.0)
    held.offer(mark(50, 1, received_s=10.0))
    assert [] == held.take(SYMBOL, 22.5)
    held.offer(mark(50, 1, received_s=10.0))
    assert [(50, 1)] == prices(held.take(SYMBOL, 22.0))


@given(
    st.lists(st.tuples(st.integers(1, 50), st.floats(0.0, 3.0)), min_size=1, max_size=40),
    st.floats(0.0, 30.0),
)
def test_held_back_never_skips_a_crossing_within_the_window(
    steps: list[tuple[int, float]], wait_s: float
) -> None:
    """Of the marks held since the window last restarted, every price level crossed is crossed
    by what the take-over evaluates (unless two windows have passed: then nothing is)."""
    window_s = 5.0
    held = HeldBack(window_s)
    now_s, first_s = 0.0, 0.0
    kept: list[Mark] = []
    for ts_ms, (price, gap_s) in enumerate(steps):
        now_s += gap_s
        if not kept or now_s - first_s > window_s:
            kept, first_s = [], now_s
        kept.append(mark(price, ts_ms, received_s=now_s))
        held.offer(kept[-1])
    taken = held.take(SYMBOL, now_s + wait_s)
    if now_s + wait_s - first_s > 2 * window_s:
        assert [] == taken
        return
    assert taken[-1] == kept[-1]
    for level in {m.tick.price for m in kept}:
        assert any(m.tick.price <= level for m in taken)
        assert any(m.tick.price >= level for m in taken)
