"""The trigger sets: which one is a side's worsening set, and how evaluation uses it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from monitor.core.evaluation import Quote, evaluate, triggers_for
from monitor.core.margin import Bracket, Contract, ContractKind, Side, assess, liquidation_price
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.triggers import WORSENING_FIRST, WORSENS, Direction, TriggerSet

pytestmark = pytest.mark.unit

BTCUSDT = Contract(
    "BTCUSDT",
    ContractKind.LINEAR,
    (
        Bracket(Decimal(50000), Decimal("0.004"), Decimal(0)),
        Bracket(Decimal(250000), Decimal("0.005"), Decimal(50)),
    ),
)
RISK = RiskLimits()


def record(side: Side, status: Status = Status.HEALTHY) -> PositionRecord:
    """0.5 BTC at 60,000 with 3,000 of margin."""
    return PositionRecord(
        "p-1", "a", "BTCUSDT", side, Decimal("0.5"), Decimal(60000), Decimal(3000), 1, status
    )


def test_a_long_worsens_downwards_and_a_short_upwards() -> None:
    """The rule, as its sets name it: long:down and short:up are the worsening sets."""
    assert {Side.LONG: Direction.DOWN, Side.SHORT: Direction.UP} == WORSENS
    assert TriggerSet.LONG_DOWN is TriggerSet.worsening_of(Side.LONG)
    assert TriggerSet.SHORT_UP is TriggerSet.worsening_of(Side.SHORT)
    assert TriggerSet.LONG_UP is TriggerSet.improving_of(Side.LONG)
    assert TriggerSet.SHORT_DOWN is TriggerSet.improving_of(Side.SHORT)
    assert {TriggerSet.LONG_DOWN, TriggerSet.SHORT_UP} == {s for s in TriggerSet if s.worsening}


@pytest.mark.parametrize("side", list(Side))
def test_the_worsening_direction_is_where_the_liquidation_price_lies(side: Side) -> None:
    """The margin math agrees with the rule: a position's liquidation price lies from its entry
    in its worsening set's direction, and a mark moved that way lowers its margin ratio's
    headroom (the ratio of maintenance margin to margin balance grows)."""
    position = record(side)
    liquidation = liquidation_price(BTCUSDT, position.position)
    assert liquidation is not None
    expected = Direction.DOWN if liquidation < position.entry_price else Direction.UP
    assert expected is TriggerSet.worsening_of(side).direction
    step = Decimal(-100) if expected is Direction.DOWN else Decimal(100)
    at_entry = assess(BTCUSDT, position.position, position.entry_price).margin_ratio
    moved = assess(BTCUSDT, position.position, position.entry_price + step).margin_ratio
    assert moved > at_entry


@pytest.mark.parametrize("side", list(Side))
def test_evaluation_files_each_trigger_under_its_set(side: Side) -> None:
    """A healthy position's margin-call price goes in its worsening set; in margin call, its
    liquidation price there and its clearing price in the improving set."""
    worse, better = TriggerSet.worsening_of(side), TriggerSet.improving_of(side)
    healthy = triggers_for(BTCUSDT, record(side), RISK)
    assert healthy.price(worse.direction) is not None
    assert healthy.price(better.direction) is None
    called = record(side, Status.MARGIN_CALL)
    in_call = triggers_for(BTCUSDT, called, RISK)
    assert liquidation_price(BTCUSDT, called.position) == in_call.price(worse.direction)
    assert in_call.price(better.direction) is not None


@pytest.mark.parametrize("side", list(Side))
def test_a_mark_past_the_worsening_trigger_calls_the_margin(side: Side) -> None:
    """A mark just past a healthy position's worsening trigger, in the set's direction, is a
    margin call; just short of it, nothing happens."""
    worse = TriggerSet.worsening_of(side)
    price = triggers_for(BTCUSDT, record(side), RISK).price(worse.direction)
    assert price is not None
    step = Decimal(-1) if worse.direction is Direction.DOWN else Decimal(1)
    past = evaluate(BTCUSDT, record(side), Quote(price + step, 1), RISK, now_ms=2)
    short = evaluate(BTCUSDT, record(side), Quote(price - step, 1), RISK, now_ms=2)
    assert (Status.MARGIN_CALL, Status.HEALTHY) == (past.record.status, short.record.status)


def test_candidates_are_read_worsening_sets_first() -> None:
    """A tick's candidates: the two worsening sets, then the two improving ones."""
    assert [True, True, False, False] == [s.worsening for s in WORSENING_FIRST]
    assert set(TriggerSet) == set(WORSENING_FIRST)


def test_each_set_is_one_side_and_direction() -> None:
    """Four sets, one per side and direction, named as their keys name them."""
    assert ["long:down", "long:up", "short:down", "short:up"] == [s.name_part for s in TriggerSet]
    for trigger_set in TriggerSet:
        assert trigger_set is TriggerSet.of(trigger_set.side, trigger_set.direction)
