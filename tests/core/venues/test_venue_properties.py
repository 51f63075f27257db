"""Property tests of the venue models: each threshold is where the venue's own condition flips.

For Bybit, OKX, Gate and Hyperliquid the condition is judged by
:mod:`venue_oracle` in exact fractions: at the returned price it holds, at the
next 28-digit price on the winning side it does not, and it keeps that
verdict further out on both sides. Every model is drawn on both sides and
every contract kind it has, with tier tables whose boundaries the thresholds
cross (OKX: sizes at, just under and just over a tier's ``maxSz``).
Binance is margin.py: it must agree with it digit for digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

import pytest
import venue_oracle as oracle
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_margin import ANY_LEVERAGE, PRICES, QUANTITIES, Scenario, scenarios

from monitor.core import margin
from monitor.core.margin import ContractKind, Position, Side
from monitor.core.venues import (
    BinanceModel,
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
)
from monitor.core.venues.base import ExactModel

pytestmark = pytest.mark.unit

D = Decimal
ONE = D(1)
CALL = D("0.8")
PROPERTIES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIDES = st.sampled_from((Side.LONG, Side.SHORT))
KINDS = st.sampled_from((ContractKind.LINEAR, ContractKind.INVERSE))
MMRS = st.decimals(D("0.001"), D("0.1"), places=4)
FEES = st.one_of(st.just(D(0)), st.decimals(D(0), D("0.001"), places=5))
SPREAD = ("1e-6", "1e-3", "0.05", "0.5")


@dataclass(frozen=True)
class Case:
    """A model, a position on it, and the exact judge of its venue's condition."""

    model: ExactModel
    position: Position
    crossed: oracle.Condition


def _significant(value: Decimal, digits: int = 6) -> Decimal:
    return Context(prec=digits).plus(value)


def _rising(draw: st.DrawFn, start: Decimal, count: int) -> list[Decimal]:
    """``count`` rising values from ``start`` (6 significant digits each)."""
    values = [_significant(start)]
    for _ in range(count - 1):
        values.append(_significant(values[-1] * draw(st.decimals(D("1.2"), D("8"), places=2))))
    return values


def _rates(draw: st.DrawFn, count: int) -> list[Decimal]:
    return sorted(draw(st.lists(MMRS, min_size=count, max_size=count, unique=True)))


def _with_extra(draw: st.DrawFn, margin: Decimal) -> Decimal:
    """The leverage's margin, sometimes with margin added (Bybit's extra margin)."""
    extra = draw(st.sampled_from((D(0), D(0), D("0.1"), D("1"))))
    return margin + margin * extra


@st.composite
def bybit_cases(draw: st.DrawFn) -> Case:
    """Bybit, linear or inverse (valued at entry or, as revised, at the mark), 1-4 risk limits."""
    kind, side, entry = draw(KINDS), draw(SIDES), draw(PRICES)
    if kind is ContractKind.LINEAR:
        qty, size = draw(QUANTITIES), ONE
    else:
        qty, size = D(draw(st.integers(1, 10**7))), draw(st.sampled_from((ONE, D(100))))
    count = draw(st.integers(1, 4))
    with localcontext(Context(prec=28)):
        entry_value = qty * size * entry if kind is ContractKind.LINEAR else qty * size / entry
    limits = _rising(draw, entry_value * draw(st.decimals(D("0.1"), D("3"), places=2)), count)
    rates = _rates(draw, count)
    rows: list[BybitRiskLimit] = []
    deduction = D(0)
    for index, (limit, rate) in enumerate(zip(limits, rates, strict=True)):
        if index:
            deduction += limits[index - 1] * (rate - rates[index - 1])
        rows.append(BybitRiskLimit(limit, rate, deduction))
    at_mark = kind is ContractKind.INVERSE and draw(st.booleans())
    model = BybitModel("TEST", kind, rows, contract_size=size, inverse_value_at_mark=at_mark)
    margin_ = _with_extra(draw, model.isolated_margin(qty, entry, draw(ANY_LEVERAGE)))
    position = Position(side, qty, entry, margin_)
    return Case(model, position, oracle.bybit(kind, rows, size, at_mark))


