"""The life of a position: the transition table, hysteresis, new versions, and trigger prices."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from itertools import product

import pytest
from example_contracts import BTCUSDT
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.evaluation import (
    Quote,
    Triggers,
    apply_update,
    evaluate,
    event_id,
    triggers_for,
)
from monitor.core.margin import (
    MarginState,
    Side,
    liquidation_price,
    ratio_price,
)
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import (
    TRANSITIONS,
    Cause,
    EventType,
    IllegalTransition,
    RiskLimits,
    Status,
    event_for,
    next_status,
    version_status,
)

pytestmark = pytest.mark.unit

RISK = RiskLimits()
NOW_MS = 1_732_400_000_999

# A long of 0.5 at 60,000 with margin 3,000 (first tier, MM = 0.002·P):
LONG_LIQ = Decimal(27000) / Decimal("0.498")  # MB = MM               54216.867...
LONG_CALL = Decimal(21600) / Decimal("0.398")  # MM/MB = 0.8           54271.356...
LONG_CLEAR = Decimal(18900) / Decimal("0.348")  # MM/MB = 0.7          54310.344...
# ... and the same short:
SHORT_LIQ = Decimal(33000) / Decimal("0.502")  # 65737.051...
SHORT_CALL = Decimal(26400) / Decimal("0.402")  # 65671.641...
SHORT_CLEAR = Decimal(65625)


def update(
    side: str = "long", margin: str = "3000", seq: int = 1, qty: str = "0.5", pid: str = "p-1"
) -> PositionUpdate:
    return PositionUpdate(
        pid, "acct-42", "BTCUSDT", Side(side), Decimal(qty), Decimal(60000), Decimal(margin), seq
    )


def record(
    status: Status, side: str = "long", seq: int = 1, transitions: int = 0
) -> PositionRecord:
    """A stored record of the default position at ``status``."""
    base = PositionRecord.from_update(update(side, seq=seq), status)
    return replace(base, transitions=transitions)


def quote(mark: str, ts_ms: int = 7, index: str | None = "54190") -> Quote:
    return Quote(Decimal(mark), ts_ms, Decimal(index) if index else None)


def state(ratio: str, liquidatable: bool = False) -> MarginState:
    """A margin state with the given ratio (MB = 100, MM = 100·ratio)."""
    balance = Decimal(100)
    mm = balance * Decimal(ratio)
    if liquidatable:
        mm = balance + 1
    return MarginState(Decimal(1), Decimal(1), Decimal(0), balance, mm, mm / balance)


# --- the table -------------------------------------------------------------------------------


MARK_MOVES = {(a, b) for a, b, cause in TRANSITIONS if cause is Cause.MARK}
VERSION_MOVES = {(a, b) for a, b, cause in TRANSITIONS if cause is Cause.VERSION}
ILLEGAL = [pair for pair in product(Status, Status) if pair not in MARK_MOVES]
ILLEGAL_VERSION = [pair for pair in product([None, *Status], Status) if pair not in VERSION_MOVES]


def test_the_table_has_eight_legal_and_eight_illegal_moves() -> None:
    """Of the sixteen (current, new) pairs a mark may cause, exactly the eight listed are legal."""
    assert len(MARK_MOVES) == 8
    assert sorted(ILLEGAL) == sorted(
        [
            (Status.HEALTHY, Status.CLOSED),
            (Status.MARGIN_CALL, Status.CLOSED),
            (Status.LIQUIDATED, Status.HEALTHY),
            (Status.LIQUIDATED, Status.MARGIN_CALL),
            (Status.LIQUIDATED, Status.CLOSED),
            (Status.CLOSED, Status.HEALTHY),
            (Status.CLOSED, Status.MARGIN_CALL),
            (Status.CLOSED, Status.LIQUIDATED),
        ]
    )


def test_a_new_version_moves_by_rows_of_its_own_and_says_nothing() -> None:
    """A version closes anything, reopens a liquidated or closed position healthy, carries a
    margin call, starts a first version healthy, and never emits an event by itself."""
    assert {pair: TRANSITIONS[(*pair, Cause.VERSION)] for pair in VERSION_MOVES} == {
        (None, Status.HEALTHY): None,
        (Status.HEALTHY, Status.HEALTHY): None,
        (Status.MARGIN_CALL, Status.MARGIN_CALL): None,
        (Status.LIQUIDATED, Status.HEALTHY): None,
        (Status.CLOSED, Status.HEALTHY): None,
        (None, Status.CLOSED): None,
        (Status.HEALTHY, Status.CLOSED): None,
        (Status.MARGIN_CALL, Status.CLOSED): None,
        (Status.LIQUIDATED, Status.CLOSED): None,
        (Status.CLOSED, Status.CLOSED): None,
    }


@pytest.mark.parametrize(("current", "new"), ILLEGAL)
def test_a_move_not_in_the_table_raises(current: Status, new: Status) -> None:
    """A status move outside the table raises IllegalTransition naming both ends."""
    with pytest.raises(IllegalTransition) as caught:
        event_for(current, new)
    assert str(caught.value) == f"{current} -> {new}"


@pytest.mark.parametrize(("current", "new"), ILLEGAL_VERSION)
def test_a_version_move_not_in_the_table_raises(current: Status | None, new: Status) -> None:
    """A new version may not, say, jump straight to liquidated: that takes a mark."""
    with pytest.raises(IllegalTransition) as caught:
        event_for(current, new, Cause.VERSION)
    assert str(caught.value) == f"{current} -> {new} (version)"


@pytest.mark.parametrize("stored", [None, *Status])
@pytest.mark.parametrize("closes", [False, True])
def test_the_status_a_version_starts_at_is_a_row_of_the_table(
    stored: Status | None, closes: bool
) -> None:
    """Whatever was stored, and whether the version closes or not, its move is in the table."""
    new = version_status(stored, closes)
    assert (stored, new, Cause.VERSION) in TRANSITIONS
    assert (new is Status.CLOSED) == closes


def test_each_legal_move_emits_its_events() -> None:
    """Entering and clearing a margin call and liquidating emit one event each; staying, none."""
    assert {pair: event_for(*pair) for pair in MARK_MOVES} == {
        (Status.HEALTHY, Status.HEALTHY): None,
        (Status.HEALTHY, Status.MARGIN_CALL): EventType.MARGIN_CALL,
        (Status.HEALTHY, Status.LIQUIDATED): EventType.LIQUIDATION,
        (Status.MARGIN_CALL, Status.MARGIN_CALL): None,
        (Status.MARGIN_CALL, Status.HEALTHY): EventType.MARGIN_CALL_CLEARED,
        (Status.MARGIN_CALL, Status.LIQUIDATED): EventType.LIQUIDATION,
        (Status.LIQUIDATED, Status.LIQUIDATED): None,
        (Status.CLOSED, Status.CLOSED): None,
    }


# --- next_status: hysteresis -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "ratio", "expected"),
    [
        (Status.HEALTHY, "0.5", Status.HEALTHY),
        (Status.HEALTHY, "0.75", Status.HEALTHY),
        (Status.HEALTHY, "0.7999999", Status.HEALTHY),
        (Status.HEALTHY, "0.8", Status.MARGIN_CALL),
        (Status.HEALTHY, "0.95", Status.MARGIN_CALL),
        (Status.MARGIN_CALL, "0.95", Status.MARGIN_CALL),
        (Status.MARGIN_CALL, "0.8", Status.MARGIN_CALL),
        (Status.MARGIN_CALL, "0.75", Status.MARGIN_CALL),
        (Status.MARGIN_CALL, "0.7", Status.MARGIN_CALL),
        (Status.MARGIN_CALL, "0.6999999", Status.HEALTHY),
        (Status.MARGIN_CALL, "0.1", Status.HEALTHY),
        (Status.LIQUIDATED, "0.1", Status.LIQUIDATED),
        (Status.LIQUIDATED, "0.9", Status.LIQUIDATED),
        (Status.CLOSED, "0.1", Status.CLOSED),
        (Status.CLOSED, "0.9", Status.CLOSED),
    ],
)
def test_margin_calls_enter_at_0_8_and_clear_below_0_7(
    current: Status, ratio: str, expected: Status
) -> None:
    """A margin call starts at ratio 0.8, holds down to 0.7, clears below it; terminal stays."""
    assert next_status(current, state(ratio), RISK) is expected


@pytest.mark.parametrize("current", list(Status))
def test_liquidatable_wins_unless_closed(current: Status) -> None:
    """MB ≤ MM liquidates a healthy or margin-called position; a closed one stays closed."""
    expected = Status.CLOSED if current is Status.CLOSED else Status.LIQUIDATED
    assert next_status(current, state("0.1", liquidatable=True), RISK) is expected


def test_liquidatable_at_exact_equality() -> None:
    """A margin balance exactly equal to the maintenance margin is already liquidatable."""
    exact = MarginState(Decimal(1), Decimal(1), Decimal(0), Decimal(50), Decimal(50), Decimal(1))
    assert next_status(Status.HEALTHY, exact, RISK) is Status.LIQUIDATED


def test_thresholds_come_from_the_risk_limits() -> None:
    """With a 0.9 / 0.5 configuration, 0.85 is healthy from healthy and a call stays at 0.55."""
    risk = RiskLimits(Decimal("0.9"), Decimal("0.5"))
    assert next_status(Status.HEALTHY, state("0.85"), risk) is Status.HEALTHY
    assert next_status(Status.MARGIN_CALL, state("0.55"), risk) is Status.MARGIN_CALL
    assert next_status(Status.MARGIN_CALL, state("0.45"), risk) is Status.HEALTHY


# --- evaluate and apply_update ---------------------------------------------------------------


def test_evaluate_walks_a_long_through_call_clear_and_liquidation() -> None:
    """A falling, recovering, then crashing mark emits margin_call, cleared, then liquidation."""
    rec = record(Status.HEALTHY)
    seen = []
    for mark in ["55000", "54250", "54300", "54300.5", "54300", "54200", "60000"]:
        decision = evaluate(BTCUSDT, rec, quote(mark), RISK, NOW_MS)
        rec = decision.record
        seen.append((mark, rec.status.value, decision.event.event_id if decision.event else None))
    assert seen == [
        ("55000", "healthy", None),
        ("54250", "margin_call", "p-1:1:1"),
        ("54300", "margin_call", None),  # ratio 0.724: between the thresholds
        ("54300.5", "margin_call", None),
        ("54300", "margin_call", None),
        ("54200", "liquidated", "p-1:1:2"),
        ("60000", "liquidated", None),
    ]
    assert rec.transitions == 2


def test_evaluate_emits_the_full_event_payload() -> None:
    """A liquidation event carries the position, the prices and the margin state as strings."""
    decision = evaluate(BTCUSDT, record(Status.HEALTHY), quote("54200"), RISK, NOW_MS)
    assert decision.event is not None
    assert decision.event.type is EventType.LIQUIDATION
    assert (decision.event.account, decision.event.symbol) == ("acct-42", "BTCUSDT")
    assert decision.event.payload == {
        "schema": 1,
        "event_id": "p-1:1:1",
        "type": "liquidation",
        "position_id": "p-1",
        "account": "acct-42",
        "symbol": "BTCUSDT",
        "side": "long",
        "qty": "0.5",
        "entry_price": "60000",
        "margin": "3000",
        "position_seq": 1,
        "mark_price": "54200",
        "index_price": "54190",
        "price_ts": 7,
        "margin_balance": "100",
        "maintenance_margin": "108.4",
        "margin_ratio": "1.084",
        "liquidation_price": "54216.86746987951807228915663",
        "bankruptcy_price": "54000",
        "emitted_at": NOW_MS,
    }
    assert decision.triggers == Triggers()


def test_event_ids_are_deterministic() -> None:
    """The same transition decided twice gets the same id and payload: id:seq:n."""
    first = evaluate(BTCUSDT, record(Status.HEALTHY, seq=9, transitions=2), quote("54250"), RISK, 1)
    again = evaluate(BTCUSDT, record(Status.HEALTHY, seq=9, transitions=2), quote("54250"), RISK, 1)
    assert first == again
    assert first.event is not None
    assert first.event.event_id == "p-1:9:3" == event_id("p-1", 9, 3)
    assert event_id("desk:p:1", 12, 1) == "desk:p:1:12:1"


@pytest.mark.parametrize("seq", [4, 5])
def test_a_version_that_is_not_newer_is_ignored(seq: int) -> None:
    """An update whose seq is lower than, or equal to, the stored one decides nothing."""
    stored = record(Status.HEALTHY, seq=5)
    assert (
        apply_update(BTCUSDT, stored, update(margin="1", seq=seq), quote("54200"), RISK, 0) is None
    )


def test_the_first_version_without_a_mark_starts_healthy_with_triggers() -> None:
    """Before any mark, a new position is stored healthy with its margin-call trigger."""
    decision = apply_update(BTCUSDT, None, update(), None, RISK, NOW_MS)
    assert decision is not None
    assert decision.record == PositionRecord.from_update(update(), Status.HEALTHY)
    assert decision.triggers == Triggers(down=LONG_CALL)
    assert decision.event is None


def test_a_new_version_is_evaluated_at_once() -> None:
    """A version that is already past its liquidation price at the latest mark liquidates now."""
    decision = apply_update(BTCUSDT, None, update(), quote("54200"), RISK, NOW_MS)
    assert decision is not None
    assert decision.record.status is Status.LIQUIDATED
    assert decision.event is not None
    assert decision.event.event_id == "p-1:1:1"


def test_a_new_version_after_liquidation_starts_healthy() -> None:
    """After a liquidation, a new version with fresh margin is healthy again and says nothing."""
    stored = record(Status.LIQUIDATED, seq=1, transitions=1)
    decision = apply_update(
        BTCUSDT, stored, update(margin="6000", seq=2), quote("54200"), RISK, NOW_MS
    )
    assert decision is not None
    assert (decision.record.status, decision.record.seq, decision.record.transitions) == (
        Status.HEALTHY,
        2,
        0,
    )
    assert decision.event is None


def test_a_top_up_that_does_not_cure_a_margin_call_emits_nothing() -> None:
    """Topping up 3,000 to 3,010 at mark 54,250 (ratio 0.80) keeps the call without a new event."""
    stored = record(Status.MARGIN_CALL, seq=1, transitions=1)
    decision = apply_update(BTCUSDT, stored, update(margin="3010", seq=2), quote("54250"), RISK, 0)
    assert decision is not None
    assert decision.record.status is Status.MARGIN_CALL
    assert decision.record.transitions == 0
    assert decision.event is None


def test_a_top_up_to_exactly_the_clear_ratio_still_does_not_cure() -> None:
    """A top-up to 3,030 at 54,250 brings the ratio to exactly 0.7: the call stays."""
    stored = record(Status.MARGIN_CALL, seq=1, transitions=1)
    decision = apply_update(BTCUSDT, stored, update(margin="3030", seq=2), quote("54250"), RISK, 0)
    assert decision is not None
    assert (decision.record.status, decision.event) == (Status.MARGIN_CALL, None)


def test_a_top_up_that_cures_a_margin_call_emits_cleared() -> None:
    """Topping up to 3,050 at mark 54,250 (ratio 0.62) emits margin_call_cleared for version 2."""
    stored = record(Status.MARGIN_CALL, seq=1, transitions=1)
    decision = apply_update(BTCUSDT, stored, update(margin="3050", seq=2), quote("54250"), RISK, 9)
    assert decision is not None
    assert decision.record.status is Status.HEALTHY
    assert decision.event is not None
    assert decision.event.type is EventType.MARGIN_CALL_CLEARED
    assert decision.event.event_id == "p-1:2:1"
    assert decision.event.payload["margin"] == "3050"
    assert decision.event.payload["margin_ratio"] == "0.62"


def test_qty_zero_leaves_a_closed_tombstone() -> None:
    """A close is stored as a closed record with no triggers and no event, whatever the mark."""
    stored = record(Status.MARGIN_CALL, seq=3, transitions=1)
    closing = update(qty="0", margin="0", seq=4)
    decision = apply_update(BTCUSDT, stored, closing, quote("54200"), RISK, NOW_MS)
    assert decision is not None
    assert decision.record == PositionRecord.from_update(closing, Status.CLOSED)
    assert decision.triggers == Triggers()
    assert decision.event is None
    assert apply_update(BTCUSDT, decision.record, update(seq=3), quote("54200"), RISK, 0) is None


def test_a_version_after_a_close_reopens_healthy() -> None:
    """A newer version after a close is a fresh, healthy position."""
    tombstone = PositionRecord.from_update(update(qty="0", seq=4), Status.CLOSED)
    decision = apply_update(BTCUSDT, tombstone, update(seq=5), quote("60000"), RISK, 0)
    assert decision is not None
    assert (decision.record.status, decision.event) == (Status.HEALTHY, None)
    assert decision.triggers == Triggers(down=LONG_CALL)


def test_a_close_after_a_liquidation_leaves_a_closed_tombstone() -> None:
    """Liquidated, then closed by a version with qty 0: closed, no triggers, nothing said."""
    stored = record(Status.LIQUIDATED, seq=1, transitions=1)
    closing = update(qty="0", margin="0", seq=2)
    decision = apply_update(BTCUSDT, stored, closing, quote("54200"), RISK, NOW_MS)
    assert decision is not None
    assert (decision.record.status, decision.triggers, decision.event) == (
        Status.CLOSED,
        Triggers(),
        None,
    )


def test_a_first_version_that_closes_is_stored_as_a_tombstone() -> None:
    """A close of a position never seen is kept, closed, so older versions after it are ignored."""
    closing = update(qty="0", margin="0", seq=3)
    decision = apply_update(BTCUSDT, None, closing, None, RISK, NOW_MS)
    assert decision is not None
    assert decision.record == PositionRecord.from_update(closing, Status.CLOSED)
    assert apply_update(BTCUSDT, decision.record, update(seq=2), None, RISK, 0) is None


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("mark"), st.integers(50_000, 70_000)),
        st.tuples(st.just("version"), st.sampled_from(["0", "1500", "2800", "3000", "9000"])),
    ),
    max_size=30,
)


@given(_STEPS, st.sampled_from(["long", "short"]), st.booleans())
def test_every_life_moves_only_by_rows_of_the_table(
    steps: list[tuple[str, object]], side: str, hold: bool
) -> None:
    """Any sequence of marks and new versions (closes and reopens included, liquidations
    held or not) moves a position only by rows of the table, and each event is the one its
    row names: Rule 1 and Rule 2 hold across versions."""
    stored: PositionRecord | None = None
    seq = 0
    mark = Decimal(60000)
    for kind, value in steps:
        if kind == "mark":
            mark = Decimal(str(value))
            if stored is None:
                continue
            before = stored.status
            decision = evaluate(BTCUSDT, stored, quote(str(mark)), RISK, 0, not hold)
            moved = decision.record.status
            assert (before, moved, Cause.MARK) in TRANSITIONS
            expected = TRANSITIONS[(before, moved, Cause.MARK)]
        else:
            seq += 1
            closes = value == "0"
            new = update(side, margin=str(value), seq=seq, qty="0" if closes else "0.5")
            before_version = stored.status if stored is not None else None
            decision_or_none = apply_update(BTCUSDT, stored, new, quote(str(mark)), RISK, 0)
            assert decision_or_none is not None
            decision = decision_or_none
            started = version_status(before_version, closes)
            assert (before_version, started, Cause.VERSION) in TRANSITIONS
            moved = decision.record.status
            assert (started, moved, Cause.MARK) in TRANSITIONS
            expected = TRANSITIONS[(started, moved, Cause.MARK)]
        assert expected == (decision.event.type if decision.event else None)
        stored = decision.record


# --- triggers_for ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "side", "expected"),
    [
        (Status.HEALTHY, "long", Triggers(down=LONG_CALL)),
        (Status.MARGIN_CALL, "long", Triggers(down=LONG_LIQ, up=LONG_CLEAR)),
        (Status.LIQUIDATED, "long", Triggers()),
        (Status.CLOSED, "long", Triggers()),
        (Status.HEALTHY, "short", Triggers(up=SHORT_CALL)),
        (Status.MARGIN_CALL, "short", Triggers(down=SHORT_CLEAR, up=SHORT_LIQ)),
        (Status.LIQUIDATED, "short", Triggers()),
        (Status.CLOSED, "short", Triggers()),
    ],
)
def test_trigger_prices_follow_the_table(status: Status, side: str, expected: Triggers) -> None:
    """Healthy watches the margin-call price; a call watches liquidation and clearing; else none."""
    assert triggers_for(BTCUSDT, record(status, side), RISK) == expected


def test_trigger_prices_are_the_margin_functions() -> None:
    """The stored triggers are exactly the liquidation and ratio prices of the margin module."""
    long = record(Status.MARGIN_CALL).position
    assert LONG_LIQ == liquidation_price(BTCUSDT, long)
    assert LONG_CALL == ratio_price(BTCUSDT, long, Decimal("0.8"))
    assert LONG_CLEAR == ratio_price(BTCUSDT, long, Decimal("0.7"))
    short = record(Status.MARGIN_CALL, "short").position
    assert SHORT_LIQ == liquidation_price(BTCUSDT, short)
    assert SHORT_CALL == ratio_price(BTCUSDT, short, Decimal("0.8"))
    assert SHORT_CLEAR == ratio_price(BTCUSDT, short, Decimal("0.7"))


def test_a_long_that_cannot_be_liquidated_has_no_down_trigger() -> None:
    """A fully collateralised long (margin ≥ notional) never reaches a margin call: no trigger."""
    safe = PositionRecord.from_update(update(margin="40000"), Status.HEALTHY)
    assert triggers_for(BTCUSDT, safe, RISK) == Triggers()


def test_rejection_logging_is_throttled_per_source() -> None:
    """A flood logs ten lines per source per window, then one count of what it did not log."""
    from monitor.service.intake import LogThrottle

    throttle = LogThrottle(burst=10, window_s=10.0)
    decisions = [throttle.allow("mqtt", 0.0) for _ in range(25)]
    assert [0] * 10 + [None] * 15 == decisions
    assert 0 == throttle.allow("feed", 0.5)
    assert 15 == throttle.allow("mqtt", 10.0)
    assert 0 == throttle.allow("mqtt", 10.1)
