"""The venues' own worked examples and published formulas, reproduced by the models.

Each test names its source in its docstring. "Published numbers" are asserted
exactly (the venues print them exact or to the rounding the docstring
states); "published formula" tests compare a model with the venue's closed
form computed at 60 digits and rounded toward the losing side, as the models
round (see :mod:`monitor.core.venues`).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from itertools import pairwise

import pytest

from monitor.core.margin import ContractKind, Position, Side
from monitor.core.venues import (
    BinanceBracket,
    BinanceModel,
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
    RatioDirection,
)
from monitor.core.venues.binance import maintenance_amount
from monitor.core.venues.hyperliquid import brackets_from_tiers, maintenance_rate

pytestmark = pytest.mark.unit

D = Decimal
WIDE = Context(prec=60)


def toward_loss(side: Side, value: Decimal) -> Decimal:
    """``value`` to 28 digits, rounded toward the side where the position loses."""
    rounding = ROUND_FLOOR if side is Side.LONG else ROUND_CEILING
    return Context(prec=28, rounding=rounding).plus(value)


# --------------------------------------------------------------------------- Bybit


def bybit_btcusdt() -> BybitModel:
    """BTCUSDT with one risk limit at MMR 0.5 % and no deduction, as the example assumes."""
    return BybitModel("BTCUSDT", ContractKind.LINEAR, [BybitRiskLimit(D(2_000_000), D("0.005"))])


def test_bybit_usdt_example_1_long() -> None:
    """Bybit help centre, "Liquidation Price (USDT Contract)", Example 1 (Long).

    testnet.bybit.com/en-US/help-center/s/article/Liquidation-Price-USDT-Contract:
    a long of 1 BTC at 20,000 USDT with 50x leverage, MMR 0.5 %, no extra
    margin: Initial Margin = 400 USDT, Maintenance Margin = 100 USDT,
    LP = 20,000 − (400 − 100) = 19,700 USDT (whole numbers, exact).
    """
    model = bybit_btcusdt()
    margin = model.isolated_margin(D(1), D(20000), D(50))
    assert D(400) == margin
    position = Position(Side.LONG, D(1), D(20000), margin)
    assert D(100) == model.maintenance_margin(position, D(20000))
    # MM is on the entry value: the same 100 USDT at the liquidation price.
    assert D(100) == model.maintenance_margin(position, D(19700))
    assert D(19700) == model.liquidation_price(position)
    assert model.liquidatable(position, D(19700)) is True
    assert model.liquidatable(position, D("19700.01")) is False


def test_bybit_usdt_bankruptcy_price_formula() -> None:
    """Bybit help centre, "Bankruptcy Price (USDT Contract)": long BP = Entry × (1 − IMR).

    With IMR = 1/leverage, the Example 1 long (20,000 USDT, 50x) goes bankrupt at
    20,000 × (1 − 0.02) = 19,600 USDT; the short mirror at 20,000 × 1.02 = 20,400.
    """
    model = bybit_btcusdt()
    margin = model.isolated_margin(D(1), D(20000), D(50))
    assert D(19600) == model.bankruptcy_price(Position(Side.LONG, D(1), D(20000), margin))
    assert D(20400) == model.bankruptcy_price(Position(Side.SHORT, D(1), D(20000), margin))


def test_bybit_extra_margin_moves_the_price_by_extra_over_size() -> None:
    """Same page's formula: LP (long) = E − (IM − MM)/size − extra margin/size.

    The Example 1 long with 100 USDT of extra margin: 19,700 − 100/1 = 19,600.
    """
    model = bybit_btcusdt()
    position = Position(Side.LONG, D(1), D(20000), D(400) + D(100))
    assert D(19600) == model.liquidation_price(position)


def test_bybit_inverse_uta_example() -> None:
    """Bybit help centre, isolated-mode liquidation price for the Unified Trading Account.

    Article "Liquidation Price Calculation under Isolated Mode (Unified Trading
    Account)" (testnet.bybit.com/ar-SA/help-center/article/Liquidation-Price-
    Calculation-under-Isolated-Mode-Unified-Trading-Account).
    Inverse example: 60,000 USD of BTCUSD at 50,000 USD, 10x, MMR 0.5 %, no extra
    margin: Position Value = 60,000 / 50,000 = 1.2 BTC, Initial Margin = 1.2 / 10
    = 0.12 BTC (published, exact). The page's long formula
    LP = Qty / [PV + (IM − MM)] with MM = PV × MMR gives 60,000 / 1.314; the page
    excerpt read did not show its rounded figure, so the formula is compared.
    """
    model = BybitModel("BTCUSD", ContractKind.INVERSE, [BybitRiskLimit(D(150), D("0.005"))])
    margin = model.isolated_margin(D(60000), D(50000), D(10))
    assert D("0.12") == margin
    position = Position(Side.LONG, D(60000), D(50000), margin)
    assert D("1.2") == model.assess(position, D(50000)).notional
    assert D("0.006") == model.maintenance_margin(position, D(50000))
    with localcontext(WIDE):
        formula = D(60000) / (D("1.2") + (D("0.12") - D("0.006")))
    assert toward_loss(Side.LONG, formula) == model.liquidation_price(position)
    short = Position(Side.SHORT, D(60000), D(50000), margin)
    with localcontext(WIDE):
        formula = D(60000) / (D("1.2") - (D("0.12") - D("0.006")))
    assert toward_loss(Side.SHORT, formula) == model.liquidation_price(short)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_bybit_inverse_uta_2026_formula_values_the_position_at_the_mark(side: Side) -> None:
    """Bybit help centre, the same UTA isolated-mode article as revised on 2026-05-27.

    kbybit.com/en/help-center/article/Liquidation-Price-Calculation-under-Isolated-
    Mode-Unified-Trading-Account: Position Value = Contract Quantity ÷ Mark Price;
    LP (long) = Size × (MMR + 1) ÷ [Size/E + Size/E/Leverage + extra/(1 + fee) +
    MM Deduction], LP (short) = Size × (1 − MMR) ÷ [Size/E − Size/E/Leverage −
    extra/(1 − fee) − MM Deduction]; here without extra margin, and with a deduction that
    leaves MM above zero (a larger one is clamped: see the next test).
    """
    row = BybitRiskLimit(D(150), D("0.005"), D("0.001"))
    model = BybitModel("BTCUSD", ContractKind.INVERSE, [row], inverse_value_at_mark=True)
    size, entry, leverage = D(60000), D(50000), D(10)
    position = Position(side, size, entry, model.isolated_margin(size, entry, leverage))
    s = 1 if side is Side.LONG else -1
    with localcontext(WIDE):
        denominator = size / entry + s * (size / entry / leverage + row.mm_deduction)
        formula = size * (1 + s * row.maintenance_margin_rate) / denominator
    assert toward_loss(side, formula) == model.liquidation_price(position)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_bybit_maintenance_never_below_zero_so_liquidation_is_not_past_bankruptcy(
    side: Side,
) -> None:
    """A deduction above PV × MMR (here 0.01 BTC against 1.2 × 0.5 %) would make the 2026
    formula's MM negative and its liquidation price lie past bankruptcy: MM is clamped at
    zero, so the position liquidates where its margin balance reaches zero."""
    row = BybitRiskLimit(D(150), D("0.005"), D("0.01"))
    model = BybitModel("BTCUSD", ContractKind.INVERSE, [row], inverse_value_at_mark=True)
    size, entry = D(60000), D(50000)
    position = Position(side, size, entry, model.isolated_margin(size, entry, D(10)))
    assert D(0) == model.maintenance_margin(position, entry)
    assert model.bankruptcy_price(position) == model.liquidation_price(position)


def test_bybit_risk_limit_row_is_chosen_by_entry_value() -> None:
    """The row is the first whose riskLimitValue covers the entry value, a value at it included.

    Bybit: MM = (Position Value × MMR) − Maintenance Margin Deduction (same pages).
    """
    rows = [
        BybitRiskLimit(D(2_000_000), D("0.005"), D(0)),
        BybitRiskLimit(D(4_000_000), D("0.01"), D(10_000)),
    ]
    model = BybitModel("BTCUSDT", ContractKind.LINEAR, rows)
    small = Position(Side.LONG, D(10), D(20000), D(20000))
    large = Position(Side.LONG, D(150), D(20000), D(300000))
    at_limit = Position(Side.LONG, D(100), D(20000), D(200000))
    assert rows[0] == model.risk_limit_for(small)
    assert rows[0] == model.risk_limit_for(at_limit)
    assert rows[1] == model.risk_limit_for(large)
    assert D(3_000_000) * D("0.01") - D(10_000) == model.maintenance_margin(large, D(1))


# --------------------------------------------------------------------------- Binance


def test_binance_coin_m_maintenance_amount_example() -> None:
    """Binance FAQ "How to Calculate Liquidation Price of COIN-M Futures Contracts".

    binance.com/en/support/faq/ceccfcfb4e3a45e3b48b0b1bb1a8ae46: "the BTCUSD
    Maintenance Amount on Level 5 = 50 BTC * (5% − 2.5%) + 0.56 BTC = 1.81 BTC".
    """
    assert D("1.81") == maintenance_amount(D(50), D("0.05"), D("0.025"), D("0.56"))


def test_binance_brackets_in_the_venue_shape_give_todays_prices() -> None:
    """Brackets as Binance lists them (floor, cap, maintMarginRatio, cum) feed margin.py unchanged.

    The table is liqmon's sample BTCUSDT one; each cum follows the FAQ's rule.
    """
    rows = [
        BinanceBracket(D(0), D(50000), D("0.004"), D(0)),
        BinanceBracket(D(50000), D(250000), D("0.005"), D(50)),
        BinanceBracket(D(250000), D(1000000), D("0.01"), D(1300)),
    ]
    for below, row in pairwise(rows):
        cum = maintenance_amount(
            row.floor, row.maint_margin_ratio, below.maint_margin_ratio, below.cum
        )
        assert row.cum == cum
    model = BinanceModel.from_brackets("BTCUSDT", ContractKind.LINEAR, rows)
    position = Position(Side.LONG, D(1), D(60000), D(6000))
    with localcontext(Context(prec=28)):
        assert D(53950) / D("0.995") == model.liquidation_price(position)
    assert model.ratio_direction is RatioDirection.RISES


def test_binance_brackets_with_a_gap_or_a_jump_are_refused() -> None:
    """A floor that is not the cap below, or a cum that breaks continuity, is named."""
    rows = [
        BinanceBracket(D(0), D(50000), D("0.004"), D(0)),
        BinanceBracket(D(60000), None, D("0.005"), D(40)),
    ]
    with pytest.raises(ValueError, match=r"brackets\[1\]\.floor must be 50000") as raised:
        BinanceModel.from_brackets("BTCUSDT", ContractKind.LINEAR, rows)
    assert "brackets[1].cum must be 50.000" in str(raised.value)


# --------------------------------------------------------------------------- Hyperliquid


def test_hyperliquid_maintenance_rate_is_half_the_max_leverage_margin() -> None:
    """Hyperliquid docs, Trading › Margin tiers: "at 20x max leverage, ... = 2.5%".

    hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers;
    Trading › Liquidations: maintenance margin "between 1% (for 50x max leverage
    assets) and 16.7% (for 3x max leverage assets)", rounded there to 0.1 point.
    """
    assert D("0.025") == maintenance_rate(20)
    assert D("0.01") == maintenance_rate(50)
    assert D("16.7") == (maintenance_rate(3) * 100).quantize(D("0.1"))


def test_hyperliquid_deduction_follows_the_published_recurrence() -> None:
    """Hyperliquid docs, Margin tiers: the maintenance deduction's recurrence.

    deduction(n) = deduction(n−1) + lower_bound(n)·(rate(n) − rate(n−1)).
    Mainnet BTC tiers (same page): 0-150M at 40x, above 150M at 20x, so rates
    1.25 % and 2.5 % and a deduction of 150M × 1.25 % = 1,875,000 USDC, which
    keeps MM continuous at 150M.
    """
    tiers = [HyperliquidTier(D(0), 40), HyperliquidTier(D(150_000_000), 20)]
    brackets = brackets_from_tiers(tiers)
    assert [D("0.0125"), D("0.025")] == [b.mmr for b in brackets]
    assert [D(0), D(1_875_000)] == [b.cum for b in brackets]
    model = HyperliquidModel("BTC", tiers)
    at_bound = Position(Side.LONG, D(1500), D(100000), D(10_000_000))
    assert D(1_875_000) == model.maintenance_margin(at_bound, D(100000))


def test_hyperliquid_mm_is_exactly_continuous_where_a_rate_does_not_terminate() -> None:
    """At a bound into a 3x tier (rate 1/6 to 28 digits) both tiers give the same MM, exactly.

    The deduction is derived without rounding; rounded to 28 digits it left MM
    jumping by about 1e-23 at the bound, which moved a margin-call price by one digit.
    """
    tiers = [
        HyperliquidTier(D(0), 50),
        HyperliquidTier(D(540022), 40),
        HyperliquidTier(D(648026), 3),
    ]
    lower, upper = brackets_from_tiers(tiers)[1:]
    bound = D(648026)
    with localcontext(Context(prec=100)):
        assert bound * lower.mmr - lower.cum == bound * upper.mmr - upper.cum


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_hyperliquid_single_tier_liquidation_formula(side: Side) -> None:
    """The liquidation price Hyperliquid's engine shows, as HyENA's docs (a HIP-3 DEX) print it.

    docs.hyena.trade/trading/liquidation: liq_price = price − side ×
    margin_available / position_size / (1 − l × side), l = 1 / maintenance
    leverage (twice the max leverage); margin_available = margin − l × size × price.
    """
    model = HyperliquidModel("ETH", [HyperliquidTier(D(0), 25)])
    size, entry = D("3.5"), D(3000)
    margin = model.isolated_margin(size, entry, D(10))
    s = 1 if side is Side.LONG else -1
    with localcontext(WIDE):
        maintenance = D(1) / D(50)
        available = margin - maintenance * size * entry
        formula = entry - s * available / size / (1 - maintenance * s)
    assert toward_loss(side, formula) == model.liquidation_price(
        Position(side, size, entry, margin)
    )


# --------------------------------------------------------------------------- OKX


def test_okx_tiers_are_chosen_by_contracts_btc_swap() -> None:
    """OKX perpetual-futures quiz (okex.com/futureTrade/beforePerpetualFuture).

    "opening a BTC perpetual swap position of 10,000 contracts, which is on level 1
    (0 – 19,999 contracts), requires a margin maintenance ratio of 1% ... a BTC
    perpetual swap position of 20,000 contracts, which is on level 2 (20,000 –
    29,999 contracts), the required maintenance margin ratio is 1%".
    """
    tiers = [OkxTier(D(0), D(19999), D("0.01")), OkxTier(D(20000), D(29999), D("0.01"))]
    model = OkxModel("BTC-USD-SWAP", ContractKind.INVERSE, tiers, D(100), D(0))
    assert tiers[0] == model.tier_for(D(10000))
    assert tiers[1] == model.tier_for(D(20000))


def test_okx_tiers_chzusdt_announcement() -> None:
    """OKX announcement "OKX position tiers to be adjusted", CHZUSDT perpetual swap.

    As mirrored at chouyi.info/en-ae/help/okx-position-tiers-to-be-adjusted:
    tier 1 0-5,000 contracts 1.00 %, tier 2 5,001-7,500 1.50 %, tier 3
    7,501-15,000 2.00 %. MM jumps from 5,000 to 5,001 contracts, with no deduction.
    """
    tiers = [
        OkxTier(D(0), D(5000), D("0.01")),
        OkxTier(D(5001), D(7500), D("0.015")),
        OkxTier(D(7501), D(15000), D("0.02")),
    ]
    model = OkxModel("CHZ-USDT-SWAP", ContractKind.LINEAR, tiers, D(10), D(0))
    assert [D("0.01"), D("0.015"), D("0.015"), D("0.02")] == [
        model.tier_for(D(n)).mmr for n in (5000, 5001, 7500, 7501)
    ]
    mark = D("0.1")
    below = model.maintenance_margin(Position(Side.LONG, D(5000), mark, D(100)), mark)
    above = model.maintenance_margin(Position(Side.LONG, D(5001), mark, D(100)), mark)
    assert D("50") == below
    assert D("75.015") == above


def test_okx_margin_ratio_formula() -> None:
    """OKX's isolated margin ratio as issue #14 states it, worked by hand.

    (margin + uPnL) / (ctVal × |contracts| × mark × (mmr + taker fee)): 100
    BTC-USDT-SWAP contracts (ctVal 0.01) short at 60,000 with 3,000 USDT, mark
    62,000, mmr 1 %, taker 0.05 %: uPnL = −2,000, so 1,000 / 651 (falls to 100 %).
    """
    model = OkxModel(
        "BTC-USDT-SWAP",
        ContractKind.LINEAR,
        [OkxTier(D(0), D(1e6), D("0.01"))],
        D("0.01"),
        D("0.0005"),
    )
    position = Position(Side.SHORT, D(100), D(60000), D(3000))
    state = model.assess(position, D(62000))
    with localcontext(Context(prec=28)):
        assert D(1000) / D(651) == state.venue_ratio
        assert D(651) / D(1000) == state.margin_ratio
    assert model.ratio_direction is RatioDirection.FALLS


# --------------------------------------------------------------------------- Gate


GATE_TAKER = D("0.00075")
"""The taker rate Gate's support reply uses ("Taker rate = 0.075%")."""


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_gate_linear_liquidation_formula(side: Side) -> None:
    """Gate support's reply on the liquidation price, Gate Square post 3870211 (2023-07-02).

    Read at gatenode.pro/post/status/3870211 (also on miniapp.gate.com):
    "liquidation price = (average opening price ± margin / contract multiplier /
    position) / [1 ± (maintenance margin ratio + Taker fee Rate)] ... long is
    subtracted, and short is added".
    """
    model = GateModel(
        "BTC_USDT",
        ContractKind.LINEAR,
        [GateTier(D(2_000_000), D("0.004"))],
        D("0.0001"),
        GATE_TAKER,
    )
    size, entry = D(2500), D(60000)
    margin = model.isolated_margin(size, entry, D(20))
    s = 1 if side is Side.LONG else -1
    with localcontext(WIDE):
        formula = (entry - s * margin / D("0.0001") / size) / (1 - s * (D("0.004") + GATE_TAKER))
    assert toward_loss(side, formula) == model.liquidation_price(
        Position(side, size, entry, margin)
    )


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_gate_inverse_liquidation_formula(side: Side) -> None:
    """Same source: "Reverse contract forced liquidation price = position * average
    opening price * (1 ± maintenance margin ratio ± Taker fee rate) / (position ±
    margin * average opening price) ... long plus, short, minus" (1 USD contracts).
    """
    model = GateModel(
        "BTC_USD", ContractKind.INVERSE, [GateTier(D(100), D("0.005"))], D(1), GATE_TAKER
    )
    size, entry = D(30000), D(60000)
    margin = model.isolated_margin(size, entry, D(10))
    s = 1 if side is Side.LONG else -1
    with localcontext(WIDE):
        rate = D("0.005") + GATE_TAKER
        formula = size * entry * (1 + s * rate) / (size + s * margin * entry)
    assert toward_loss(side, formula) == model.liquidation_price(
        Position(side, size, entry, margin)
    )


