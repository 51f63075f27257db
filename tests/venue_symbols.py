"""Symbols of every venue model, with the tier tables of the venues' worked examples.

The tables are those of ``tests/core/venues/test_venue_examples.py``, where
each example is cited; :func:`venue_config` writes them after the shipped
configuration, so the Binance symbols (BTCUSDT, ...) stay as they are.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness import CONFIG

from monitor.config.loading import load_settings
from monitor.config.model import HttpSettings, MqttSettings, RedisSettings, Settings

VENUE_SYMBOLS = """
# Bybit help centre "Liquidation Price (USDT Contract)", Example 1: MMR 0.5 %, no deduction.
[symbols.BYBIT-BTCUSDT]
venue = "bybit"
contract = "linear"
tiers = [{ risk_limit_value = "2000000", mmr = "0.005" }]

# Bybit, "Liquidation Price Calculation under Isolated Mode (UTA)", inverse example.
[symbols.BYBIT-BTCUSD]
venue = "bybit"
contract = "inverse"
contract_size = "1"
tiers = [{ risk_limit_value = "150", mmr = "0.005" }]

# OKX's isolated margin ratio (issue #14): BTC-USDT-SWAP, ctVal 0.01, mmr 1 %, taker 0.05 %.
[symbols.OKX-BTCUSDT]
venue = "okx"
contract = "linear"
contract_size = "0.01"
taker_fee_rate = "0.0005"
tiers = [{ min_size = "0", max_size = "1000000", mmr = "0.01" }]

# OKX announcement "OKX position tiers to be adjusted", CHZUSDT: MM jumps at 5,001 contracts.
[symbols.OKX-CHZUSDT]
venue = "okx"
contract = "linear"
contract_size = "10"
taker_fee_rate = "0"
tiers = [
  { min_size = "0",    max_size = "5000",  mmr = "0.01" },
  { min_size = "5001", max_size = "7500",  mmr = "0.015" },
  { min_size = "7501", max_size = "15000", mmr = "0.02" },
]

# Gate support's reply on the liquidation price (Gate Square post 3870211): taker 0.075 %.
[symbols.GATE-BTCUSDT]
venue = "gate"
contract = "linear"
contract_size = "0.0001"
taker_fee_rate = "0.00075"
tiers = [{ risk_limit = "2000000", maintenance_rate = "0.004" }]

[symbols.GATE-BTCUSD]
venue = "gate"
contract = "inverse"
contract_size = "1"
taker_fee_rate = "0.00075"
tiers = [{ risk_limit = "100", maintenance_rate = "0.005" }]

# Hyperliquid docs, Margin tiers: one tier at 25x (maintenance rate 1/50).
[symbols.HL-ETH]
venue = "hyperliquid"
contract = "linear"
tiers = [{ lower_bound = "0", max_leverage = 25 }]
"""


def venue_config(directory: Path) -> Path:
    """The shipped configuration plus :data:`VENUE_SYMBOLS`, written to ``directory``."""
    path = directory / "venues.toml"
    path.write_text(CONFIG.read_text() + VENUE_SYMBOLS)
    return path


def venue_settings(directory: Path, redis_url: str, mqtt_url: str, prefix: str) -> Settings:
    """:func:`venue_config`'s settings, pointed at the test servers and prefix."""
    base = load_settings(venue_config(directory), environ={})
    return replace(
        base,
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        mqtt=MqttSettings(url=mqtt_url, topic_prefix=prefix, client_id=f"{prefix}-monitor"),
        http=HttpSettings(port=0),
    )
