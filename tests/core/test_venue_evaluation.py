"""The trigger index and the hysteresis hold for every venue model, through the one selection point.

The daemon evaluates a position only when the mark crosses one of its trigger
prices (:func:`~monitor.core.evaluation.triggers_for`). For each venue model,
walking a random price path that way must give exactly the events that
evaluating the position at every mark gives: that is what makes a sorted set
of trigger prices a faithful index, whichever model computed them. And the
status must change exactly at a trigger price: at it, not at its 28-digit
neighbour on the winning side.
"""

from __future__ import annotations

from decimal import Context, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.core.evaluation import Quote, Triggers, evaluate, triggers_for
from monitor.core.margin import Bracket, Contract, ContractKind, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.venues import (
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
    VenueModel,
)

pytestmark = pytest.mark.unit

D = Decimal
RISK = RiskLimits()
LINEAR, INVERSE = ContractKind.LINEAR, ContractKind.INVERSE


ONE = D(1)


def venue(symbol: str, model: VenueModel, size: Decimal = ONE) -> Contract:
    """A contract judged by ``model``, as the configuration builds one."""
    return Contract(symbol, model.kind, (), contract_size=size, model=model)


BINANCE = Contract(
    "BTCUSDT",
    LINEAR,
    (
        Bracket(D(50000), D("0.004"), D(0)),
        Bracket(D(250000), D("0.005"), D(50)),
        Bracket(None, D("0.01"), D(1300)),
    ),
)
BYBIT_ROWS = [
    BybitRiskLimit(D(200000), D("0.005")),
    BybitRiskLimit(D(2000000), D("0.01"), D(1000)),
]
CONTRACTS = {
    "binance": BINANCE,
    "bybit": venue("BYBIT", BybitModel("BYBIT", LINEAR, BYBIT_ROWS)),
    "bybit-inverse": venue(
        "BYBITUSD", BybitModel("BYBITUSD", INVERSE, [BybitRiskLimit(D(150), D("0.005"))])
    ),
    "bybit-inverse-at-mark": venue(
        "BYBITUSDM",
        BybitModel(
            "BYBITUSDM",
            INVERSE,
            [BybitRiskLimit(D(150), D("0.005")), BybitRiskLimit(D(300), D("0.01"), D("0.75"))],
            inverse_value_at_mark=True,
        ),
    ),
    # OKX's MM jumps between tiers (no deduction): 1 % up to 500 contracts, then 2 %, 5 %.
    "okx": venue(
        "OKX",
        OkxModel(
            "OKX",
            LINEAR,
            [
                OkxTier(D(0), D(500), D("0.01")),
                OkxTier(D(501), D(2000), D("0.02")),
                OkxTier(D(2001), D(100000), D("0.05")),
            ],
            D("0.01"),
            D("0.0005"),
        ),
        D("0.01"),
    ),
    "okx-inverse": venue(
        "OKXUSD",
        OkxModel("OKXUSD", INVERSE, [OkxTier(D(0), D(1e6), D("0.005"))], D(100), D("0.0005")),
        D(100),
    ),
    "gate": venue(
        "GATE",
        GateModel(
            "GATE",
            LINEAR,
            [GateTier(D(50000), D("0.004")), GateTier(D(2000000), D("0.01"), D(300))],
            D("0.0001"),
            D("0.00075"),
        ),
        D("0.0001"),
    ),
    "gate-inverse": venue(
        "GATEUSD",
        GateModel("GATEUSD", INVERSE, [GateTier(D(100), D("0.005"))], D(1), D("0.00075")),
    ),
    "hyperliquid": venue(
        "HL",
        HyperliquidModel("HL", [HyperliquidTier(D(0), 50), HyperliquidTier(D(60000), 3)]),
    ),
}

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def record_for(
    contract: Contract, side: Side, qty: Decimal, entry: Decimal, leverage: Decimal
) -> PositionRecord:
    """A fresh healthy record with the isolated margin the venue sets aside for ``leverage``."""
    margin = model_for(contract).isolated_margin(qty, entry, leverage)
    return PositionRecord("p", "a", contract.symbol, side, qty, entry, margin, 1)


def crossed(triggers: Triggers, mark: Decimal) -> bool:
    """Whether ``mark`` fires a trigger: ``down`` at or below it, ``up`` at or above it."""
    down, up = triggers.down, triggers.up
    return (down is not None and mark <= down) or (up is not None and mark >= up)


