"""Unit and property tests of the pure margin math in :mod:`monitor.core.margin`.

The worked examples are derived by hand from the formulas in the module
docstring; the properties are checked with hypothesis over random, valid tier
tables and positions, linear and inverse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.core.evaluation import Quote, apply_update
from monitor.core.margin import (
    Bracket,
    Contract,
    ContractKind,
    Holding,
    MarginState,
    Position,
    Side,
    assess,
    bankruptcy_price,
    check_brackets,
    liquidation_price,
    maintenance_margin,
    notional,
    ratio_price,
    short_of,
    unrealized_pnl,
)
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import RiskLimits, Status
from monitor.core.venues.binance import BinanceModel

pytestmark = pytest.mark.unit

D = Decimal
ZERO = D(0)
ONE = D(1)
CALL_RATIO = D("0.8")
CLEAR_RATIO = D("0.7")
HAIR = D("1e-12")
BALANCE_TOLERANCE = D("1e-20")
PRICE_FACTORS = tuple(
    D(f) for f in ("0.001", "0.01", "0.1", "0.3", "0.5", "0.8", "0.9", "0.95", "0.99", "1")
) + tuple(D(f) for f in ("1.01", "1.05", "1.1", "1.25", "1.5", "2", "3", "10", "100", "1000"))

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

SAMPLE_BRACKETS = (
    Bracket(notional_cap=D("50000"), mmr=D("0.004"), cum=D("0")),
    Bracket(notional_cap=D("250000"), mmr=D("0.005"), cum=D("50")),
    Bracket(notional_cap=D("1000000"), mmr=D("0.01"), cum=D("1300")),
)
BTCUSDT = Contract(symbol="BTCUSDT", kind=ContractKind.LINEAR, brackets=SAMPLE_BRACKETS)

# A coin-margined table in the shape of the venues' BTCUSD ones (caps in BTC).
BTCUSD_BRACKETS = (
    Bracket(notional_cap=D("5"), mmr=D("0.004"), cum=D("0")),
    Bracket(notional_cap=D("10"), mmr=D("0.005"), cum=D("0.005")),
    Bracket(notional_cap=D("20"), mmr=D("0.01"), cum=D("0.055")),
    Bracket(notional_cap=D("40"), mmr=D("0.025"), cum=D("0.355")),
    Bracket(notional_cap=D("80"), mmr=D("0.05"), cum=D("1.355")),
    Bracket(notional_cap=D("160"), mmr=D("0.1"), cum=D("5.355")),
    Bracket(notional_cap=None, mmr=D("0.125"), cum=D("9.355")),
)
BTCUSD = Contract(
    symbol="BTCUSD",
    kind=ContractKind.INVERSE,
    brackets=BTCUSD_BRACKETS,
    contract_size=D("100"),
)


def q28(numerator: Decimal | int | str, denominator: Decimal | int | str) -> Decimal:
    """The quotient rounded to 28 significant digits, half-even."""
    with localcontext(Context(prec=28, rounding=ROUND_HALF_EVEN)):
        return D(numerator) / D(denominator)


def pos(side: Side, qty: str, entry: str, margin: str) -> Position:
    """A position from strings."""
    return Position(side=side, qty=D(qty), entry_price=D(entry), margin=D(margin))


def significant_digits(value: Decimal) -> int:
    """How many significant digits a Decimal carries."""
    return len(value.as_tuple().digits)


def _one_btc_long() -> Position:
    """The 1 BTC long at 60,000 with 6,000 margin from the worked examples."""
    return pos(Side.LONG, "1", "60000", "6000")


# --------------------------------------------------------------------------- worked examples


def test_linear_long_first_tier_liquidation_price() -> None:
    """A 0.5 BTC long at 60,000 with 3,000 margin is liquidated at 27,000/0.498."""
    price = liquidation_price(BTCUSDT, pos(Side.LONG, "0.5", "60000", "3000"))
    assert q28(27000, "0.498") == price
    assert str(price).startswith("54216.867")


def test_linear_long_second_tier_liquidation_price() -> None:
    """A 1 BTC long at 60,000 with 6,000 margin is liquidated at 53,950/0.995 (second tier)."""
    price = liquidation_price(BTCUSDT, pos(Side.LONG, "1", "60000", "6000"))
    assert q28(53950, "0.995") == price
    assert str(price).startswith("54221.105")
    assert SAMPLE_BRACKETS[1] == BTCUSDT.bracket_for(notional(BTCUSDT, _one_btc_long(), price))


def test_linear_short_second_tier_liquidation_price() -> None:
    """A 1 BTC short at 60,000 with 6,000 margin is liquidated at 66,050/1.005 (second tier)."""
    price = liquidation_price(BTCUSDT, pos(Side.SHORT, "1", "60000", "6000"))
    assert q28(66050, "1.005") == price
    assert str(price).startswith("65721.393")


def test_linear_bankruptcy_prices() -> None:
    """The bankruptcy price of a linear position is E - M/q for a long and E + M/q for a short."""
    assert D("54000") == bankruptcy_price(BTCUSDT, pos(Side.LONG, "0.5", "60000", "3000"))
    assert D("66000") == bankruptcy_price(BTCUSDT, pos(Side.SHORT, "1", "60000", "6000"))
    # 60000 - 3000/0.7 = (0.7·60000 - 3000)/0.7
    assert q28(39000, "0.7") == bankruptcy_price(BTCUSDT, pos(Side.LONG, "0.7", "60000", "3000"))


def test_linear_margin_call_prices() -> None:
    """The margin-call price (MM/MB = 0.8) of the sample longs, first and second tier."""
    first = ratio_price(BTCUSDT, pos(Side.LONG, "0.5", "60000", "3000"), CALL_RATIO)
    # 0.8·(3000 + 0.5·(P - 60000)) = 0.004·0.5·P  ⇒  P = 21600/0.398
    assert q28(21600, "0.398") == first
    second = ratio_price(BTCUSDT, _one_btc_long(), CALL_RATIO)
    # 0.8·(6000 + P - 60000) = 0.005·P - 50  ⇒  P = 43150/0.795
    assert q28(43150, "0.795") == second
    short = ratio_price(BTCUSDT, pos(Side.SHORT, "1", "60000", "6000"), CALL_RATIO)
    # 0.8·(6000 - (P - 60000)) = 0.005·P - 50  ⇒  P = 52850/0.805
    assert q28(52850, "0.805") == short


def test_linear_close_fee_raises_the_long_liquidation_price() -> None:
    """With a 0.05 % closing fee reserved, the 0.5 BTC long is liquidated at 27,000/0.49775."""
    contract = Contract(
        symbol="BTCUSDT",
        kind=ContractKind.LINEAR,
        brackets=SAMPLE_BRACKETS,
        close_fee_rate=D("0.0005"),
    )
    price = liquidation_price(contract, pos(Side.LONG, "0.5", "60000", "3000"))
    assert q28(27000, "0.49775") == price


def test_linear_assess_at_a_mark() -> None:
    """At mark 55,000 the 0.5 BTC long shows notional 27,500, MB 500, MM 110, ratio 0.22."""
    state = assess(BTCUSDT, pos(Side.LONG, "0.5", "60000", "3000"), D("55000"))
    assert (
        MarginState(
            mark_price=D("55000"),
            notional=D("27500"),
            unrealized_pnl=D("-2500"),
            margin_balance=D("500"),
            maintenance_margin=D("110"),
            margin_ratio=D("0.22"),
        )
        == state
    )
    assert state.liquidatable is False


def test_margin_ratio_is_infinite_when_balance_is_gone() -> None:
    """Below the bankruptcy price the margin ratio reads Infinity and the position liquidates."""
    state = assess(BTCUSDT, pos(Side.LONG, "0.5", "60000", "3000"), D("50000"))
    assert D("-2000") == state.margin_balance
    assert D("Infinity") == state.margin_ratio
    assert state.liquidatable is True


def test_inverse_long_first_tier_liquidation_price() -> None:
    """1,000 BTCUSD contracts long at 50,000 with 0.2 BTC margin liquidate at 100,400/2.2."""
    position = pos(Side.LONG, "1000", "50000", "0.2")
    # 0.2 + 100000·(1/50000 - 1/P) = 0.004·100000/P  ⇒  P = 100000·1.004 / 2.2
    price = liquidation_price(BTCUSD, position)
    assert q28(100400, "2.2") == price
    assert BTCUSD_BRACKETS[0] == BTCUSD.bracket_for(notional(BTCUSD, position, price))


def test_inverse_short_first_tier_liquidation_price() -> None:
    """1,000 BTCUSD contracts short at 50,000 with 0.2 BTC margin liquidate at 99,600/1.8."""
    # 0.2 - 100000·(1/50000 - 1/P) = 0.004·100000/P  ⇒  P = 100000·0.996 / 1.8
    price = liquidation_price(BTCUSD, pos(Side.SHORT, "1000", "50000", "0.2"))
    assert q28(99600, "1.8") == price


def test_inverse_long_third_tier_liquidation_price() -> None:
    """5,000 BTCUSD contracts long at 50,000 with 1 BTC margin liquidate at 505,000/11.055."""
    position = pos(Side.LONG, "5000", "50000", "1")
    # Tier 1 gives notional 10.96 > 5, tier 2 gives 10.95 > 10; tier 3 (mmr 0.01, cum 0.055):
    # 1 + 500000·(1/50000 - 1/P) = 0.01·500000/P - 0.055  ⇒  P = 505000 / 11.055
    price = liquidation_price(BTCUSD, position)
    assert q28(505000, "11.055") == price
    assert BTCUSD_BRACKETS[2] == BTCUSD.bracket_for(notional(BTCUSD, position, price))


def test_inverse_bankruptcy_prices() -> None:
    """Inverse bankruptcy: 1/P = 1/E + M/(n·c) for a long and 1/E - M/(n·c) for a short."""
    assert q28(100000, "2.2") == bankruptcy_price(BTCUSD, pos(Side.LONG, "1000", "50000", "0.2"))
    assert q28(100000, "1.8") == bankruptcy_price(BTCUSD, pos(Side.SHORT, "1000", "50000", "0.2"))


def test_inverse_short_without_leverage_has_no_bankruptcy_price() -> None:
    """An inverse short whose margin covers the whole face value can never go bankrupt."""
    assert bankruptcy_price(BTCUSD, pos(Side.SHORT, "1000", "50000", "2")) is None


def test_inverse_margin_call_price() -> None:
    """The inverse long's margin-call price (MM/MB = 0.8) is 80,400/1.76."""
    # 0.8·(0.2 + 100000·(1/50000 - 1/P)) = 0.004·100000/P  ⇒  P = 100000·0.804 / 1.76
    price = ratio_price(BTCUSD, pos(Side.LONG, "1000", "50000", "0.2"), CALL_RATIO)
    assert q28(80400, "1.76") == price