@st.composite
def okx_cases(draw: st.DrawFn) -> Case:
    """OKX, linear or inverse; the size sits at, under or over a tier boundary."""
    kind, side, entry = draw(KINDS), draw(SIDES), draw(PRICES)
    contracts = D(draw(st.integers(2, 10**6)))
    if draw(st.booleans()):
        contracts += D("0.5")
    if kind is ContractKind.LINEAR:
        ct_val = draw(st.sampled_from((D("0.0001"), D("0.01"), D("0.1"), ONE, D(10))))
    else:
        ct_val = draw(st.sampled_from((D(10), D(100))))
    count = draw(st.integers(1, 4))
    near = int(contracts) + draw(st.sampled_from((-1, 0, 1)))
    others = draw(st.lists(st.integers(1, 2 * 10**6), min_size=count - 1, max_size=count - 1))
    maxima = sorted({near, *others})
    rates = _rates(draw, len(maxima))
    tiers = []
    low = D(0)
    for top, rate in zip(maxima, rates, strict=True):
        tiers.append(OkxTier(low, D(top), rate))
        low = D(top + 1)
    fee = draw(FEES)
    model = OkxModel("TEST-SWAP", kind, tiers, ct_val, fee)
    margin_ = _with_extra(draw, model.isolated_margin(contracts, entry, draw(ANY_LEVERAGE)))
    position = Position(side, contracts, entry, margin_)
    return Case(model, position, oracle.okx(kind, tiers, ct_val, fee))


@st.composite
def gate_cases(draw: st.DrawFn) -> Case:
    """Gate, linear or inverse, continuous deductions, tiers the thresholds run through."""
    kind, side, entry = draw(KINDS), draw(SIDES), draw(PRICES)
    contracts = D(draw(st.integers(1, 10**6)))
    if kind is ContractKind.LINEAR:
        multiplier = draw(st.sampled_from((D("0.0001"), D("0.001"), D("0.01"), ONE)))
    else:
        multiplier = ONE
    with localcontext(Context(prec=28)):
        x = contracts * multiplier
        entry_value = x * entry if kind is ContractKind.LINEAR else x / entry
    count = draw(st.integers(1, 4))
    limits = _rising(draw, entry_value * draw(st.decimals(D("0.05"), D("2"), places=2)), count)
    rates = _rates(draw, count)
    tiers: list[GateTier] = []
    deduction = D(0)
    for index, (limit, rate) in enumerate(zip(limits, rates, strict=True)):
        if index:
            deduction += limits[index - 1] * (rate - rates[index - 1])
        tiers.append(GateTier(limit, rate, deduction))
    fee = draw(FEES)
    model = GateModel("TEST_USDT", kind, tiers, multiplier, fee)
    margin_ = model.isolated_margin(contracts, entry, draw(ANY_LEVERAGE))
    position = Position(side, contracts, entry, margin_)
    return Case(model, position, oracle.gate(kind, tiers, multiplier, fee))


@st.composite
def hyperliquid_cases(draw: st.DrawFn) -> Case:
    """Hyperliquid (linear), 1-3 margin tiers with bounds near the position's notional."""
    side, entry, qty = draw(SIDES), draw(PRICES), draw(QUANTITIES)
    count = draw(st.integers(1, 3))
    leverages = sorted(
        draw(st.lists(st.sampled_from((50, 40, 25, 20, 10, 5, 3)), min_size=count, unique=True)),
        reverse=True,
    )[:count]
    with localcontext(Context(prec=28)):
        entry_value = qty * entry
    bounds = [D(0), *_rising(draw, entry_value * draw(st.decimals(D("0.1"), D("2"), places=2)), 2)]
    tiers = [HyperliquidTier(bound, lev) for bound, lev in zip(bounds, leverages, strict=False)]
    model = HyperliquidModel("TEST", tiers)
    margin_ = model.isolated_margin(qty, entry, draw(ANY_LEVERAGE))
    position = Position(side, qty, entry, margin_)
    return Case(model, position, oracle.hyperliquid(tiers))


