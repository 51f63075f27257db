"""The price guards' settings: ``[guards]`` for every symbol, ``[symbols.NAME.guards]`` on top.

(These were the tests of ``parse_guard_settings`` in tests/core/test_guards.py; the
parsing moved from the core to the configuration model, and the tests go through
the whole document as a file would.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from monitor.config.loading import parse_settings
from monitor.core.errors import ConfigError
from monitor.core.guards import GuardSettings

pytestmark = pytest.mark.unit

D = Decimal
SOURCE = "liqmon.toml"
SYMBOL = "BTC-PERP"


def guards_of(symbol_table: dict[str, Any], base: dict[str, Any] | None = None) -> GuardSettings:
    """The guards SYMBOL gets from its own table over ``base`` (the top-level [guards])."""
    return parse_settings(document(symbol_table, base), SOURCE, {}).guards[SYMBOL]


def document(symbol_table: Any, base: Any) -> dict[str, Any]:
    """One linear symbol with a one-tier table, its guards, and [guards] when given."""
    symbol = {"contract": "linear", "brackets": [{"mmr": "0.01"}], "guards": symbol_table}
    return {"symbols": {SYMBOL: symbol}, **({"guards": base} if base is not None else {})}


def test_defaults() -> None:
    """No guards table at all gives the documented defaults."""
    assert GuardSettings(10.0, D("0.05"), False, None, None, ()) == guards_of({})


def test_every_key() -> None:
    """Every key is read; decimals from strings or TOML-decimal numbers."""
    table = {
        "stale_after_s": 3,
        "max_mark_index_deviation": "0.02",
        "hold_on_deviation": True,
        "max_jump": D("0.2"),
        "mark_source": "okx",
        "index_sources": ["okx", "binance", "bybit"],
        "max_future_skew_s": 2.5,
    }
    sources = ("okx", "binance", "bybit")
    expected = GuardSettings(3.0, D("0.02"), True, D("0.2"), "okx", sources, 2.5)
    assert expected == guards_of(table)


def test_a_symbol_inherits_from_guards_and_false_disables() -> None:
    """Keys a symbol leaves out come from [guards]; false turns off a limit or the mark_source."""
    base = {
        "stale_after_s": 5,
        "max_mark_index_deviation": "0.01",
        "hold_on_deviation": True,
        "max_jump": "0.1",
        "mark_source": "okx",
        "index_sources": ["okx"],
    }
    table = {"max_jump": False, "mark_source": False, "index_source": "bybit"}
    expected = GuardSettings(5.0, D("0.01"), True, None, None, ("bybit",))
    assert expected == guards_of(table, base)
    assert GuardSettings(5.0, D("0.01"), True, D("0.1"), "okx", ("okx",)) == guards_of({}, base)


MISTAKES = [
    ({"stale": 1}, "stale: unknown key"),
    ({"stale_after_s": 0}, "stale_after_s: must be a positive number of seconds, got 0"),
    ({"stale_after_s": "10"}, "stale_after_s: must be a number of seconds, got '10'"),
    ({"stale_after_s": True}, "stale_after_s: must be a number of seconds, got True"),
    (
        {"max_future_skew_s": -1},
        "max_future_skew_s: must be a positive number of seconds, got -1",
    ),
    ({"max_jump": "abc"}, "max_jump: must be a decimal, got 'abc'"),
    ({"max_jump": "-0.1"}, "max_jump: must be a finite positive decimal, got '-0.1'"),
    ({"max_jump": True}, "max_jump: must be a decimal string or number (or false), got True"),
    (
        {"max_mark_index_deviation": "NaN"},
        "max_mark_index_deviation: must be a finite positive decimal, got 'NaN'",
    ),
    ({"hold_on_deviation": 1}, "hold_on_deviation: must be true or false, got 1"),
    ({"mark_source": ""}, "mark_source: must be a source name (or false), got ''"),
    ({"index_source": ""}, "index_source: must be a source name, got ''"),
    ({"index_sources": "okx"}, "index_sources: must be an array of source names, got 'okx'"),
    ({"index_sources": ["a", "a"]}, "index_sources: names a source twice: ['a', 'a']"),
    (
        {"index_source": "a", "index_sources": ["b"]},
        "index_source: give index_source or index_sources, not both",
    ),
]


@pytest.mark.parametrize(("table", "message"), MISTAKES)
def test_errors_name_file_key_and_problem(table: dict[str, Any], message: str) -> None:
    """Every problem in a symbol's guards is reported as FILE: KEY: PROBLEM."""
    with pytest.raises(ConfigError) as raised:
        guards_of(table)
    assert f"{SOURCE}: symbols.{SYMBOL}.guards.{message}" == str(raised.value)


@pytest.mark.parametrize(("table", "message"), MISTAKES[:3])
def test_errors_in_the_shared_table_name_it(table: dict[str, Any], message: str) -> None:
    """A problem in the top-level [guards] table names guards.KEY."""
    with pytest.raises(ConfigError) as raised:
        guards_of({}, table)
    assert f"{SOURCE}: guards.{message}" == str(raised.value)


@pytest.mark.parametrize("where", ["guards", f"symbols.{SYMBOL}.guards"])
def test_a_guards_value_that_is_not_a_table(where: str) -> None:
    """guards = 5, at the top or in a symbol, is refused naming the key."""
    doc = document(5, None) if where != "guards" else document({}, 5)
    with pytest.raises(ConfigError) as raised:
        parse_settings(doc, SOURCE, {})
    assert f"{SOURCE}: {where}: must be a table" == str(raised.value)