def test_inverse_assess_at_a_mark() -> None:
    """At mark 40,000 the inverse long has notional 2.5 BTC and PnL -0.5 BTC."""
    state = assess(BTCUSD, pos(Side.LONG, "1000", "50000", "0.2"), D("40000"))
    assert D("2.5") == state.notional
    assert D("-0.5") == state.unrealized_pnl
    assert D("-0.3") == state.margin_balance
    assert D("0.01") == state.maintenance_margin
    assert state.liquidatable is True


def test_linear_long_without_leverage_is_never_liquidated() -> None:
    """A fully collateralised linear long has no liquidation, bankruptcy or margin-call price."""
    position = pos(Side.LONG, "0.5", "60000", "30000")
    assert liquidation_price(BTCUSDT, position) is None
    assert bankruptcy_price(BTCUSDT, position) is None
    assert ratio_price(BTCUSDT, position, CALL_RATIO) is None


def test_long_liquidatable_everywhere_in_a_capped_table_still_has_a_price() -> None:
    """A linear long already past its threshold shows a price above every covered mark, not null."""
    contract = Contract(
        symbol="X", kind=ContractKind.LINEAR, brackets=(Bracket(D("61000"), D("0.05"), ZERO),)
    )
    position = pos(Side.LONG, "1", "60000", "480")
    assert assess(contract, position, D("60000")).liquidatable is True
    # 480 + (P - 60000) = 0.05*P  =>  P = 59520/0.95, notional 62,652 beyond the 61,000 cap
    assert q28(59520, "0.95") == liquidation_price(contract, position)
    # 0.8*(480 + P - 60000) = 0.05*P  =>  P = 47616/0.75
    assert D("63488") == ratio_price(contract, position, CALL_RATIO)


