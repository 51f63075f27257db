"""Bybit v5 public tickers (linear and inverse): a stateful parser and a source.

Topic ``tickers.{symbol}`` on ``wss://stream.bybit.com/v5/public/linear`` or
``.../inverse`` (docs: v5 > WebSocket Stream > Public > Ticker). For
derivatives the first push after subscribing is a ``snapshot``; the following
``delta`` pushes (every 100 ms) carry *only the fields that changed*, so a
delta usually has no ``markPrice``. :class:`BybitParser` keeps the last full
state per symbol and merges each delta into it; every push then yields the
merged mark and index as of the push's ``ts``: by the protocol, a field the
delta leaves out still holds at that time.

The client must send ``{"op":"ping"}`` every 20 s (docs: v5 > WebSocket >
Connect > How to Send the Heartbeat Packet); Bybit answers
``{"success":true,"ret_msg":"pong","conn_id":"…","op":"ping"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

import orjson

from feeds.decode import as_object, epoch_ms, field, load_json, price, text
from feeds.errors import FrameError, RejectReason
from feeds.funding import FundingNotice, rate
from feeds.source import Emit, FundingSink, Reject
from feeds.tick import PriceKind, PriceTick
from feeds.ws import Decoder, Heartbeat, WebsocketFeed, WsOptions

Category = Literal["linear", "inverse"]
DEFAULT_URLS: Mapping[Category, str] = {
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "inverse": "wss://stream.bybit.com/v5/public/inverse",
}
PING = '{"op":"ping"}'
TOPICS_PER_MESSAGE = 10
"""Bybit accepts at most 10 args per subscribe request on some endpoints."""


@dataclass(frozen=True, slots=True)
class TickerState:
    """The merged ticker of one symbol: what the last snapshot and deltas said."""

    mark: Decimal | None
    index: Decimal | None
    ts_ms: int


class BybitParser:
    """Parses Bybit frames, merging ``tickers`` deltas into per-symbol state.

    Pure apart from that state: no I/O, no clock. Use one parser per
    connection (a new connection starts with a new snapshot). ``symbols`` maps
    Bybit symbols to configured ones; other symbols are ignored.

    A snapshot, then a delta without ``markPrice`` (real frames, trimmed)::

        {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",
         "tickDirection":"PlusTick","lastPrice":"17216.00","markPrice":"17217.33",
         "indexPrice":"17227.36","fundingRate":"-0.000212",
         "nextFundingTime":"1673280000000"},"cs":24987956059,"ts":1673272861686}
        {"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",
         "indexPrice":"17228.01","bid1Price":"17215.50"},"cs":24987956070,
         "ts":1673272861786}

    give ``[mark 17217.33, index 17227.36]`` at ``1673272861686``, then
    ``[mark 17217.33, index 17228.01]`` at ``1673272861786``. A delta older
    than the state it would update is refused (``out_of_order``) and not
    applied; a delta with a bad field is refused whole.
    """

    def __init__(self, symbols: Mapping[str, str], source: str = "bybit") -> None:
        self._symbols = dict(symbols)
        self._source = source
        self._state: dict[str, TickerState] = {}

    def state(self, bybit_symbol: str) -> TickerState | None:
        """The merged state of one symbol, if a ticker for it has arrived."""
        return self._state.get(bybit_symbol)

    def __call__(self, frame: str | bytes) -> list[PriceTick]:
        """Parse one frame; raises ``FrameError``."""
        message = as_object(load_json(frame), "frame")
        if "topic" not in message:
            return _control(message)
        topic = text(message, "topic")
        if not topic.startswith("tickers."):
            raise FrameError(RejectReason.UNKNOWN_EVENT, f"topic={topic!r}")
        kind = field(message, "type")
        if kind not in ("snapshot", "delta"):
            raise FrameError(RejectReason.BAD_SHAPE, f"type={kind!r}")
        data = as_object(field(message, "data"), "data")
        venue_symbol = data.get("symbol", topic.removeprefix("tickers."))
        if not isinstance(venue_symbol, str):
            raise FrameError(RejectReason.BAD_SHAPE, "symbol is not a string")
        symbol = self._symbols.get(venue_symbol)
        if symbol is None:
            return []
        ts_ms = epoch_ms(field(message, "ts"), "ts")
        mark = price(data["markPrice"], "markPrice") if "markPrice" in data else None
        index = price(data["indexPrice"], "indexPrice") if "indexPrice" in data else None

        old = self._state.get(venue_symbol)
        if kind == "snapshot" or old is None:
            new = TickerState(mark, index, ts_ms)
        elif ts_ms < old.ts_ms:
            raise FrameError(
                RejectReason.OUT_OF_ORDER, f"{venue_symbol} delta ts {ts_ms} < {old.ts_ms}"
            )
        else:
            new = replace(
                old,
                mark=mark if mark is not None else old.mark,
                index=index if index is not None else old.index,
                ts_ms=ts_ms,
            )
        self._state[venue_symbol] = new

        ticks = []
        if new.mark is not None:
            ticks.append(PriceTick(symbol, PriceKind.MARK, new.mark, ts_ms, self._source))
        if new.index is not None:
            ticks.append(PriceTick(symbol, PriceKind.INDEX, new.index, ts_ms, self._source))
        return ticks


def _control(message: Mapping[str, object]) -> list[PriceTick]:
    """Answers to our own requests: pongs and subscription results."""
    if "op" not in message:
        raise FrameError(RejectReason.BAD_SHAPE, "neither a topic push nor an op answer")
    if message.get("success") is False:
        raise FrameError(
            RejectReason.VENUE_ERROR, f"{message.get('op')}: {message.get('ret_msg', '')}"
        )
    return []


def subscribe_messages(symbols: Sequence[str]) -> list[str]:
    """``{"op":"subscribe","args":["tickers.X",...]}`` messages, 10 topics each."""
    topics = [f"tickers.{symbol}" for symbol in symbols]
    return [
        orjson.dumps(
            {
                "req_id": f"liqmon-{number}",
                "op": "subscribe",
                "args": topics[start : start + TOPICS_PER_MESSAGE],
            }
        ).decode()
        for number, start in enumerate(range(0, len(topics), TOPICS_PER_MESSAGE), 1)
    ]


class _BybitVenue:
    def __init__(self, symbols: Mapping[str, str], source: str, heartbeat_s: float) -> None:
        self._symbols = dict(symbols)
        self._source = source
        self._messages = subscribe_messages(list(symbols))
        self.heartbeat: Heartbeat | None = Heartbeat(PING, heartbeat_s)

    def subscriptions(self) -> Sequence[str]:
        return self._messages

    def decoder(self) -> Decoder:
        return BybitParser(self._symbols, self._source)


class BybitSource:
    """Mark and index prices from Bybit v5 tickers (a ``PriceSource``).

    ``symbols`` maps Bybit symbols to configured ones; ``category`` picks the
    default URL (``linear`` for USDT/USDC contracts, ``inverse`` for
    coin-margined ones); ``heartbeat_s`` is the ``{"op":"ping"}`` period.
    """

    def __init__(
        self,
        symbols: Mapping[str, str],
        *,
        category: Category = "linear",
        url: str | None = None,
        name: str = "bybit",
        heartbeat_s: float = 20.0,
        options: WsOptions | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("bybit: no symbols configured")
        if category not in DEFAULT_URLS:
            raise ValueError(f"bybit: category must be 'linear' or 'inverse', not {category!r}")
        if heartbeat_s <= 0:
            raise ValueError("bybit: heartbeat_s must be positive")
        self.name = name
        mapped = dict(symbols)
        self.feed = WebsocketFeed(
            name,
            url or DEFAULT_URLS[category],
            _BybitVenue(symbols, name, heartbeat_s),
            options or WsOptions(),
            funding=lambda: BybitFunding(mapped, name),
        )

    def on_funding(self, sink: FundingSink) -> None:
        """Announce the tickers' ``fundingRate`` at ``nextFundingTime`` (see
        :class:`BybitFunding`) to ``sink``."""
        self.feed.funding_sink = sink

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Stream until cancelled (safe at any point); raises ``FeedFatalError`` only
        when the venue refuses the connection for good."""
        await self.feed.run(emit, reject)