def walk(
    contract: Contract, record: PositionRecord, path: list[Decimal], indexed: bool
) -> list[tuple[str, str, Decimal]]:
    """The events of ``path``: evaluating at every mark, or only where a trigger fires."""
    events = []
    triggers = triggers_for(contract, record, RISK)
    for ts, mark in enumerate(path, start=1):
        if indexed and not crossed(triggers, mark):
            continue
        decision = evaluate(contract, record, Quote(mark, ts), RISK, now_ms=ts)
        record, triggers = decision.record, decision.triggers
        if decision.event is not None:
            events.append((decision.event.event_id, decision.event.type.value, mark))
    return events


sizes = st.sampled_from([D(1), D(3), D(40), D(500), D(501), D(2500), D(60000)])
leverages = st.sampled_from([D(2), D(5), D(10), D(20), D(25), D(50)])
factors = st.integers(min_value=800, max_value=1200).map(lambda n: D(n) / 1000)


@PROPERTY
@given(
    name=st.sampled_from(sorted(CONTRACTS)),
    side=st.sampled_from(list(Side)),
    qty=sizes,
    leverage=leverages,
    entry=st.integers(min_value=1000, max_value=90000).map(D),
    path=st.lists(factors, min_size=1, max_size=40),
)
def test_the_trigger_index_sees_every_event_a_full_scan_sees(
    name: str, side: Side, qty: Decimal, leverage: Decimal, entry: Decimal, path: list[Decimal]
) -> None:
    """For every model, evaluating only at crossed triggers gives the events of a full scan:
    margin calls, their clearing (hysteresis) and liquidations, at the same marks."""
    contract = CONTRACTS[name]
    record = record_for(contract, side, qty, entry, leverage)
    marks = [entry * factor for factor in path]
    assert walk(contract, record, marks, indexed=False) == walk(
        contract, record, marks, indexed=True
    )


DIGITS = Context(prec=28)


@PROPERTY
@given(
    name=st.sampled_from(sorted(set(CONTRACTS) - {"binance"})),
    side=st.sampled_from(list(Side)),
    qty=sizes,
    leverage=leverages,
    entry=st.integers(min_value=1000, max_value=90000).map(D),
)
def test_the_status_changes_exactly_at_each_trigger_price(
    name: str, side: Side, qty: Decimal, leverage: Decimal, entry: Decimal
) -> None:
    """A healthy position is called at its margin-call trigger and not one 28-digit step
    before it; a called one is liquidated at its liquidation trigger and not a step before.

    (Binance's prices are margin.py's, rounded half-even rather than settled; its
    own tests in test_margin.py bound them.)
    """
    contract = CONTRACTS[name]
    healthy = record_for(contract, side, qty, entry, leverage)
    called = healthy.moved_to(Status.MARGIN_CALL)
    worse_is_down = side is Side.LONG
    for record, expected in ((healthy, Status.MARGIN_CALL), (called, Status.LIQUIDATED)):
        triggers = triggers_for(contract, record, RISK)
        price = triggers.down if worse_is_down else triggers.up
        if price is None:
            continue
        at = evaluate(contract, record, Quote(price, 1), RISK, now_ms=1).record.status
        before = DIGITS.next_plus(price) if worse_is_down else DIGITS.next_minus(price)
        short_of = evaluate(contract, record, Quote(before, 1), RISK, now_ms=1).record.status
        assert at in {expected, Status.LIQUIDATED}
        assert short_of is record.status


def test_binance_is_margin_py_digit_for_digit() -> None:
    """The default model answers with margin.py's own functions, unchanged."""
    from monitor.core import margin

    record = record_for(BINANCE, Side.LONG, D("0.5"), D(60000), D(10))
    model = model_for(BINANCE)
    assert margin.liquidation_price(BINANCE, record) == model.liquidation_price(record)
    assert margin.bankruptcy_price(BINANCE, record) == model.bankruptcy_price(record)
    assert margin.ratio_price(BINANCE, record, D("0.8")) == model.margin_call_price(
        record, D("0.8")
    )
    state = margin.assess(BINANCE, record, D(55000))
    venue_state = model.assess(record, D(55000))
    assert (state.margin_ratio, state.maintenance_margin, state.margin_balance) == (
        venue_state.margin_ratio,
        venue_state.maintenance_margin,
        venue_state.margin_balance,
    )
    assert model is model_for(BINANCE)