def test_inverse_short_liquidatable_everywhere_in_a_capped_table_still_has_a_price() -> None:
    """An inverse short already past its threshold shows a price below every covered mark."""
    contract = Contract(
        symbol="Y",
        kind=ContractKind.INVERSE,
        brackets=(Bracket(D("2.01"), D("0.05"), ZERO),),
        contract_size=D("100"),
    )
    position = pos(Side.SHORT, "1000", "50000", "0.016")
    assert assess(contract, position, D("50000")).liquidatable is True
    # 0.016 - 100000*(1/50000 - 1/P) = 0.05*100000/P  =>  P = 95000/1.984 (notional 2.09)
    assert q28(95000, "1.984") == liquidation_price(contract, position)


def test_thresholds_beyond_a_finite_cap_on_the_losing_side_are_null() -> None:
    """A position safe at every covered price shows no price when its root is not covered."""
    linear = Contract(
        symbol="X", kind=ContractKind.LINEAR, brackets=(Bracket(D("61000"), D("0.004"), ZERO),)
    )
    # Short root 66000/1.004 has notional 65,737 > 61,000: no covered price reaches it.
    assert liquidation_price(linear, pos(Side.SHORT, "1", "60000", "6000")) is None
    inverse = Contract(
        symbol="Y",
        kind=ContractKind.INVERSE,
        brackets=(Bracket(D("2.1"), D("0.004"), ZERO),),
        contract_size=D("100"),
    )
    # Long root 100400/2.2 has notional 2.19 > 2.1: no covered price reaches it.
    assert liquidation_price(inverse, pos(Side.LONG, "1000", "50000", "0.2")) is None


def test_prices_are_rounded_to_28_significant_digits() -> None:
    """Every trigger price leaves the module with at most 28 significant digits."""
    position = pos(Side.LONG, "1000", "50000", "0.2")
    for price in (
        liquidation_price(BTCUSD, position),
        ratio_price(BTCUSD, position, CALL_RATIO),
        bankruptcy_price(BTCUSD, position),
    ):
        assert price is not None
        assert significant_digits(price) <= 28


# --------------------------------------------------------------------------- bracket rule