class BybitFunding:
    """Funding announcements from Bybit tickers: ``fundingRate`` at ``nextFundingTime``.

    Like :class:`BybitParser`, it merges deltas into per-symbol state (a delta
    carries a field only when it changed), and is pure apart from that state.
    The snapshot of :class:`BybitParser`'s example::

        {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",
         "tickDirection":"PlusTick","lastPrice":"17216.00","markPrice":"17217.33",
         "indexPrice":"17227.36","fundingRate":"-0.000212",
         "nextFundingTime":"1673280000000"},"cs":24987956059,"ts":1673272861686}

    gives ``[FundingNotice("BTCUSDT", Decimal("-0.000212"), 1673280000000,
    "bybit")]``; a delta that changes neither field (its ``indexPrice`` delta)
    gives nothing, one that changes ``fundingRate`` alone gives the new rate at
    the funding time already known. Other frames give nothing; raises
    ``FrameError`` for a bad rate or time.
    """

    def __init__(self, symbols: Mapping[str, str], source: str = "bybit") -> None:
        self._symbols = dict(symbols)
        self._source = source
        self._state: dict[str, tuple[Decimal | None, int | None]] = {}

    def __call__(self, frame: str | bytes) -> list[FundingNotice]:
        """The announcement in one frame, if it changed the rate or the funding time."""
        message = load_json(frame)
        if not isinstance(message, dict) or not str(message.get("topic", "")).startswith(
            "tickers."
        ):
            return []
        data = as_object(field(message, "data"), "data")
        venue_symbol = data.get("symbol", str(message["topic"]).removeprefix("tickers."))
        if not isinstance(venue_symbol, str) or venue_symbol not in self._symbols:
            return []
        symbol = self._symbols[venue_symbol]
        old = (None, None) if message.get("type") == "snapshot" else self._state.get(venue_symbol)
        old_rate, old_ts = old if old is not None else (None, None)
        given_rate = data.get("fundingRate")
        given_ts = data.get("nextFundingTime")
        new_rate = rate(given_rate, "fundingRate") if given_rate not in (None, "") else old_rate
        new_ts = (
            epoch_ms(given_ts, "nextFundingTime") if given_ts not in (None, "", "0") else old_ts
        )
        self._state[venue_symbol] = (new_rate, new_ts)
        if new_rate is None or new_ts is None or (new_rate, new_ts) == (old_rate, old_ts):
            return []
        return [FundingNotice(symbol, new_rate, new_ts, self._source)]
