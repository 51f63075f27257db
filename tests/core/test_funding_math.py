"""Funding in the core: the payment per contract kind and side, the decision, the schedule."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from example_contracts import BTCUSDT
from hypothesis import given
from hypothesis import strategies as st

from monitor.core import topics
from monitor.core.errors import Rejection
from monitor.core.evaluation import Quote, evaluate, event_id, triggers_for
from monitor.core.funding import (
    MAX_ANNOUNCED,
    FundingRate,
    FundingRule,
    FundingSchedule,
    apply_funding,
    funding_from_payload,
    margin_change,
    payment,
    rule_for,
)
from monitor.core.margin import Bracket, Contract, ContractKind, Side, assess
from monitor.core.position import PositionRecord
from monitor.core.status import (
    TRANSITIONS,
    Cause,
    EventType,
    IllegalTransition,
    RiskLimits,
    Status,
    event_for,
    next_status,
)

pytestmark = pytest.mark.unit

BTCUSD = Contract(
    "BTCUSD",
    ContractKind.INVERSE,
    (Bracket(None, Decimal("0.004"), Decimal(0)),),
    contract_size=Decimal(100),
)
RISK = RiskLimits()
NOW_MS = 1_732_400_000_999
FUNDING_TS = 1_732_406_400_000


def record(
    side: str = "long",
    status: Status = Status.HEALTHY,
    margin: str = "3000",
    qty: str = "0.5",
    symbol: str = "BTCUSDT",
    transitions: int = 0,
) -> PositionRecord:
    """A long (or short) of ``qty`` at 60,000 with ``margin``, stored at ``status``."""
    return PositionRecord(
        "p-1",
        "acct-42",
        symbol,
        Side(side),
        Decimal(qty),
        Decimal(60000),
        Decimal(margin),
        3,
        status,
        transitions,
    )


def quote(mark: str) -> Quote:
    return Quote(Decimal(mark), 7, Decimal(mark))


def rate(value: str, symbol: str = "BTCUSDT") -> FundingRate:
    return FundingRate(symbol, Decimal(value), FUNDING_TS)


# --- the payment -----------------------------------------------------------------------------


def test_a_linear_long_pays_size_times_mark_times_rate_and_a_short_receives_it() -> None:
    """0.5 BTC at a mark of 60,000 and a rate of 0.01 %: the long pays 3 USDT, the short gets 3."""
    assert payment(BTCUSDT, Side.LONG, Decimal("0.5"), Decimal(60000), Decimal("0.0001")) == 3
    assert margin_change(BTCUSDT, record("long"), Decimal(60000), Decimal("0.0001")) == -3
    assert margin_change(BTCUSDT, record("short"), Decimal(60000), Decimal("0.0001")) == 3


def test_a_negative_rate_makes_longs_receive_and_shorts_pay() -> None:
    """Rate −0.01 %: the long's margin grows by 3, the short's shrinks by 3."""
    assert margin_change(BTCUSDT, record("long"), Decimal(60000), Decimal("-0.0001")) == 3
    assert margin_change(BTCUSDT, record("short"), Decimal(60000), Decimal("-0.0001")) == -3


def test_an_inverse_payment_is_in_coin_contracts_times_contract_value_over_mark() -> None:
    """10 contracts of 100 USD at a mark of 50,000 and 0.01 %: the long pays 0.000002 BTC."""
    held = record("long", margin="0.01", qty="10", symbol="BTCUSD")
    change = margin_change(BTCUSD, held, Decimal(50000), Decimal("0.0001"))
    assert change == Decimal("-0.000002")


def test_a_position_pays_at_most_its_margin() -> None:
    """A payment larger than the margin takes the margin, not more."""
    held = record("long", margin="2")
    assert margin_change(BTCUSDT, held, Decimal(60000), Decimal("0.0001")) == -2


def test_bybit_takes_payments_from_the_margin_and_credits_receipts_elsewhere() -> None:
    """Bybit's rule: a long pays out of its margin at a positive rate, receives nothing there
    at a negative one (Bybit pays it into the available balance)."""
    assert rule_for("bybit") is FundingRule.DEBIT_ONLY
    assert rule_for("okx") is rule_for("binance") is rule_for("gate") is FundingRule.MARGIN
    debit = FundingRule.DEBIT_ONLY
    assert margin_change(BTCUSDT, record(), Decimal(60000), Decimal("0.0001"), debit) == -3
    assert margin_change(BTCUSDT, record(), Decimal(60000), Decimal("-0.0001"), debit) == 0


# --- the decision ----------------------------------------------------------------------------


def test_a_payment_that_pushes_a_position_under_maintenance_liquidates_it_at_once() -> None:
    """A healthy long at 54,300 (ratio 0.72) paying 0.2 % (54.30) falls under its MM of 108.60:
    funding_applied, then liquidation, each with the next transition's id."""
    decision = apply_funding(BTCUSDT, record(), rate("0.002"), quote("54300"), RISK, NOW_MS)
    assert decision is not None
    assert [event.type for event in decision.events] == [
        EventType.FUNDING_APPLIED,
        EventType.LIQUIDATION,
    ]
    assert [event.event_id for event in decision.events] == ["p-1:3:1", "p-1:3:2"]
    funded, liquidated = (event.payload for event in decision.events)
    assert (funded["amount"], funded["margin_before"], funded["margin"]) == (
        "-54.3",
        "3000",
        "2945.7",
    )
    assert (funded["funding_rate"], funded["funding_time"], funded["mark_price"]) == (
        "0.002",
        FUNDING_TS,
        "54300",
    )
    assert liquidated["margin"] == "2945.7"
    assert decision.record.status is Status.LIQUIDATED
    assert decision.record.margin == Decimal("2945.7")
    assert decision.triggers == triggers_for(BTCUSDT, decision.record, RISK)


