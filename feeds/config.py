"""Build a price source from one configuration table (e.g. a ``[[sources]]`` TOML entry).

Strict on purpose: an unknown key is a typo that would otherwise silently
fall back to a default, so it raises ``ValueError`` naming the key; a bad
table raises nothing else. Numbers may be TOML integers or floats, decoded
as ``float`` or, as liqmon reads its file (``parse_float=Decimal``), as
``Decimal``. Example tables (TOML)::

    [[sources]]
    type = "binance"                # binance | bybit | okx | replay | synthetic
    name = "binance"                # optional; the tick's ``source``
    symbols = { BTCUSDT = "BTCUSDT", ETHUSDT = "ETHUSDT" }
    update_speed = "1s"             # binance only: "1s" or "3s"
    all_market = false              # binance only: subscribe !markPrice@arr
    # url = "ws://127.0.0.1:9001/"  # default: the venue's public endpoint
    idle_timeout_s = 30             # websocket sources: see feeds.ws.WsOptions
    backoff_base_s = 0.5
    backoff_max_s = 30

    [[sources]]
    type = "bybit"
    category = "linear"             # or "inverse"
    symbols = { BTCUSDT = "BTCUSDT" }
    heartbeat_s = 20

    [[sources]]
    type = "okx"
    symbols = { "BTC-USDT-SWAP" = "BTCUSDT" }
    # index_symbols = { "BTC-USDT" = "BTCUSDT" }   # default: derived
    heartbeat_s = 25

    [[sources]]
    type = "replay"
    path = "recordings/crash.jsonl"
    speed = 10                      # omit or 0 for as fast as possible

    [[sources]]
    type = "synthetic"
    seed = 7
    start_prices = { BTCUSDT = "65000.0" }
    daily_vol = 0.8
    interval_s = 0.5
    speed = 1
    jumps = [{ at_s = 60, fraction = -0.3 }, { at_s = 120, fraction = 0.25, over_s = 10 }]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from feeds.binance import BinanceSource
from feeds.bybit import BybitSource
from feeds.okx import OkxSource
from feeds.replay import ReplaySource
from feeds.source import PriceSource
from feeds.synthetic import Jump, SyntheticSource
from feeds.ws import Backoff, WsOptions

WS_KEYS = frozenset(
    {
        "idle_timeout_s",
        "backoff_base_s",
        "backoff_max_s",
        "open_timeout_s",
        "ping_interval_s",
        "ping_timeout_s",
        "close_timeout_s",
        "max_size",
        "proxy",
    }
)


class _Table:
    """Typed, tracked access to one table; :meth:`done` refuses leftovers."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self._table = table
        self._where = where
        self._used: set[str] = set()

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._table.get(key)

    def has(self, key: str) -> bool:
        return key in self._table

    def text(self, key: str, default: str | None = None) -> str:
        value = self._get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self._where}: {key} must be a non-empty string")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self._get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ValueError(f"{self._where}: {key} must be a number")
        return float(value)

    def optional_float(self, key: str, default: float | None) -> float | None:
        return self.number(key) if self.has(key) else default

    def integer(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self._where}: {key} must be an integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ValueError(f"{self._where}: {key} must be true or false")
        return value

    def str_map(self, key: str) -> dict[str, str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
        ):
            raise ValueError(f"{self._where}: {key} must map names to names")
        return dict(value)

    def raw(self, key: str) -> Any:
        return self._get(key)

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._used)
        if unknown:
            raise ValueError(f"{self._where}: unknown key(s) {', '.join(unknown)}")


def _ws_options(t: _Table) -> WsOptions:
    defaults = WsOptions()
    proxy = t.raw("proxy")
    if proxy is None:
        proxy = defaults.proxy
    elif not isinstance(proxy, str | bool):
        raise ValueError("proxy must be true, false or a proxy URL")
    return WsOptions(
        idle_timeout_s=t.number("idle_timeout_s", defaults.idle_timeout_s),
        backoff=Backoff(
            base_s=t.number("backoff_base_s", defaults.backoff.base_s),
            max_s=t.number("backoff_max_s", defaults.backoff.max_s),
        ),
        open_timeout_s=t.number("open_timeout_s", defaults.open_timeout_s),
        ping_interval_s=t.optional_float("ping_interval_s", defaults.ping_interval_s),
        ping_timeout_s=t.optional_float("ping_timeout_s", defaults.ping_timeout_s),
        close_timeout_s=t.number("close_timeout_s", defaults.close_timeout_s),
        max_size=t.integer("max_size", defaults.max_size),
        proxy=proxy,
    )


