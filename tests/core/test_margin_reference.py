"""The prepared solver in :mod:`monitor.core.margin` equals the previous one, digit for digit.

:mod:`margin_reference` keeps the implementation the module had before each
contract's per-bracket constants were prepared once and per-position terms
were hoisted out of the bracket loop. Every threshold and every assessed
state must come out identical (same digits and exponent, not merely equal
values), on valid tier tables and on tables ``check_brackets`` would refuse.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

import margin_reference as reference
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_margin import ANY_LEVERAGE, Scenario, scenarios

from monitor.core import margin
from monitor.core.margin import Bracket, Contract, ContractKind, Position, Side
from monitor.core.position import PositionRecord
from monitor.core.status import Status

pytestmark = pytest.mark.unit

D = Decimal
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RATIO_SPELLINGS = ("0.8", "0.80", "0.7", "0.700", "0.5", "1", "1.0", "0.95")


def same(expected: Decimal | None, actual: Decimal | None) -> bool:
    """Identical Decimals: same sign, digits and exponent (or both None)."""
    if expected is None or actual is None:
        return expected is actual
    return expected.as_tuple() == actual.as_tuple()


def assert_thresholds_match(contract: Contract, position: Position, ratios: list[Decimal]) -> None:
    """Liquidation, bankruptcy and every ratio price agree with the reference."""
    pairs = [
        (reference.liquidation_price, margin.liquidation_price),
        (reference.bankruptcy_price, margin.bankruptcy_price),
    ]
    for old, new in pairs:
        expected, actual = old(contract, position), new(contract, position)
        assert same(expected, actual), (old.__name__, expected, actual)
    for ratio in ratios:
        expected = reference.ratio_price(contract, position, ratio)
        actual = margin.ratio_price(contract, position, ratio)
        assert same(expected, actual), (str(ratio), expected, actual)


def assert_states_match(contract: Contract, position: Position, marks: list[Decimal]) -> None:
    """assess, notional, PnL and maintenance margin agree with the reference at each mark."""
    for mark in marks:
        expected = reference.assess(contract, position, mark)
        actual = margin.assess(contract, position, mark)
        for name in (
            "notional",
            "unrealized_pnl",
            "margin_balance",
            "maintenance_margin",
            "margin_ratio",
        ):
            assert same(getattr(expected, name), getattr(actual, name)), (name, mark)
        assert same(
            reference.notional(contract, position, mark), margin.notional(contract, position, mark)
        )
        assert same(
            reference.unrealized_pnl(contract, position, mark),
            margin.unrealized_pnl(contract, position, mark),
        )
        value = expected.notional
        assert same(
            reference.maintenance_margin(contract, value),
            margin.maintenance_margin(contract, value),
        )


def marks_around(contract: Contract, position: Position, ratios: list[Decimal]) -> list[Decimal]:
    """The entry, a spread around it, and every threshold (where ties are decided)."""
    entry = position.entry_price
    marks = [entry, entry * D("0.5"), entry * D("1.5"), entry * D("0.999"), entry * D("1.001")]
    thresholds = [
        reference.liquidation_price(contract, position),
        reference.bankruptcy_price(contract, position),
        *(reference.ratio_price(contract, position, ratio) for ratio in ratios),
    ]
    return marks + [price for price in thresholds if price is not None and price > 0]


# --------------------------------------------------------------------------- strategies


def _decimal(digits_before: int, digits_after: int) -> st.SearchStrategy[Decimal]:
    """Positive decimals with up to the given digits before and after the point."""
    return st.builds(
        lambda whole, fraction, places: D(whole) + D(fraction).scaleb(-places),
        st.integers(0, 10**digits_before - 1),
        st.integers(1, 10**digits_after - 1),
        st.integers(digits_after, digits_after),
    )


# The wire allows 40 digits before and after the point: long values exercise
# rounding at the solving precision (50 digits), short ones the common case.
WIDE = st.one_of(_decimal(6, 2), _decimal(2, 8), _decimal(40, 40), _decimal(20, 3))
RATIOS = st.lists(st.sampled_from(RATIO_SPELLINGS).map(D), min_size=1, max_size=4)


@st.composite
def wild_contracts(draw: st.DrawFn) -> Contract:
    """Tier tables of any shape, including ones check_brackets would refuse."""
    count = draw(st.integers(1, 6))
    brackets = []
    cap = draw(WIDE)
    for index in range(count):
        is_open = index == count - 1 and draw(st.booleans())
        brackets.append(
            Bracket(
                notional_cap=None if is_open else cap,
                mmr=draw(
                    st.sampled_from(("0.004", "0.005", "0.0065", "0.01", "0.125", "0.5")).map(D)
                ),
                cum=draw(st.one_of(st.just(D(0)), WIDE)),
            )
        )
        cap = cap * draw(st.sampled_from((D(2), D("1.5"), D(10), D("1.000001"))))
    kind = draw(st.sampled_from((ContractKind.LINEAR, ContractKind.INVERSE)))
    return Contract(
        symbol="WILD",
        kind=kind,
        brackets=tuple(brackets),
        contract_size=draw(st.sampled_from((D(1), D(10), D(100), D("0.001")))),
        close_fee_rate=draw(st.sampled_from((D(0), D("0.0005"), D("0.00075")))),
    )


@st.composite
def wild_positions(draw: st.DrawFn) -> Position:
    return Position(
        side=draw(st.sampled_from((Side.LONG, Side.SHORT))),
        qty=draw(WIDE),
        entry_price=draw(WIDE),
        margin=draw(WIDE),
    )


@st.composite
def liquidated_on_a_cap(draw: st.DrawFn) -> tuple[Contract, Position]:
    """A position whose exact liquidation notional is a cap, its price a repeating decimal.

    The margin is solved from ``MB = MM`` at notional ``C`` (a cap); the
    quantity (3, 7, ...) makes the price itself not a terminating decimal,
    so the solved notional misses the cap by rounding at 50 digits and the
    bracket tolerance decides which bracket claims it.
    """
    kind = draw(st.sampled_from((ContractKind.LINEAR, ContractKind.INVERSE)))
    side = draw(st.sampled_from((Side.LONG, Side.SHORT)))
    sign = 1 if side is Side.LONG else -1
    size = D(1) if kind is ContractKind.LINEAR else draw(st.sampled_from((D(1), D(100))))
    qty = D(draw(st.sampled_from(("3", "7", "0.3", "13", "2.1"))))
    mmrs = [D("0.004"), D("0.005"), D("0.01")]
    fee = draw(st.sampled_from((D(0), D("0.0005"))))
    first_cap = draw(st.sampled_from((D("50000"), D("2"), D("7.5"), D("1000"))))
    caps = [first_cap, first_cap * 10, None]
    brackets, cum = [], D(0)
    for index, mmr in enumerate(mmrs):
        if index:
            previous = caps[index - 1]
            assert previous is not None
            cum += previous * (mmr - mmrs[index - 1])
        brackets.append(Bracket(caps[index], mmr, cum))
    at = draw(st.integers(0, 1))
    cap, bracket = caps[at], brackets[at]
    assert cap is not None
    rate = bracket.mmr + fee
    # entry notional a little on the better side of the cap
    factor = draw(st.sampled_from((D("1.01"), D("1.1"), D("0.99"), D("0.9"))))
    with localcontext(Context(prec=200)):  # exact: the root's notional is the cap itself
        if kind is ContractKind.LINEAR:
            entry = +(cap * factor / qty).quantize(D("1e-8"))
            margin_needed = rate * cap - bracket.cum - sign * (cap - qty * entry)
        else:
            entry = +(qty * size / (cap * factor)).quantize(D("1e-8"))
            margin_needed = rate * cap - bracket.cum - sign * (qty * size / entry - cap)
    contract = Contract("EDGE", kind, tuple(brackets), size, fee)
    return contract, Position(side, qty, entry, margin_needed)


@st.composite
def capped_at_a_root(draw: st.DrawFn) -> tuple[Contract, Position, list[Decimal]]:
    """A table whose first cap is exactly the notional at a root: the tolerance decides."""
    scenario: Scenario = draw(scenarios(leverages=ANY_LEVERAGE))
    contract, position = scenario.contract, scenario.position
    ratios = draw(RATIOS)
    root = draw(
        st.sampled_from(
            [
                reference.liquidation_price(contract, position),
                *(reference.ratio_price(contract, position, ratio) for ratio in ratios),
            ]
        )
    )
    if root is None or root <= 0:
        return contract, position, ratios
    cap = reference.notional(contract, position, root)
    first, *rest = contract.brackets
    moved = Bracket(notional_cap=cap, mmr=first.mmr, cum=first.cum)
    brackets = (moved, *(b for b in rest if b.notional_cap is None or b.notional_cap > cap))
    return (
        Contract(
            contract.symbol,
            contract.kind,
            brackets,
            contract.contract_size,
            contract.close_fee_rate,
        ),
        position,
        ratios,
    )


# --------------------------------------------------------------------------- properties


@EXAMPLES
@given(scenarios(leverages=ANY_LEVERAGE), RATIOS)
def test_thresholds_match_the_reference_on_valid_tables(
    scenario: Scenario, ratios: list[Decimal]
) -> None:
    """On valid venue-shaped tables every threshold is the reference's, digit for digit."""
    assert_thresholds_match(scenario.contract, scenario.position, ratios)