def test_a_payment_received_clears_a_margin_call() -> None:
    """A long in margin call at 54,280 (ratio 0.78) receiving 0.1 % (27.14) drops to 0.65,
    under the clearing ratio: funding_applied, then margin_call_cleared."""
    held = record(status=Status.MARGIN_CALL, transitions=1)
    decision = apply_funding(BTCUSDT, held, rate("-0.001"), quote("54280"), RISK, NOW_MS)
    assert decision is not None
    assert [event.type for event in decision.events] == [
        EventType.FUNDING_APPLIED,
        EventType.MARGIN_CALL_CLEARED,
    ]
    assert decision.amount == Decimal("27.14")
    assert decision.record.status is Status.HEALTHY
    assert decision.record.transitions == 3


def test_a_payment_that_changes_no_status_emits_funding_applied_alone() -> None:
    """A healthy long far from its triggers pays 3 USDT: one event, still healthy, triggers
    at the new margin."""
    decision = apply_funding(BTCUSDT, record(), rate("0.0001"), quote("60000"), RISK, NOW_MS)
    assert decision is not None
    assert [event.type for event in decision.events] == [EventType.FUNDING_APPLIED]
    assert decision.record == replace(record(), margin=Decimal(2997), transitions=1)
    assert decision.triggers == triggers_for(BTCUSDT, decision.record, RISK)


def test_without_judging_the_new_margin_waits_for_the_next_tick() -> None:
    """judge=False (a stale mark): the liquidating payment only moves the margin and the
    triggers; the first fresh tick decides the status."""
    decision = apply_funding(
        BTCUSDT, record(), rate("0.002"), quote("54300"), RISK, NOW_MS, judge=False
    )
    assert decision is not None
    assert [event.type for event in decision.events] == [EventType.FUNDING_APPLIED]
    assert decision.record.status is Status.HEALTHY
    after = evaluate(BTCUSDT, decision.record, quote("54300"), RISK, NOW_MS)
    assert after.event is not None and after.event.type is EventType.LIQUIDATION