ALL_CASES = st.one_of(bybit_cases(), okx_cases(), gate_cases(), hyperliquid_cases())


def assert_flips(case: Case, price: Decimal | None, a: Decimal, b: Decimal) -> None:
    """The condition holds at ``price`` and beyond it, and fails from its winning neighbour on."""
    side = case.position.side
    entry = case.position.entry_price
    if price is None:
        # No positive price reaches the threshold: one verdict everywhere.
        spread = [entry * D(f) for f in ("1e-6", "0.01", "0.5", "0.99", "1", "1.01", "2", "100")]
        verdicts = {case.crossed(case.position, p, a, b) for p in spread}
        assert len(verdicts) == 1
        return
    assert price > 0
    assert len(price.as_tuple().digits) <= 28
    assert case.crossed(case.position, price, a, b) is True
    assert case.crossed(case.position, oracle.winning_neighbour(side, price), a, b) is False
    for factor in SPREAD:
        worse = oracle.step(side, price, factor, worse=True)
        if worse > 0:
            assert case.crossed(case.position, worse, a, b) is True
        assert (
            case.crossed(case.position, oracle.step(side, price, factor, worse=False), a, b)
            is False
        )


# --------------------------------------------------------------------------- exact models


@PROPERTIES
@given(ALL_CASES)
def test_liquidation_price_is_where_the_venue_condition_flips(case: Case) -> None:
    """MB ≤ MM holds at the liquidation price and fails at its winning 28-digit neighbour."""
    assert_flips(case, case.model.liquidation_price(case.position), ONE, ONE)


@PROPERTIES
@given(ALL_CASES)
def test_bankruptcy_price_is_where_the_balance_reaches_zero(case: Case) -> None:
    """MB ≤ 0 holds at the bankruptcy price and fails at its winning neighbour."""
    assert_flips(case, case.model.bankruptcy_price(case.position), ONE, D(0))


@PROPERTIES
@given(ALL_CASES)
def test_margin_call_price_is_where_the_ratio_is_reached(case: Case) -> None:
    """0.8·MB ≤ MM holds at the margin-call price and fails at its winning neighbour."""
    assert_flips(case, case.model.margin_call_price(case.position, CALL), CALL, ONE)


@PROPERTIES
@given(ALL_CASES)
def test_model_liquidatable_agrees_with_the_venue_condition(case: Case) -> None:
    """The model's own liquidatable() is the venue's condition at every sampled mark."""
    entry = case.position.entry_price
    liq = case.model.liquidation_price(case.position)
    marks = [entry * D(f) for f in ("1e-3", "0.5", "0.9", "1", "1.1", "2", "10")]
    if liq is not None:
        marks += [liq, oracle.winning_neighbour(case.position.side, liq)]
    for mark in marks:
        assert case.crossed(case.position, mark, ONE, ONE) == case.model.liquidatable(
            case.position, mark
        )
        assert case.model.assess(case.position, mark).liquidatable == case.model.liquidatable(
            case.position, mark
        )


@PROPERTIES
@given(ALL_CASES)
def test_thresholds_are_ordered_call_then_liquidation_then_bankruptcy(case: Case) -> None:
    """Coming from the winning side a position meets the margin call, liquidation, bankruptcy."""
    position = case.position
    call = case.model.margin_call_price(position, CALL)
    liq = case.model.liquidation_price(position)
    bust = case.model.bankruptcy_price(position)
    pairs = [(call, liq), (liq, bust), (call, bust)]
    for first, then in pairs:
        if first is not None and then is not None:
            if position.side is Side.LONG:
                assert first >= then
            else:
                assert first <= then