@EXAMPLES
@given(scenarios(leverages=ANY_LEVERAGE), RATIOS)
def test_states_match_the_reference_on_valid_tables(
    scenario: Scenario, ratios: list[Decimal]
) -> None:
    """assess and its parts equal the reference's at the entry, around it and at each threshold."""
    contract, position = scenario.contract, scenario.position
    assert_states_match(contract, position, marks_around(contract, position, ratios))


@EXAMPLES
@given(wild_contracts(), wild_positions(), RATIOS)
def test_thresholds_match_the_reference_on_any_table(
    contract: Contract, position: Position, ratios: list[Decimal]
) -> None:
    """Long operands (rounding at 50 digits) and refused tables change nothing either."""
    assert_thresholds_match(contract, position, ratios)
    assert_states_match(contract, position, marks_around(contract, position, ratios)[:5])


@EXAMPLES
@given(liquidated_on_a_cap())
def test_a_liquidation_notional_on_a_cap_is_decided_like_the_reference(
    case: tuple[Contract, Position],
) -> None:
    """A root on a cap, off by rounding only: the tolerance picks the reference's bracket."""
    contract, position = case
    assert_thresholds_match(contract, position, [D("0.8")])


@EXAMPLES
@given(capped_at_a_root())
def test_a_root_exactly_at_a_cap_is_decided_like_the_reference(
    case: tuple[Contract, Position, list[Decimal]],
) -> None:
    """Where a root's notional sits on a cap, the same bracket claims it."""
    contract, position, ratios = case
    assert_thresholds_match(contract, position, ratios)