def test_bracket_for_a_notional_exactly_at_a_cap_is_the_lower_bracket() -> None:
    """A notional of exactly 50,000 uses the first tier's rate, not the second's."""
    assert SAMPLE_BRACKETS[0] == BTCUSDT.bracket_for(D("50000"))
    assert SAMPLE_BRACKETS[1] == BTCUSDT.bracket_for(D("250000"))
    assert SAMPLE_BRACKETS[2] == BTCUSDT.bracket_for(D("1000000"))


def test_bracket_for_just_above_a_cap_is_the_upper_bracket() -> None:
    """A notional a hair above 50,000 uses the second tier."""
    assert SAMPLE_BRACKETS[1] == BTCUSDT.bracket_for(D("50000.00000000000000000001"))
    assert SAMPLE_BRACKETS[2] == BTCUSDT.bracket_for(D("250000.01"))


def test_bracket_for_zero_is_the_first_bracket() -> None:
    """A zero notional belongs to the first bracket."""
    assert SAMPLE_BRACKETS[0] == BTCUSDT.bracket_for(ZERO)


def test_bracket_for_beyond_the_last_finite_cap_uses_the_last_bracket() -> None:
    """A notional above the last finite cap is still judged, at the last (highest) tier."""
    assert SAMPLE_BRACKETS[-1] == BTCUSDT.bracket_for(D("1000000.01"))
    state = assess(BTCUSDT, pos(Side.LONG, "100", "60000", "6000000"), D("60000"))
    assert D("6000000") * D("0.01") - D("1300") == state.maintenance_margin


def test_bracket_for_an_open_last_cap_accepts_anything() -> None:
    """With no cap on the last bracket, any notional finds a bracket."""
    assert BTCUSD_BRACKETS[-1] == BTCUSD.bracket_for(D("1e30"))
    assert BTCUSD_BRACKETS[-1] == BTCUSD.bracket_for(D("160.0000001"))
    assert BTCUSD_BRACKETS[-2] == BTCUSD.bracket_for(D("160"))


@pytest.mark.parametrize("contract", [BTCUSDT, BTCUSD], ids=["linear", "inverse"])
def test_maintenance_margin_is_continuous_at_every_cap(contract: Contract) -> None:
    """At each cap the lower and upper tier give the same maintenance margin."""
    for lower, upper in zip(contract.brackets, contract.brackets[1:], strict=False):
        cap = lower.notional_cap
        assert cap is not None
        at_cap = maintenance_margin(contract, cap)
        assert cap * upper.mmr - upper.cum == at_cap
        assert cap * lower.mmr - lower.cum == at_cap
        just_above = maintenance_margin(contract, cap + D("1e-9"))
        assert abs(just_above - at_cap) < D("1e-9")


def test_maintenance_margin_at_a_cap_uses_the_lower_tier_with_fee() -> None:
    """The closing fee is added on the notional in whichever tier applies."""
    contract = Contract(
        symbol="BTCUSDT",
        kind=ContractKind.LINEAR,
        brackets=SAMPLE_BRACKETS,
        close_fee_rate=D("0.0005"),
    )
    assert D("225") == maintenance_margin(contract, D("50000"))
    assert D("1050") == maintenance_margin(contract, D("200000"))


# --------------------------------------------------------------------------- check_brackets


def test_check_brackets_accepts_the_sample_tables() -> None:
    """The sample linear and inverse tables have no problems."""
    assert [] == check_brackets(SAMPLE_BRACKETS, ZERO, CLEAR_RATIO)
    assert [] == check_brackets(SAMPLE_BRACKETS, D("0.0005"), CLEAR_RATIO)
    assert [] == check_brackets(BTCUSD_BRACKETS, ZERO, CLEAR_RATIO)


def test_check_brackets_rejects_an_empty_table() -> None:
    """An empty tier table is reported as such."""
    assert ["at least one bracket is required"] == check_brackets((), ZERO, CLEAR_RATIO)


def test_check_brackets_names_a_non_increasing_cap() -> None:
    """A cap that does not exceed the previous one is reported with its index."""
    brackets = (
        Bracket(D("50000"), D("0.004"), D("0")),
        Bracket(D("40000"), D("0.005"), D("50")),
        Bracket(D("1000000"), D("0.01"), D("250")),
    )
    assert ["brackets[1].notional_cap must exceed the previous cap"] == check_brackets(
        brackets, ZERO, CLEAR_RATIO
    )


def test_check_brackets_names_an_equal_cap() -> None:
    """A cap equal to the previous one is also reported."""
    brackets = (
        Bracket(D("50000"), D("0.004"), D("0")),
        Bracket(D("50000"), D("0.005"), D("50")),
    )
    assert ["brackets[1].notional_cap must exceed the previous cap"] == check_brackets(
        brackets, ZERO, CLEAR_RATIO
    )


def test_check_brackets_names_a_discontinuous_cum() -> None:
    """A cum that breaks continuity is reported with the value it must have."""
    brackets = (*SAMPLE_BRACKETS[:2], Bracket(D("1000000"), D("0.01"), D("1250")))
    assert [
        "brackets[2].cum must be 1300.000 to keep the maintenance margin continuous at "
        "notional 250000, got 1250"
    ] == check_brackets(brackets, ZERO, CLEAR_RATIO)


