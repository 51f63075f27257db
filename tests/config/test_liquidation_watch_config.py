"""``[liquidation_watch]``: off by default, the shipped example's alert table, one-line errors."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.config.loading import parse_settings
from monitor.core.clusters import ClusterRule
from monitor.core.errors import ConfigError

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "liqmon.toml"


def with_watch(watch: dict[str, Any]) -> dict[str, Any]:
    """The shipped configuration with ``watch`` as its ``[liquidation_watch]``."""
    return {**tomllib.loads(SHIPPED.read_text()), "liquidation_watch": watch}


def test_nothing_is_watched_by_default() -> None:
    """The shipped file watches no symbol: the work is opt-in."""
    settings = parse_settings(tomllib.loads(SHIPPED.read_text()), "liqmon.toml", {})
    assert [] == settings.liquidation_watch.watched(settings.symbols)
    assert 15.0 == settings.liquidation_watch.refresh_s


def test_the_commented_alert_example_loads_and_watches_its_symbol() -> None:
    """Uncommented, the shipped example is a valid alert; its symbol is watched though
    not listed, ``["*"]`` watches every symbol."""
    text = SHIPPED.read_text()
    block = text[text.index("# [liquidation_watch.alerts.BTCUSDT]") :].split("\n\n")[0]
    uncommented = re.sub(r"^# ?", "", block, flags=re.MULTILINE)
    document = tomllib.loads(text + "\n" + uncommented)
    settings = parse_settings(document, "liqmon.toml", {})
    watch = settings.liquidation_watch
    assert ["BTCUSDT"] == watch.watched(settings.symbols)
    assert {
        "BTCUSDT": ClusterRule(Decimal("0.05"), Decimal(50_000_000), Decimal(40_000_000))
    } == watch.rules()
    every = parse_settings(with_watch({"symbols": ["*"]}), "f.toml", {})
    assert list(every.symbols) == every.liquidation_watch.watched(every.symbols)


@pytest.mark.parametrize(
    ("watch", "line"),
    [
        (
            {"symbols": ["XRPUSDT"]},
            "liquidation_watch.symbols[0]: 'XRPUSDT' is not a configured symbol",
        ),
        (
            {"symbols": ["*", "BTCUSDT"]},
            "liquidation_watch.symbols: \"*\" (every symbol) stands alone, got ['*', 'BTCUSDT']",
        ),
        ({"refresh_s": 0}, "liquidation_watch.refresh_s: must be a positive number of seconds"),
        (
            {"alerts": {"BTCUSDT": {"distance": "1", "raise_notional": 2, "clear_notional": 1}}},
            "liquidation_watch.alerts.BTCUSDT.distance: must lie between 0 and 1",
        ),
        (
            {"alerts": {"BTCUSDT": {"distance": "0.1", "raise_notional": 1, "clear_notional": 2}}},
            "liquidation_watch.alerts.BTCUSDT.clear_notional: need 0 < clear_notional",
        ),
        (
            {"alerts": {"BTCUSDT": {"distance": "0.1", "raise_notional": 1}}},
            "liquidation_watch.alerts.BTCUSDT.clear_notional",
        ),
    ],
)
def test_a_bad_watch_is_one_line_naming_its_key(watch: dict[str, Any], line: str) -> None:
    """``FILE: KEY: PROBLEM``, as for every other table."""
    with pytest.raises(ConfigError) as raised:
        parse_settings(with_watch(watch), "f.toml", {})
    assert str(raised.value).startswith(f"f.toml: {line}")
