"""``[symbols.NAME] venue``: each venue's tier table is accepted in its own shape; a bad one is
refused with one ``FILE: KEY: PROBLEM`` line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from venue_symbols import venue_config

from monitor.config.loading import load_settings
from monitor.core.errors import ConfigError
from monitor.core.margin import ContractKind, Position, Side
from monitor.core.models import model_for
from monitor.core.venues import BybitModel, GateModel, HyperliquidModel, OkxModel
from monitor.core.venues.binance import BinanceModel

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "liqmon.toml"

OKX = """\
[symbols.OKX-BTCUSDT]
venue = "okx"
contract = "linear"
contract_size = "0.01"
taker_fee_rate = "0.0005"
tiers = [
  { min_size = "0",    max_size = "5000",  mmr = "0.01" },
  { min_size = "5001", max_size = "7500",  mmr = "0.015" },
]
"""

BYBIT = """\
[symbols.BYBIT-BTCUSDT]
venue = "bybit"
contract = "linear"
tiers = [
  { risk_limit_value = "2000000", mmr = "0.005" },
  { risk_limit_value = "4000000", mmr = "0.01", mm_deduction = "10000" },
]
"""

GATE = """\
[symbols.GATE-BTCUSDT]
venue = "gate"
contract = "linear"
contract_size = "0.0001"
taker_fee_rate = "0.00075"
tiers = [
  { risk_limit = "1000000", maintenance_rate = "0.004" },
  { risk_limit = "3000000", maintenance_rate = "0.005", deduction = "1000" },
]
"""

HYPERLIQUID = """\
[symbols.HL-BTC]
venue = "hyperliquid"
contract = "linear"
tiers = [{ lower_bound = "0", max_leverage = 40 }, { lower_bound = "150000000", max_leverage = 20 }]
"""


def load(tmp_path: Path, text: str) -> Path:
    """The shipped configuration with ``text`` appended, written to a file."""
    path = tmp_path / "liqmon.toml"
    path.write_text(SHIPPED.read_text() + "\n" + text)
    return path


def test_every_venue_table_is_accepted(tmp_path: Path) -> None:
    """Each venue's table loads into that venue's model; binance symbols keep margin.py's.

    OKX-CHZUSDT's maintenance margin jumps between tiers (no deduction): it is
    accepted, as the tier follows the size, not the price.
    """
    settings = load_settings(venue_config(tmp_path), environ={})
    shipped = load_settings(SHIPPED, environ={})
    venues = {symbol: model_for(contract).venue for symbol, contract in settings.symbols.items()}
    assert {
        "BTCUSDT": "binance",
        "ETHUSDT": "binance",
        "SOLUSDT": "binance",
        "BTCUSD": "binance",
        "ETHUSD": "binance",
        "BYBIT-BTCUSDT": "bybit",
        "BYBIT-BTCUSD": "bybit",
        "OKX-BTCUSDT": "okx",
        "OKX-CHZUSDT": "okx",
        "GATE-BTCUSDT": "gate",
        "GATE-BTCUSD": "gate",
        "HL-ETH": "hyperliquid",
    } == venues
    for symbol, contract in shipped.symbols.items():
        assert contract == settings.symbols[symbol]
        assert isinstance(model_for(contract), BinanceModel)
    chz = model_for(settings.symbols["OKX-CHZUSDT"])
    assert isinstance(chz, OkxModel)
    assert (ContractKind.LINEAR, Decimal(10)) == (chz.kind, chz.multiplier)


@pytest.mark.parametrize(
    ("text", "kind"),
    [(OKX, OkxModel), (BYBIT, BybitModel), (GATE, GateModel), (HYPERLIQUID, HyperliquidModel)],
)
def test_each_venue_table_builds_its_model(tmp_path: Path, text: str, kind: type) -> None:
    """A table in the venue's own shape (several tiers) gives that venue's model."""
    settings = load_settings(load(tmp_path, text), environ={})
    symbol = text.split("]", maxsplit=1)[0].removeprefix("[symbols.")
    assert isinstance(model_for(settings.symbols[symbol]), kind)


def test_venue_binance_spelt_out_is_todays_model(tmp_path: Path) -> None:
    """``venue = "binance"`` written out gives exactly the contract the default gives."""
    text = SHIPPED.read_text().replace(
        '[symbols.BTCUSDT]\ncontract = "linear"',
        '[symbols.BTCUSDT]\nvenue = "binance"\ncontract = "linear"',
    )
    assert text != SHIPPED.read_text()
    path = tmp_path / "liqmon.toml"
    path.write_text(text)
    spelt = load_settings(path, environ={}).symbols["BTCUSDT"]
    default = load_settings(SHIPPED, environ={}).symbols["BTCUSDT"]
    assert default == spelt
    position = Position(Side.LONG, Decimal("0.5"), Decimal(60000), Decimal(3000))
    assert Decimal(27000) / Decimal("0.498") == model_for(spelt).liquidation_price(position)


@pytest.mark.parametrize(
    ("table", "old", "new", "message"),
    [
        (
            OKX,
            'venue = "okx"',
            'venue = "ftx"',
            "symbols.OKX-BTCUSDT.venue: must be one of 'binance', 'bybit', 'okx', 'gate', "
            "'hyperliquid', got 'ftx'",
        ),
        (
            OKX,
            'taker_fee_rate = "0.0005"\n',
            'taker_fee_rate = "0.0005"\nbrackets = [{ mmr = "0.01" }]\n',
            "symbols.OKX-BTCUSDT.brackets: not used with venue = 'okx'",
        ),
        (
            OKX,
            'taker_fee_rate = "0.0005"\n',
            'taker_fee_rate = "0.0005"\nclose_fee_rate = "0.0005"\n',
            "symbols.OKX-BTCUSDT.close_fee_rate: not used with venue = 'okx'",
        ),
        (OKX, 'taker_fee_rate = "0.0005"\n', "", "symbols.OKX-BTCUSDT.taker_fee_rate: is required"),
        (OKX, 'contract_size = "0.01"\n', "", "symbols.OKX-BTCUSDT.contract_size: is required"),
        (
            OKX,
            'tiers = [\n  { min_size = "0",    max_size = "5000",  mmr = "0.01" },\n'
            '  { min_size = "5001", max_size = "7500",  mmr = "0.015" },\n]\n',
            "",
            "symbols.OKX-BTCUSDT.tiers: must be a non-empty array of tables",
        ),
        (
            OKX,
            'max_size = "5000",  mmr = "0.01" }',
            'max_size = "5000" }',
            "symbols.OKX-BTCUSDT.tiers[0].mmr: is required",
        ),
        (
            OKX,
            'mmr = "0.01" }',
            'mmr = "0.01", deduction = "0" }',
            "symbols.OKX-BTCUSDT.tiers[0].deduction: not a key of okx's tiers "
            "(they take min_size, max_size, mmr)",
        ),
        (
            OKX,
            'mmr = "0.01" }',
            'mmr = "0.01", cap = "0" }',
            "symbols.OKX-BTCUSDT.tiers[0].cap: unknown key",
        ),
        (
            OKX,
            'max_size = "7500"',
            'max_size = "4000"',
            "symbols.OKX-BTCUSDT.tiers[1].max_size: must exceed the previous tier's max_size "
            "(5000), got 4000",
        ),
        (
            OKX,
            'min_size = "5001"',
            'min_size = "8000"',
            "symbols.OKX-BTCUSDT.tiers[1].min_size: must not exceed max_size (7500), got 8000",
        ),
        (
            OKX,
            'mmr = "0.015"',
            'mmr = "0.7"',
            "symbols.OKX-BTCUSDT.tiers[1].mmr: mmr + taker_fee_rate (0.7005) must be below "
            "margin_call_clear_ratio (0.7) and 1",
        ),
        (
            OKX,
            'mmr = "0.015"',
            'mmr = "lots"',
            "symbols.OKX-BTCUSDT.tiers[1].mmr: must be a decimal, got 'lots'",
        ),
        (
            OKX,
            'mmr = "0.015"',
            'mmr = "0"',
            "symbols.OKX-BTCUSDT.tiers[1].mmr: must be positive",
        ),
        (
            BYBIT,
            'risk_limit_value = "4000000"',
            'risk_limit_value = "2000000"',
            "symbols.BYBIT-BTCUSDT.tiers[1].risk_limit_value: must exceed the previous tier's "
            "risk_limit_value (2000000), got 2000000",
        ),
        (
            BYBIT,
            'contract = "linear"\n',
            'contract = "linear"\ntaker_fee_rate = "0.0005"\n',
            "symbols.BYBIT-BTCUSDT.taker_fee_rate: not used with venue = 'bybit'",
        ),
        (
            BYBIT,
            'contract = "linear"',
            'contract = "inverse"',
            "symbols.BYBIT-BTCUSDT.contract_size: is required",
        ),
        (
            GATE,
            'deduction = "1000"',
            'deduction = "900"',
            "symbols.GATE-BTCUSDT.tiers[1].deduction: must be 1000.000 to keep the maintenance "
            "margin continuous at value 1000000, got 900",
        ),
        (
            GATE,
            'maintenance_rate = "0.004" }',
            'maintenance_rate = "0.004", deduction = "5" }',
            "symbols.GATE-BTCUSDT.tiers[0].deduction: must be 0 for the first tier, got 5",
        ),
        (
            GATE,
            'contract = "linear"\n',
            'contract = "linear"\ninverse_value_at_mark = true\n',
            "symbols.GATE-BTCUSDT.inverse_value_at_mark: not used with venue = 'gate'",
        ),
        (
            HYPERLIQUID,
            'lower_bound = "0"',
            'lower_bound = "10"',
            "symbols.HL-BTC.tiers[0].lower_bound: must be 0 (the first tier starts at no notional)",
        ),
        (
            HYPERLIQUID,
            'contract = "linear"',
            'contract = "inverse"\ncontract_size = "1"',
            "symbols.HL-BTC.contract_size: not used with venue = 'hyperliquid'",
        ),
        (
            HYPERLIQUID,
            'contract = "linear"',
            'contract = "inverse"',
            "symbols.HL-BTC.contract: must be 'linear' with venue = 'hyperliquid'",
        ),
        (
            HYPERLIQUID,
            "max_leverage = 40",
            "max_leverage = 0",
            "symbols.HL-BTC.tiers[0].max_leverage: must be at least 1, got 0",
        ),
        (
            HYPERLIQUID,
            "max_leverage = 40",
            'max_leverage = "40"',
            "symbols.HL-BTC.tiers[0].max_leverage: must be an integer, got '40'",
        ),
    ],
)
def test_a_bad_venue_table_is_refused_with_one_line(
    tmp_path: Path, table: str, old: str, new: str, message: str
) -> None:
    """A mistake in a venue's table stops the load with ``FILE: KEY: PROBLEM``."""
    assert old in table
    path = load(tmp_path, table.replace(old, new, 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert f"{path}: {message}" == str(raised.value)


def test_binance_symbols_refuse_tiers(tmp_path: Path) -> None:
    """A binance symbol keeps ``brackets``; ``tiers`` there is named as not used."""
    text = SHIPPED.read_text().replace(
        '[symbols.ETHUSD]\ncontract = "inverse"',
        '[symbols.ETHUSD]\ncontract = "inverse"\ntiers = [{ mmr = "0.01" }]',
    )
    path = tmp_path / "liqmon.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert f"{path}: symbols.ETHUSD.tiers: not used with venue = 'binance'" == str(raised.value)


def test_the_readme_venue_tables_load(tmp_path: Path) -> None:
    """The README's "Venue models" example tables load, each into its venue's model."""
    readme = (SHIPPED.parents[1] / "README.md").read_text()
    section = readme.split("### Venue models", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    settings = load_settings(load(tmp_path, example), environ={})
    assert {
        "BYBIT-BTCUSDT": "bybit",
        "OKX-BTCUSDT": "okx",
        "GATE-BTCUSDT": "gate",
        "HL-BTC": "hyperliquid",
    } == {symbol: model_for(settings.symbols[symbol]).venue for symbol in example_symbols(example)}


def example_symbols(text: str) -> list[str]:
    """The NAMEs of the ``[symbols.NAME]`` tables in ``text``."""
    return [
        line.split("]", 1)[0].removeprefix("[symbols.")
        for line in text.splitlines()
        if line.startswith("[symbols.")
    ]