@PROPERTIES
@given(okx_cases())
def test_okx_venue_ratio_is_the_reciprocal_and_falls_to_one_at_liquidation(case: Case) -> None:
    """OKX's ratio is MB/MM: above 1 on the winning side of the liquidation price, ≤ 1 beyond."""
    position = case.position
    liq = case.model.liquidation_price(position)
    assume(liq is not None)
    assert liq is not None
    safe = oracle.step(position.side, liq, "1e-3", worse=False)
    state = case.model.assess(position, safe)
    assert state.venue_ratio > 1
    assert state.margin_ratio < 1
    beyond = oracle.step(position.side, liq, "1e-3", worse=True)
    if beyond > 0 and case.model.assess(position, beyond).margin_balance > 0:
        assert case.model.assess(position, beyond).venue_ratio < 1


def test_okx_discontinuity_one_contract_over_a_tier_moves_the_price() -> None:
    """5,000 and 5,001 contracts sit in tiers of 1 % and 1.5 %: each has its own exact price.

    MM jumps between the two sizes (no deduction), yet each position's tier is
    fixed, so each liquidation price is the flip of its own condition.
    """
    tiers = [OkxTier(D(0), D(5000), D("0.01")), OkxTier(D(5001), D(7500), D("0.015"))]
    model = OkxModel("CHZ-USDT-SWAP", ContractKind.LINEAR, tiers, D(10), D("0.0005"))
    judge = oracle.okx(ContractKind.LINEAR, tiers, D(10), D("0.0005"))
    prices = []
    for contracts in (D(5000), D(5001)):
        margin_ = model.isolated_margin(contracts, D("0.1"), D(20))
        position = Position(Side.LONG, contracts, D("0.1"), margin_)
        price = model.liquidation_price(position)
        assert price is not None
        case = Case(model, position, judge)
        assert_flips(case, price, ONE, ONE)
        prices.append(price)
    assert prices[1] > prices[0]


# --------------------------------------------------------------------------- Binance


def same(expected: Decimal | None, actual: Decimal | None) -> bool:
    """Identical Decimals (digits and exponent), or both None."""
    if expected is None or actual is None:
        return expected is actual
    return expected.as_tuple() == actual.as_tuple()


@PROPERTIES
@given(scenarios())
def test_binance_model_is_margin_py_digit_for_digit(scenario: Scenario) -> None:
    """On random tables, positions and marks, BinanceModel returns margin.py's exact digits."""
    contract, position = scenario.contract, scenario.position
    model = BinanceModel(contract)
    assert same(margin.liquidation_price(contract, position), model.liquidation_price(position))
    assert same(margin.bankruptcy_price(contract, position), model.bankruptcy_price(position))
    assert same(
        margin.ratio_price(contract, position, CALL), model.margin_call_price(position, CALL)
    )
    for factor in ("0.01", "0.5", "0.95", "1", "1.05", "3"):
        mark = position.entry_price * D(factor)
        expected = margin.assess(contract, position, mark)
        actual = model.assess(position, mark)
        for name in (
            "notional",
            "unrealized_pnl",
            "margin_balance",
            "maintenance_margin",
            "margin_ratio",
        ):
            assert same(getattr(expected, name), getattr(actual, name)), name
        assert same(expected.margin_ratio, actual.venue_ratio)
        assert expected.liquidatable is actual.liquidatable
        assert same(expected.maintenance_margin, model.maintenance_margin(position, mark))
    size, entry = position.qty, position.entry_price
    assert same(position.margin, model.isolated_margin(size, entry, scenario.leverage))


@PROPERTIES
@given(scenarios(open_last=True))
def test_binance_liquidation_price_flips_within_a_hair(scenario: Scenario) -> None:
    """margin.py rounds half-even: a hair (1e-20) beyond liquidates, a hair before does not."""
    model = BinanceModel(scenario.contract)
    position = scenario.position
    price = model.liquidation_price(position)
    assume(price is not None)
    assert price is not None
    assert model.liquidatable(position, oracle.step(position.side, price, "1e-20", worse=True))
    assert not model.liquidatable(position, oracle.step(position.side, price, "1e-20", worse=False))