def test_check_brackets_names_a_non_zero_first_cum() -> None:
    """The first bracket's cum must be zero."""
    brackets = (Bracket(D("50000"), D("0.004"), D("10")),)
    assert ["brackets[0].cum must be 0 for the first bracket, got 10"] == check_brackets(
        brackets, ZERO, CLEAR_RATIO
    )


def test_check_brackets_names_a_rate_at_the_clear_ratio() -> None:
    """An mmr plus closing fee at or above the clearing ratio is reported for its bracket."""
    brackets = (
        Bracket(D("50000"), D("0.004"), D("0")),
        Bracket(None, D("0.6995"), D("34775")),
    )
    assert [] == check_brackets(brackets, D("0.0004"), CLEAR_RATIO)
    problems = check_brackets(brackets, D("0.0005"), CLEAR_RATIO)
    assert [
        "brackets[1].mmr + close_fee_rate (0.7000) must be below margin_call_clear_ratio "
        "(0.7) and 1"
    ] == problems


def test_check_brackets_names_a_rate_of_one_or_more() -> None:
    """An mmr of 1 is reported even when the clearing ratio is above 1."""
    brackets = (Bracket(None, D("1"), D("0")),)
    assert [
        "brackets[0].mmr + close_fee_rate (1) must be below margin_call_clear_ratio (2) and 1"
    ] == check_brackets(brackets, ZERO, D("2"))


def test_check_brackets_names_an_open_cap_that_is_not_last() -> None:
    """Only the last bracket may omit its cap."""
    brackets = (
        Bracket(None, D("0.004"), D("0")),
        Bracket(D("250000"), D("0.005"), D("50")),
    )
    assert ["brackets[0].notional_cap may be omitted only on the last bracket"] == check_brackets(
        brackets, ZERO, CLEAR_RATIO
    )


def test_check_brackets_names_non_positive_mmr_and_negative_cum() -> None:
    """A zero mmr and a negative cum are both reported with their index."""
    brackets = (
        Bracket(D("50000"), D("0"), D("0")),
        Bracket(None, D("0.001"), D("-50")),
    )
    problems = check_brackets(brackets, ZERO, CLEAR_RATIO)
    assert "brackets[0].mmr must be positive, got 0" in problems
    assert "brackets[1].cum must not be negative, got -50" in problems


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Scenario:
    """A contract with a valid random tier table and a position on it."""

    contract: Contract
    position: Position
    leverage: Decimal


def _significant(value: Decimal, digits: int) -> Decimal:
    """``value`` rounded to ``digits`` significant digits."""
    return Context(prec=digits, rounding=ROUND_HALF_EVEN).plus(value)


def _decimal(
    mantissa: st.SearchStrategy[int], exponent: st.SearchStrategy[int]
) -> st.SearchStrategy[Decimal]:
    """Decimals ``mantissa·10**exponent``."""
    return st.builds(lambda m, e: D(m).scaleb(e), mantissa, exponent)


PRICES = _decimal(st.integers(1, 99_999), st.integers(-2, 2))
QUANTITIES = _decimal(st.integers(1, 999_999), st.integers(-6, 0))
LEVERAGE = st.decimals(D("1.5"), D("125"), places=2)
# Unleveraged, moderately and highly leveraged (beyond 1/mmr, liquidatable at entry).
ANY_LEVERAGE = st.one_of(
    st.decimals(D("0.5"), D("0.99"), places=2),
    LEVERAGE,
    st.decimals(D("10"), D("125"), places=2),
)