@EXAMPLES
@given(wild_contracts(), wild_positions())
def test_a_ratio_at_a_bracket_rate_has_no_root_there_like_the_reference(
    contract: Contract, position: Position
) -> None:
    """A ratio equal to ``mmr + fee`` zeroes a linear long's slope: same answer as before."""
    ratios = [bracket.mmr + contract.close_fee_rate for bracket in contract.brackets]
    assert_thresholds_match(contract, position, ratios)


@EXAMPLES
@given(scenarios(leverages=ANY_LEVERAGE), RATIOS)
def test_a_stored_record_solves_like_its_position(
    scenario: Scenario, ratios: list[Decimal]
) -> None:
    """The math reads a PositionRecord directly; it gives what its Position gives."""
    contract, position = scenario.contract, scenario.position
    record = PositionRecord(
        "p-1",
        "a",
        contract.symbol,
        position.side,
        position.qty,
        position.entry_price,
        position.margin,
        1,
        Status.HEALTHY,
    )
    assert same(
        reference.liquidation_price(contract, position), margin.liquidation_price(contract, record)
    )
    for ratio in ratios:
        assert same(
            reference.ratio_price(contract, position, ratio),
            margin.ratio_price(contract, record, ratio),
        )


def test_equal_ratios_spelt_differently_keep_their_own_digits() -> None:
    """0.8 and 0.80 are one value but not one spelling: each gets the reference's digits."""
    contract = Contract(
        "X",
        ContractKind.LINEAR,
        (Bracket(D("50000"), D("0.004"), D(0)), Bracket(None, D("0.005"), D("50"))),
    )
    position = Position(Side.LONG, D("0.5"), D("60000"), D("3000"))
    for text in ("0.8", "0.80", "0.8", "0.800"):
        ratio = D(text)
        assert same(
            reference.ratio_price(contract, position, ratio),
            margin.ratio_price(contract, position, ratio),
        )


def test_an_empty_table_has_no_threshold_like_the_reference() -> None:
    """No brackets: None everywhere, as before."""
    contract = Contract("X", ContractKind.INVERSE, ())
    position = Position(Side.SHORT, D("1"), D("60000"), D("0.1"))
    assert_thresholds_match(contract, position, [D("0.8")])