def _symbols(t: _Table) -> dict[str, str]:
    symbols = t.str_map("symbols")
    if not symbols:
        raise ValueError(f"{t.text('type')}: symbols must map venue symbols to configured ones")
    return symbols


def _binance(t: _Table) -> PriceSource:
    speed = t.text("update_speed", "1s")
    if speed not in ("1s", "3s"):
        raise ValueError("binance: update_speed must be '1s' or '3s'")
    return BinanceSource(
        _symbols(t),
        url=t.text("url", "wss://fstream.binance.com/market/stream"),
        name=t.text("name", "binance"),
        update_speed="1s" if speed == "1s" else "3s",
        all_market=t.flag("all_market", False),
        options=_ws_options(t),
    )


def _bybit(t: _Table) -> PriceSource:
    category = t.text("category", "linear")
    if category not in ("linear", "inverse"):
        raise ValueError("bybit: category must be 'linear' or 'inverse'")
    return BybitSource(
        _symbols(t),
        category="linear" if category == "linear" else "inverse",
        url=t.text("url") if t.has("url") else None,
        name=t.text("name", "bybit"),
        heartbeat_s=t.number("heartbeat_s", 20.0),
        options=_ws_options(t),
    )


def _okx(t: _Table) -> PriceSource:
    return OkxSource(
        _symbols(t),
        index_symbols=t.str_map("index_symbols"),
        url=t.text("url", "wss://ws.okx.com:8443/ws/v5/public"),
        name=t.text("name", "okx"),
        heartbeat_s=t.number("heartbeat_s", 25.0),
        options=_ws_options(t),
    )


def _speed(t: _Table) -> float | None:
    speed = t.number("speed", 0.0) if t.has("speed") else 1.0
    return speed or None


def _replay(t: _Table) -> PriceSource:
    return ReplaySource(
        t.text("path"),
        speed=_speed(t),
        name=t.text("name", "replay"),
        source=t.text("source") if t.has("source") else None,
    )


def _synthetic(t: _Table) -> PriceSource:
    starts = t.str_map("start_prices")
    if not starts or not all(_is_decimal(price) for price in starts.values()):
        raise ValueError("synthetic: start_prices must map symbols to decimal strings")
    entries = t.raw("jumps") or []
    if not isinstance(entries, list):
        raise ValueError("synthetic: jumps must be an array of tables")
    jumps = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError("synthetic: each jump is a table")
        j = _Table(entry, f"synthetic jump {number}")
        symbols = j.raw("symbols") or ()
        if not isinstance(symbols, list | tuple) or not all(isinstance(s, str) for s in symbols):
            raise ValueError("synthetic: jump symbols must be a list of names")
        jumps.append(
            Jump(
                at_s=j.number("at_s"),
                fraction=j.number("fraction"),
                symbols=tuple(symbols),
                over_s=j.number("over_s", 0.0),
            )
        )
        j.done()
    return SyntheticSource(
        starts,
        seed=t.integer("seed", 0),
        daily_vol=t.number("daily_vol", 0.05),
        interval_s=t.number("interval_s", 1.0),
        jumps=jumps,
        basis_bp=t.number("basis_bp", 1.0),
        start_ts_ms=t.integer("start_ts_ms", 0) or None,
        speed=_speed(t),
        max_steps=t.integer("max_steps", 0) or None,
        name=t.text("name", "synthetic"),
    )


def _is_decimal(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


BUILDERS: Mapping[str, Callable[[_Table], PriceSource]] = {
    "binance": _binance,
    "bybit": _bybit,
    "okx": _okx,
    "replay": _replay,
    "synthetic": _synthetic,
}
"""The source types this module builds (MQTT sources are the daemon's)."""


def source_from_config(table: Mapping[str, Any]) -> PriceSource:
    """A source from one table; ``ValueError`` (and no other exception) for a bad or
    unknown key or value."""
    t = _Table(table, f"source {table.get('name') or table.get('type')!r}")
    kind = t.text("type")
    if kind not in BUILDERS:
        raise ValueError(f"unknown source type {kind!r}; expected one of {', '.join(BUILDERS)}")
    source = BUILDERS[kind](t)
    t.done()
    return source