@st.composite
def scenarios(
    draw: st.DrawFn,
    kinds: tuple[ContractKind, ...] = (ContractKind.LINEAR, ContractKind.INVERSE),
    sides: tuple[Side, ...] = (Side.LONG, Side.SHORT),
    open_last: bool | None = None,
    leverages: st.SearchStrategy[Decimal] | None = None,
) -> Scenario:
    """A valid tier table (1-5 brackets) with a position whose entry notional it covers."""
    kind = draw(st.sampled_from(kinds))
    side = draw(st.sampled_from(sides))
    entry = draw(PRICES)
    qty = draw(QUANTITIES)
    size = draw(st.sampled_from((ONE, D(10), D(100)))) if kind is ContractKind.INVERSE else ONE
    leverage = draw(LEVERAGE if leverages is None else leverages)
    with localcontext(Context(prec=28, rounding=ROUND_HALF_EVEN)):
        entry_notional = qty * entry if kind is ContractKind.LINEAR else qty * size / entry
        margin = entry_notional / leverage

    count = draw(st.integers(1, 5))
    mmrs = sorted(
        draw(
            st.lists(
                st.decimals(D("0.0011"), D("0.0999"), places=4),
                min_size=count,
                max_size=count,
                unique=True,
            )
        )
    )
    caps: list[Decimal | None] = []
    cap = _significant(entry_notional * draw(st.decimals(D("0.05"), D("3"), places=2)), 6)
    for _ in range(count):
        caps.append(cap)
        cap = _significant(cap * draw(st.decimals(D("1.2"), D("10"), places=2)), 6)
    last_open = draw(st.booleans()) if open_last is None else open_last
    if last_open:
        caps[-1] = None
    else:
        # Keep the position itself covered, and sometimes put the last cap just above it,
        # where a threshold may fall beyond the table.
        tight = _significant(entry_notional * draw(st.decimals(D("1.001"), D("1.2"), places=3)), 6)
        floor = caps[-2] if count > 1 else ZERO
        last = caps[-1]
        assert last is not None
        assert floor is not None
        if last < entry_notional or (tight > floor and draw(st.booleans())):
            caps[-1] = max(tight, last) if tight <= floor else tight

    brackets: list[Bracket] = []
    cum = ZERO
    for index, mmr in enumerate(mmrs):
        if index:
            previous_cap = caps[index - 1]
            assert previous_cap is not None
            cum = cum + previous_cap * (mmr - mmrs[index - 1])
        brackets.append(Bracket(notional_cap=caps[index], mmr=mmr, cum=cum))
    fee = draw(st.one_of(st.just(ZERO), st.decimals(ZERO, D("0.001"), places=5)))
    contract = Contract(
        symbol="TEST",
        kind=kind,
        brackets=tuple(brackets),
        contract_size=size,
        close_fee_rate=fee,
    )
    position = Position(side=side, qty=qty, entry_price=entry, margin=margin)
    return Scenario(contract=contract, position=position, leverage=leverage)


def in_table(contract: Contract, position: Position, price: Decimal) -> bool:
    """True when the notional at ``price`` is covered by the tier table."""
    cap = contract.brackets[-1].notional_cap
    return cap is None or notional(contract, position, price) <= cap


def worse(side: Side, price: Decimal, hair: Decimal = HAIR) -> Decimal:
    """A price a hair on the losing side of ``price``."""
    return price * (ONE - hair) if side is Side.LONG else price * (ONE + hair)


def better(side: Side, price: Decimal, hair: Decimal = HAIR) -> Decimal:
    """A price a hair on the winning side of ``price``."""
    return price * (ONE + hair) if side is Side.LONG else price * (ONE - hair)


def sample_prices(position: Position) -> list[Decimal]:
    """A spread of positive prices around the entry, from 1e-6·E to 1000·E."""
    entry = position.entry_price
    return [entry * D("1e-6"), *(entry * factor for factor in PRICE_FACTORS)]


# --------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(scenarios())
def test_generated_tables_are_valid(scenario: Scenario) -> None:
    """Every generated tier table passes check_brackets (so the properties below apply)."""
    contract = scenario.contract
    assert [] == check_brackets(contract.brackets, contract.close_fee_rate, CLEAR_RATIO)


@PROPERTY_SETTINGS
@given(scenarios())
def test_liquidation_price_is_where_balance_meets_maintenance(scenario: Scenario) -> None:
    """At the liquidation price MB = MM; a hair beyond it is liquidatable, a hair before is not."""
    contract, position = scenario.contract, scenario.position
    price = liquidation_price(contract, position)
    assume(price is not None)
    assert price is not None
    assert price > 0
    assert significant_digits(price) <= 28
    if in_table(contract, position, price):
        state = assess(contract, position, price)
        gap = abs(state.margin_balance - state.maintenance_margin)
        assert gap <= BALANCE_TOLERANCE * state.notional
    beyond = worse(position.side, price)
    if in_table(contract, position, beyond):
        assert assess(contract, position, beyond).liquidatable is True
    before = better(position.side, price)
    if in_table(contract, position, before):
        assert assess(contract, position, before).liquidatable is False


@PROPERTY_SETTINGS
@given(scenarios(open_last=True))
def test_liquidation_price_hairs_with_an_open_last_cap(scenario: Scenario) -> None:
    """With an open last tier every hair check runs: beyond liquidates, before does not."""
    contract, position = scenario.contract, scenario.position
    price = liquidation_price(contract, position)
    assume(price is not None)
    assert price is not None
    state = assess(contract, position, price)
    assert abs(state.margin_balance - state.maintenance_margin) <= (
        BALANCE_TOLERANCE * state.notional
    )
    assert assess(contract, position, worse(position.side, price)).liquidatable is True
    assert assess(contract, position, better(position.side, price)).liquidatable is False


@PROPERTY_SETTINGS
@given(scenarios(kinds=(ContractKind.LINEAR,), sides=(Side.SHORT,), open_last=True))
def test_linear_short_with_leverage_always_has_a_liquidation_price(scenario: Scenario) -> None:
    """A leveraged linear short on an uncapped table always shows a liquidation price."""
    assert liquidation_price(scenario.contract, scenario.position) is not None