def test_gate_tiers_must_keep_maintenance_margin_continuous() -> None:
    """A deduction that leaves MM jumping at a risk limit is refused, naming the value it needs."""
    tiers = [GateTier(D(1_000_000), D("0.004")), GateTier(D(3_000_000), D("0.005"), D(900))]
    with pytest.raises(ValueError, match=r"brackets\[1\]\.cum must be 1000"):
        GateModel("BTC_USDT", ContractKind.LINEAR, tiers, D("0.0001"), GATE_TAKER)


def test_margin_call_ratio_must_exceed_the_rates() -> None:
    """A margin-call ratio at or below mmr + fee would have no single price: refused."""
    model = GateModel(
        "BTC_USDT", ContractKind.LINEAR, [GateTier(D(1e6), D("0.004"))], D("0.0001"), GATE_TAKER
    )
    position = Position(Side.LONG, D(100), D(60000), D(60))
    with pytest.raises(ValueError, match="must exceed the highest mmr"):
        model.margin_call_price(position, D("0.004"))


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_a_root_far_off_is_still_settled_on_the_exact_price(side: Side) -> None:
    """The closed form can lose digits to cancellation (prices near 1e28 for an inverse short
    whose margin nearly equals its value): settling a root a million steps off still ends
    on the exact first crossed price, by doubling and halving, instead of failing."""
    model = bybit_btcusdt()
    position = Position(side, D(1), D(20000), D(400))
    exact = model.liquidation_price(position)
    assert exact is not None
    for off in (D("1e-20"), D("-1e-20")):
        assert exact == model._settle(position, exact * (1 + off), D(1), D(1))