@pytest.mark.parametrize("status", [Status.LIQUIDATED, Status.CLOSED])
def test_a_liquidated_or_closed_position_pays_nothing(status: Status) -> None:
    """No funding moves a position that is no longer open."""
    assert (
        apply_funding(BTCUSDT, record(status=status), rate("0.01"), quote("60000"), RISK, 1) is None
    )


def test_a_zero_rate_moves_nothing() -> None:
    """Rate 0: no write and no event."""
    assert apply_funding(BTCUSDT, record(), rate("0"), quote("60000"), RISK, NOW_MS) is None


def test_funding_rows_keep_an_open_status_and_emit_funding_applied() -> None:
    """The table's funding rows: healthy and margin_call stay, each emitting funding_applied;
    a funding move from a closed or liquidated position is illegal."""
    rows = {(a, b): e for (a, b, cause), e in TRANSITIONS.items() if cause is Cause.FUNDING}
    assert rows == {
        (Status.HEALTHY, Status.HEALTHY): EventType.FUNDING_APPLIED,
        (Status.MARGIN_CALL, Status.MARGIN_CALL): EventType.FUNDING_APPLIED,
    }
    with pytest.raises(IllegalTransition):
        event_for(Status.LIQUIDATED, Status.LIQUIDATED, Cause.FUNDING)


marks = st.decimals(min_value=1000, max_value=200000, places=1)
rates = st.decimals(min_value="-0.003", max_value="0.003", places=6)
sizes = st.decimals(min_value="0.001", max_value=5, places=3)
margins = st.decimals(min_value=1, max_value=50000, places=2)


@given(st.sampled_from(Side), sizes, margins, marks, rates)
def test_funding_moves_the_margin_by_the_payment_and_the_mark_judges_the_result(
    side: Side, qty: Decimal, margin: Decimal, mark: Decimal, funding_rate: Decimal
) -> None:
    """For any linear position: the margin moves by −sign·qty·mark·rate (capped at the margin,
    never below 0), the first event is funding_applied with that amount, and the status after
    is what the mark makes of the new margin."""
    held = PositionRecord("p", "a", "BTCUSDT", side, qty, mark, margin, 1)
    decision = apply_funding(
        BTCUSDT, held, FundingRate("BTCUSDT", funding_rate, 1), quote(str(mark)), RISK, 5
    )
    expected = max(-side.sign * qty * mark * funding_rate, -margin)
    if expected == 0:
        assert decision is None
        return
    assert decision is not None
    assert decision.amount == expected
    assert decision.record.margin == margin + expected >= 0
    assert decision.events[0].payload["amount"] == str(expected.normalize())
    assert decision.events[0].event_id == event_id("p", 1, 1)
    funded = replace(held, margin=margin + expected)
    judged = next_status(Status.HEALTHY, assess(BTCUSDT, funded, mark), RISK)
    assert decision.record.status is judged
    assert len(decision.events) == (1 if judged is Status.HEALTHY else 2)


@given(sizes, margins, marks, rates)
def test_a_long_and_a_short_of_one_size_move_by_opposite_amounts(
    qty: Decimal, margin: Decimal, mark: Decimal, funding_rate: Decimal
) -> None:
    """What longs pay, shorts of the same size receive (when neither hits its margin)."""
    long_ = PositionRecord("l", "a", "BTCUSDT", Side.LONG, qty, mark, margin, 1)
    short = replace(long_, id="s", side=Side.SHORT)
    paid = margin_change(BTCUSDT, long_, mark, funding_rate)
    received = margin_change(BTCUSDT, short, mark, funding_rate)
    if -margin < paid < margin:
        assert paid == -received


# --- the MQTT payload ------------------------------------------------------------------------