@PROPERTY_SETTINGS
@given(scenarios(open_last=True))
def test_every_leveraged_position_on_an_uncapped_table_has_a_liquidation_price(
    scenario: Scenario,
) -> None:
    """With leverage above 1 and an open last tier, longs and shorts both show a price."""
    assert liquidation_price(scenario.contract, scenario.position) is not None


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE))
def test_no_liquidation_price_means_never_liquidatable(scenario: Scenario) -> None:
    """When no liquidation price is shown, no covered price liquidates the position."""
    contract, position = scenario.contract, scenario.position
    liquidatable_at = [
        price
        for price in sample_prices(position)
        if in_table(contract, position, price) and assess(contract, position, price).liquidatable
    ]
    if liquidatable_at:
        assert liquidation_price(contract, position) is not None, liquidatable_at


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE))
def test_no_margin_call_price_means_never_called(scenario: Scenario) -> None:
    """When no margin-call price is shown, no covered price reaches the 0.8 ratio."""
    contract, position = scenario.contract, scenario.position
    called_at = [
        price
        for price in sample_prices(position)
        if in_table(contract, position, price)
        and assess(contract, position, price).margin_ratio >= CALL_RATIO
    ]
    if called_at:
        assert ratio_price(contract, position, CALL_RATIO) is not None, called_at


@pytest.mark.parametrize(
    ("kind", "side"), [(ContractKind.LINEAR, Side.LONG), (ContractKind.INVERSE, Side.SHORT)]
)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_unleveraged_position_has_no_liquidation_price(
    kind: ContractKind, side: Side, data: st.DataObject
) -> None:
    """A linear long with margin ≥ notional, or an inverse short with margin ≥ face value
    in coin, shows no liquidation or bankruptcy price and never liquidates."""
    leverages = st.decimals(D("0.1"), D("0.99"), places=2)
    scenario = data.draw(scenarios(kinds=(kind,), sides=(side,), leverages=leverages))
    contract, position = scenario.contract, scenario.position
    assert liquidation_price(contract, position) is None
    assert bankruptcy_price(contract, position) is None
    for price in sample_prices(position):
        if in_table(contract, position, price):
            assert assess(contract, position, price).liquidatable is False, price


@PROPERTY_SETTINGS
@given(scenarios())
def test_margin_call_price_is_where_the_ratio_reaches_the_threshold(scenario: Scenario) -> None:
    """At the margin-call price MM/MB = 0.8; a hair worse is ≥ 0.8, a hair better is < 0.8."""
    contract, position = scenario.contract, scenario.position
    price = ratio_price(contract, position, CALL_RATIO)
    assume(price is not None)
    assert price is not None
    assert price > 0
    assert significant_digits(price) <= 28
    if in_table(contract, position, price):
        state = assess(contract, position, price)
        gap = abs(CALL_RATIO * state.margin_balance - state.maintenance_margin)
        assert gap <= BALANCE_TOLERANCE * state.notional
    beyond = worse(position.side, price)
    if in_table(contract, position, beyond):
        assert assess(contract, position, beyond).margin_ratio >= CALL_RATIO
    before = better(position.side, price)
    if in_table(contract, position, before):
        state = assess(contract, position, before)
        assert state.margin_ratio < CALL_RATIO
        assert state.liquidatable is False


@PROPERTY_SETTINGS
@given(scenarios())
def test_margin_call_price_is_on_the_safe_side_of_the_liquidation_price(
    scenario: Scenario,
) -> None:
    """A margin call always comes before liquidation: above it for a long, below for a short."""
    contract, position = scenario.contract, scenario.position
    call = ratio_price(contract, position, CALL_RATIO)
    clear = ratio_price(contract, position, CLEAR_RATIO)
    liquidation = liquidation_price(contract, position)
    assume(call is not None and liquidation is not None)
    assert call is not None
    assert liquidation is not None
    if position.side is Side.LONG:
        assert call > liquidation
        if clear is not None:
            assert clear > call
    else:
        assert call < liquidation
        if clear is not None:
            assert clear < call


@PROPERTY_SETTINGS
@given(scenarios())
def test_bankruptcy_price_is_where_the_balance_is_zero(scenario: Scenario) -> None:
    """At the bankruptcy price the margin balance is zero, and it lies beyond the liquidation."""
    contract, position = scenario.contract, scenario.position
    price = bankruptcy_price(contract, position)
    assume(price is not None)
    assert price is not None
    assert price > 0
    assert significant_digits(price) <= 28
    balance = position.margin + unrealized_pnl(contract, position, price)
    assert abs(balance) <= BALANCE_TOLERANCE * notional(contract, position, price)
    with localcontext(Context(prec=60)):
        s = position.side.sign
        if contract.kind is ContractKind.LINEAR:
            exact = position.entry_price - s * position.margin / position.qty
        else:
            face = position.qty * contract.contract_size
            exact = ONE / (ONE / position.entry_price + s * position.margin / face)
        assert abs(price - exact) <= D("1e-26") * exact
    liquidation = liquidation_price(contract, position)
    if liquidation is not None:
        if position.side is Side.LONG:
            assert price < liquidation
        else:
            assert price > liquidation


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE))
def test_status_worsens_monotonically_with_price(scenario: Scenario) -> None:
    """A long liquidatable at some price is liquidatable at every lower price; shorts mirror."""
    contract, position = scenario.contract, scenario.position
    prices = sorted(p for p in sample_prices(position) if in_table(contract, position, p))
    if position.side is Side.SHORT:
        prices.reverse()
    # Walk from the worst price to the best: once safe, always safe.
    flags = [assess(contract, position, p).liquidatable for p in prices]
    assert sorted(flags, reverse=True) == flags


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE))
def test_assess_agrees_with_the_liquidation_price(scenario: Scenario) -> None:
    """At every sampled price the liquidatable flag matches which side of the price it is on."""
    contract, position = scenario.contract, scenario.position
    liquidation = liquidation_price(contract, position)
    assume(liquidation is not None)
    assert liquidation is not None
    for price in sample_prices(position):
        if not in_table(contract, position, price):
            continue
        if abs(price - liquidation) <= D("1e-9") * liquidation:
            continue
        expected = price < liquidation if position.side is Side.LONG else price > liquidation
        assert expected == assess(contract, position, price).liquidatable, price


