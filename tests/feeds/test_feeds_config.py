"""Building sources from configuration tables."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from typing import Any

import pytest

import feeds.config
from feeds.binance import BinanceSource
from feeds.bybit import BybitSource
from feeds.config import source_from_config
from feeds.okx import OkxSource
from feeds.replay import ReplaySource
from feeds.synthetic import Jump, SyntheticSource

pytestmark = pytest.mark.unit


def documented_tables(**options: Any) -> list[dict[str, Any]]:
    """The example in feeds.config's docstring, parsed as TOML (``options`` for tomllib)."""
    doc = feeds.config.__doc__ or ""
    example = doc.split("::", 1)[1].split('"""')[0]
    text = "\n".join(line.removeprefix("    ") for line in example.splitlines())
    tables: list[dict[str, Any]] = tomllib.loads(text, **options)["sources"]
    return tables


def test_the_documented_example_builds_every_source() -> None:
    """Each table of the docstring example builds the source it describes."""
    binance, bybit, okx, replay, synthetic = map(source_from_config, documented_tables())
    assert isinstance(binance, BinanceSource)
    assert binance.feed.url == "wss://fstream.binance.com/market/stream"
    assert binance.feed.options.idle_timeout_s == 30
    assert isinstance(bybit, BybitSource)
    assert bybit.feed.url == "wss://stream.bybit.com/v5/public/linear"
    assert isinstance(okx, OkxSource)
    assert okx.name == "okx"
    assert isinstance(replay, ReplaySource)
    assert replay.speed == 10
    assert isinstance(synthetic, SyntheticSource)
    assert synthetic.jumps == (Jump(60, -0.3), Jump(120, 0.25, over_s=10))


def test_toml_floats_read_as_decimals_build_the_same_sources() -> None:
    """liqmon reads its file with parse_float=Decimal: the example builds the same sources."""
    as_floats = [source_from_config(table) for table in documented_tables()]
    as_decimals = [source_from_config(table) for table in documented_tables(parse_float=Decimal)]
    binance, synthetic = as_decimals[0], as_decimals[-1]
    assert isinstance(binance, BinanceSource) and isinstance(as_floats[0], BinanceSource)
    assert as_floats[0].feed.options == binance.feed.options
    assert binance.feed.options.backoff.base_s == 0.5
    assert isinstance(synthetic, SyntheticSource) and isinstance(as_floats[-1], SyntheticSource)
    assert as_floats[-1].jumps == synthetic.jumps


def test_local_urls_and_options_are_honoured() -> None:
    """A test or staging setup points a source at a local server with short timeouts."""
    source = source_from_config(
        {
            "type": "okx",
            "name": "okx-local",
            "url": "ws://127.0.0.1:9001/",
            "symbols": {"BTC-USDT-SWAP": "BTCUSDT"},
            "idle_timeout_s": 2,
            "backoff_base_s": 0.1,
            "backoff_max_s": 1,
            "ping_interval_s": 5,
            "proxy": False,
        }
    )
    assert isinstance(source, OkxSource)
    assert (source.name, source.feed.url) == ("okx-local", "ws://127.0.0.1:9001/")
    options = source.feed.options
    assert (options.idle_timeout_s, options.backoff.base_s, options.backoff.max_s) == (2, 0.1, 1)
    assert (options.ping_interval_s, options.proxy) == (5, False)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "kraken"}, "unknown source type"),
        ({"type": "binance", "symbols": {"BTCUSDT": "BTCUSDT"}, "idle_timeout": 5}, "idle_timeout"),
        ({"type": "binance"}, "symbols"),
        ({"type": "binance", "symbols": {"BTCUSDT": 1}}, "symbols"),
        ({"type": "bybit", "symbols": {"X": "X"}, "category": "spot"}, "category"),
        ({"type": "bybit", "symbols": {"X": "X"}, "heartbeat_s": "20"}, "number"),
        ({"type": "replay", "path": "x.jsonl", "idle_timeout_s": 3}, "idle_timeout_s"),
        ({"type": "synthetic", "start_prices": {"X": "1"}, "jumps": [{"at_s": 1}]}, "fraction"),
        ({"type": "synthetic", "start_prices": {"X": "1"}, "jumps": 5}, "jumps"),
        ({"type": "synthetic", "start_prices": {"X": "abc"}}, "start_prices"),
    ],
)
def test_bad_tables_name_the_problem(table: dict[str, Any], message: str) -> None:
    """Typos and wrong types fail loudly with the offending key."""
    with pytest.raises(ValueError, match=message):
        source_from_config(table)
