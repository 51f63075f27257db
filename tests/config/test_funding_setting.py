"""``apply_funding`` per symbol: off unless a symbol's table turns it on, and a flag only."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.config.loading import parse_settings
from monitor.core.errors import ConfigError

pytestmark = pytest.mark.unit


def symbols(**tables: dict[str, Any]) -> dict[str, Any]:
    """A document of linear symbols with one tier each, their tables laid over that."""
    base = {"contract": "linear", "brackets": [{"mmr": "0.01"}]}
    return {"symbols": {name: base | table for name, table in tables.items()}}


def test_funding_is_applied_only_for_the_symbols_that_ask() -> None:
    """BTCUSDT turns it on, ETHUSDT turns it off, SOLUSDT says nothing: only BTCUSDT."""
    document = symbols(
        BTCUSDT={"apply_funding": True}, ETHUSDT={"apply_funding": False}, SOLUSDT={}
    )
    assert parse_settings(document, "c.toml", {}).funding == frozenset({"BTCUSDT"})


def test_a_configuration_without_the_key_applies_no_funding() -> None:
    """The default: nobody's funding is applied (venues' position versions include it)."""
    assert parse_settings(symbols(BTCUSDT={}), "c.toml", {}).funding == frozenset()


def test_apply_funding_must_be_a_boolean() -> None:
    """A string is refused with the key's name, not read as true."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(symbols(BTCUSDT={"apply_funding": "yes please"}), "c.toml", {})
    assert str(caught.value).startswith("c.toml: symbols.BTCUSDT.apply_funding: ")