@PROPERTY_SETTINGS
@given(scenarios(kinds=(ContractKind.LINEAR,)), PRICES)
def test_linear_notional_and_pnl_are_exact(scenario: Scenario, mark: Decimal) -> None:
    """A linear position's notional is q·P and its PnL s·q·(P - E), digit for digit."""
    contract, position = scenario.contract, scenario.position
    assert position.qty * mark == notional(contract, position, mark)
    expected_pnl = position.side.sign * position.qty * (mark - position.entry_price)
    assert expected_pnl == unrealized_pnl(contract, position, mark)


@PROPERTY_SETTINGS
@given(scenarios(kinds=(ContractKind.INVERSE,)), PRICES)
def test_inverse_notional_and_pnl_match_the_formulas(scenario: Scenario, mark: Decimal) -> None:
    """An inverse position's notional is n·c/P and its PnL s·n·c·(1/E - 1/P), to 28 digits."""
    contract, position = scenario.contract, scenario.position
    with localcontext(Context(prec=60)):
        face = position.qty * contract.contract_size
        exact_notional = face / mark
        exact_pnl = position.side.sign * face * (ONE / position.entry_price - ONE / mark)
        scale = face / position.entry_price + exact_notional
        assert abs(exact_notional - notional(contract, position, mark)) <= (
            D("1e-27") * exact_notional
        )
        assert abs(exact_pnl - unrealized_pnl(contract, position, mark)) <= D("1e-27") * scale


def _edges(contract: Contract, position: Position, ratio: Decimal) -> list[Decimal]:
    """Prices where rounding decides: the ratio and liquidation prices, and a hair either side."""
    edges = []
    for price in (ratio_price(contract, position, ratio), liquidation_price(contract, position)):
        if price is not None:
            edges += [price, worse(position.side, price, D("1e-27")), better(position.side, price)]
            edges += [worse(position.side, price), better(position.side, price, D("1e-27"))]
    return edges


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE), st.sampled_from((CALL_RATIO, CLEAR_RATIO, D("0.95"))))
def test_short_of_is_what_assess_decides(scenario: Scenario, ratio: Decimal) -> None:
    """short_of answers ``not liquidatable and not ratio_reached`` of assess at every price,
    the rounding edges at the trigger prices included."""
    contract, position = scenario.contract, scenario.position
    for price in [*sample_prices(position), *_edges(contract, position, ratio)]:
        state = assess(contract, position, price)
        expected = not state.liquidatable and not state.ratio_reached(ratio)
        assert expected == short_of(contract, position, price, ratio), price


class _AssessingModel(BinanceModel):
    """Binance's model never short of a trigger: apply_update takes its general path
    (evaluate) for every version."""

    def short_of(self, position: Holding, mark: Decimal, ratio: Decimal) -> bool:
        return False


@PROPERTY_SETTINGS
@given(scenarios(leverages=ANY_LEVERAGE), st.sampled_from((None, *Status)))
def test_a_version_is_decided_as_the_general_path_decides_it(
    scenario: Scenario, stored: Status | None
) -> None:
    """apply_update's shortcut for a healthy version (short_of) makes the decision, event
    and triggers evaluate makes, at every sampled price and rounding edge, whatever the
    stored version's status."""
    contract, position = scenario.contract, scenario.position
    general = replace(contract, model=_AssessingModel(contract))
    risk = RiskLimits(margin_call_ratio=CALL_RATIO, margin_call_clear_ratio=CLEAR_RATIO)
    fields = (position.side, position.qty, position.entry_price, position.margin)
    update = PositionUpdate("p-1", "acct", "TEST", *fields, 3)
    previous = None if stored is None else PositionRecord("p-1", "acct", "TEST", *fields, 2, stored)
    for price in [*sample_prices(position), *_edges(contract, position, CALL_RATIO)]:
        quote = Quote(price, 1_700_000_000_000)
        expected = apply_update(general, previous, update, quote, risk, 5, 2)
        assert expected == apply_update(contract, previous, update, quote, risk, 5, 2), price