def test_a_funding_payload_gives_the_rate_and_funding_time() -> None:
    """``{"rate": "0.0001", "ts": ...}`` on the symbol's topic."""
    parsed = funding_from_payload(b'{"rate": "-0.000125", "ts": 1732406400000}', "BTCUSDT", 1024)
    assert parsed == FundingRate("BTCUSDT", Decimal("-0.000125"), 1732406400000)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", "not_json"),
        (b'["0.0001"]', "bad_shape"),
        (b'{"rate": 0.0001, "ts": 1732406400000}', "bad_decimal"),
        (b'{"rate": "0.5", "ts": 1732406400000}', "bad_decimal"),
        (b'{"rate": "NaN", "ts": 1732406400000}', "bad_decimal"),
        (b'{"rate": "0.0001", "ts": "1732406400000"}', "bad_timestamp"),
        (b'{"rate": "0.0001"}', "bad_timestamp"),
    ],
)
def test_a_bad_funding_payload_is_rejected_with_its_reason(payload: bytes, reason: str) -> None:
    """Each malformed payload names what is wrong."""
    with pytest.raises(Rejection) as caught:
        funding_from_payload(payload, "BTCUSDT", 1024)
    assert caught.value.reason == reason


# --- the schedule ----------------------------------------------------------------------------


def test_a_funding_time_comes_due_once_with_the_last_rate_announced() -> None:
    """Announced again and again with a changing rate, a funding time is handed over once,
    at its time, with the latest rate; announcing it after that is refused."""
    schedule = FundingSchedule()
    assert schedule.announce(rate("0.0001"))
    assert schedule.announce(rate("0.0002"))
    assert schedule.due(FUNDING_TS - 1) == []
    assert schedule.due(FUNDING_TS) == [rate("0.0002")]
    assert schedule.due(FUNDING_TS + 10) == []
    assert not schedule.announce(rate("0.0003"))


def test_funding_times_come_due_oldest_first_across_symbols() -> None:
    """Two symbols, two funding times each: due in time order."""
    schedule = FundingSchedule()
    later = FundingRate("BTCUSDT", Decimal("0.0001"), FUNDING_TS + 8 * 3600_000)
    for funding in (later, rate("0.0001"), rate("0.0003", "BTCUSD")):
        schedule.announce(funding)
    due = schedule.due(FUNDING_TS + 9 * 3600_000)
    assert [(f.symbol, f.funding_ts_ms) for f in due] == [
        ("BTCUSDT", FUNDING_TS),
        ("BTCUSD", FUNDING_TS),
        ("BTCUSDT", FUNDING_TS + 8 * 3600_000),
    ]


def test_a_funding_time_that_could_not_be_applied_comes_due_again() -> None:
    """retry() hands a funding time over at the next due()."""
    schedule = FundingSchedule()
    schedule.announce(rate("0.0001"))
    [funding] = schedule.due(FUNDING_TS)
    schedule.retry(funding)
    assert schedule.due(FUNDING_TS) == [funding]


def test_the_schedule_holds_a_bounded_number_of_funding_times_per_symbol() -> None:
    """Past MAX_ANNOUNCED pending funding times of a symbol, new ones are refused."""
    schedule = FundingSchedule()
    for n in range(MAX_ANNOUNCED):
        assert schedule.announce(FundingRate("BTCUSDT", Decimal(0), FUNDING_TS + n))
    assert not schedule.announce(FundingRate("BTCUSDT", Decimal(0), FUNDING_TS + MAX_ANNOUNCED))
    assert schedule.announce(FundingRate("BTCUSDT", Decimal(1), FUNDING_TS))
    assert len(schedule.pending("BTCUSDT")) == MAX_ANNOUNCED


def test_the_funding_topic_names_its_symbol() -> None:
    """``{prefix}/funding/{symbol}`` is built and read back; other topics are not funding."""
    assert topics.funding("liqmon", "BTCUSDT") == "liqmon/funding/BTCUSDT"
    assert topics.funding_filter("liqmon") == "liqmon/funding/+"
    assert topics.funding_symbol("other/funding/ETHUSD") == "ETHUSD"
    assert topics.funding_symbol("liqmon/prices/BTCUSDT/mark") is None
    assert topics.funding_symbol("liqmon/funding/BTCUSDT/extra") is None
