"""OKX v5 public ``mark-price`` and ``index-tickers`` channels: a parser and a source.

Both channels live on ``wss://ws.okx.com:8443/ws/v5/public`` (docs: v5 >
Public Data > WebSocket > Mark price channel / Index tickers channel).
``mark-price`` is subscribed per instrument (``BTC-USDT-SWAP``) and pushes
``markPx`` (every 200 ms on change, every 10 s otherwise); ``index-tickers``
is subscribed per index (``BTC-USDT``, the instrument's underlying) and pushes
``idxPx``. Timestamps are strings of epoch ms.

OKX closes a connection that carried nothing for 30 s; the documented
keep-alive is the text frame ``ping`` (answered with ``pong``) sent when
nothing arrived for N < 30 s. This source sends it every ``heartbeat_s``
(25 s by default).

With funding asked for (:meth:`OkxSource.on_funding`), the perpetuals'
``funding-rate`` channel is subscribed too (docs: v5 > Public Data >
WebSocket > Funding rate channel) and parsed by :func:`funding`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from feeds.decode import as_object, epoch_ms, field, load_json, price, text
from feeds.errors import FrameError, RejectReason
from feeds.funding import FundingNotice, rate
from feeds.source import Emit, FundingSink, Reject
from feeds.tick import PriceKind, PriceTick
from feeds.ws import Decoder, FundingDecoder, Heartbeat, WebsocketFeed, WsOptions

DEFAULT_URL = "wss://ws.okx.com:8443/ws/v5/public"
MARK_CHANNEL = "mark-price"
INDEX_CHANNEL = "index-tickers"
FUNDING_CHANNEL = "funding-rate"
ARGS_PER_MESSAGE = 50
_QUIET_EVENTS = frozenset({"subscribe", "unsubscribe", "notice", "channel-conn-count"})
_PRICE_FIELD = {MARK_CHANNEL: ("markPx", PriceKind.MARK), INDEX_CHANNEL: ("idxPx", PriceKind.INDEX)}


def underlying(inst_id: str) -> str:
    """The index of an instrument, OKX's ``instFamily``: its first two parts.

    ``BTC-USDT-SWAP`` → ``BTC-USDT``, ``BTC-USD-250328`` → ``BTC-USD``.
    """
    parts = inst_id.split("-")
    if len(parts) < 2:
        raise ValueError(f"okx: cannot derive the index of {inst_id!r}")
    return "-".join(parts[:2])


def parse(
    frame: str | bytes,
    marks: Mapping[str, str],
    indexes: Mapping[str, Sequence[str]],
    source: str = "okx",
) -> list[PriceTick]:
    """Turn one OKX frame into ticks.

    ``marks`` maps instruments to configured symbols for ``mark-price``;
    ``indexes`` maps an index to the configured symbols it is the index of
    (one index can serve a swap and a future). Unmapped ids are ignored;
    ``pong`` and subscription events give ``[]``. Two real frames::

        {"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},
         "data":[{"instType":"SWAP","instId":"BTC-USDT-SWAP",
                  "markPx":"42310.6","ts":"1630049139746"}]}
        {"arg":{"channel":"index-tickers","instId":"BTC-USDT"},
         "data":[{"instId":"BTC-USDT","idxPx":"42305.2","high24h":"43166.7",
                  "low24h":"41511.9","open24h":"42057.6","sodUtc0":"42090.7",
                  "sodUtc8":"42203.9","ts":"1630049139762"}]}

    give ``PriceTick("BTCUSDT", MARK, Decimal("42310.6"), 1630049139746,
    "okx")`` and ``PriceTick("BTCUSDT", INDEX, Decimal("42305.2"),
    1630049139762, "okx")``. Raises ``FrameError`` (``partial`` keeps the good
    entries of a multi-entry push).
    """
    if frame in ("pong", b"pong", "ping", b"ping"):
        return []
    message = as_object(load_json(frame), "frame")
    if "event" in message:
        event = message["event"]
        if event == "error":
            raise FrameError(
                RejectReason.VENUE_ERROR, f"{message.get('code', '')} {message.get('msg', '')}"
            )
        if event in _QUIET_EVENTS:
            return []
        raise FrameError(RejectReason.UNKNOWN_EVENT, f"event={event!r}")
    arg = as_object(field(message, "arg"), "arg")
    channel = text(arg, "channel")
    if channel == FUNDING_CHANNEL:
        return []  # see funding()
    if channel not in _PRICE_FIELD:
        raise FrameError(RejectReason.UNKNOWN_EVENT, f"channel={channel!r}")
    key, kind = _PRICE_FIELD[channel]
    data = field(message, "data")
    if not isinstance(data, list):
        raise FrameError(RejectReason.BAD_SHAPE, "data is not a list")
    ticks: list[PriceTick] = []
    first_error: FrameError | None = None
    for item in data:
        try:
            entry = as_object(item, "data entry")
            inst_id = entry.get("instId", arg.get("instId"))
            if not isinstance(inst_id, str):
                raise FrameError(RejectReason.MISSING_FIELD, "instId")
            if kind is PriceKind.MARK:
                mapped = marks.get(inst_id)
                symbols: Sequence[str] = () if mapped is None else (mapped,)
            else:
                symbols = indexes.get(inst_id, ())
            if not symbols:
                continue
            ts_ms = epoch_ms(field(entry, "ts"), "ts")
            value = price(field(entry, key), key)
            ticks.extend(PriceTick(symbol, kind, value, ts_ms, source) for symbol in symbols)
        except FrameError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise FrameError(first_error.reason, first_error.detail, ticks)
    return ticks


def index_map(
    marks: Mapping[str, str], index_symbols: Mapping[str, str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Index → configured symbols. Given ``index_symbols`` (index → symbol), use it;
    otherwise derive each instrument's index with :func:`underlying`."""
    pairs = (
        index_symbols.items()
        if index_symbols is not None
        else ((underlying(inst_id), symbol) for inst_id, symbol in marks.items())
    )
    result: dict[str, tuple[str, ...]] = {}
    for index, symbol in pairs:
        if symbol not in result.get(index, ()):
            result[index] = (*result.get(index, ()), symbol)
    return result


def subscribe_messages(
    marks: Sequence[str], indexes: Sequence[str], swaps: Sequence[str] = ()
) -> list[str]:
    """``{"op":"subscribe","args":[{"channel":…,"instId":…},…]}`` messages (``swaps``:
    the perpetuals whose ``funding-rate`` to subscribe)."""
    args = [{"channel": MARK_CHANNEL, "instId": inst_id} for inst_id in marks] + [
        {"channel": INDEX_CHANNEL, "instId": index} for index in indexes
    ]
    args += [{"channel": FUNDING_CHANNEL, "instId": inst_id} for inst_id in swaps]
    return [
        orjson.dumps({"op": "subscribe", "args": args[start : start + ARGS_PER_MESSAGE]}).decode()
        for start in range(0, len(args), ARGS_PER_MESSAGE)
    ]


class _OkxVenue:
    def __init__(
        self,
        marks: Mapping[str, str],
        indexes: Mapping[str, tuple[str, ...]],
        source: str,
        heartbeat_s: float,
    ) -> None:
        self._marks = dict(marks)
        self._indexes = dict(indexes)
        self._source = source
        self._messages = subscribe_messages(list(marks), list(indexes))
        self.heartbeat: Heartbeat | None = Heartbeat("ping", heartbeat_s)

    def subscriptions(self) -> Sequence[str]:
        return self._messages

    def subscribe_funding(self) -> None:
        """Subscribe the ``funding-rate`` of the perpetuals (``-SWAP``) from the next
        connection on."""
        swaps = [inst_id for inst_id in self._marks if inst_id.endswith("-SWAP")]
        self._messages = subscribe_messages(list(self._marks), list(self._indexes), swaps)

    def decoder(self) -> Decoder:
        marks, indexes, source = self._marks, self._indexes, self._source
        return lambda frame: parse(frame, marks, indexes, source)

    def funding_decoder(self) -> FundingDecoder:
        marks, source = self._marks, self._source
        return lambda frame: funding(frame, marks, source)


class OkxSource:
    """Mark prices from ``mark-price`` and index prices from ``index-tickers`` (a ``PriceSource``).

    ``symbols`` maps OKX instruments to configured symbols
    (``{"BTC-USDT-SWAP": "BTCUSDT"}``). Index subscriptions are derived from
    the instruments (``BTC-USDT``) unless ``index_symbols`` maps indexes
    explicitly; ``index_symbols={}`` subscribes no index at all.
    """

    def __init__(
        self,
        symbols: Mapping[str, str],
        *,
        index_symbols: Mapping[str, str] | None = None,
        url: str = DEFAULT_URL,
        name: str = "okx",
        heartbeat_s: float = 25.0,
        options: WsOptions | None = None,
    ) -> None:
        if not symbols and not index_symbols:
            raise ValueError("okx: no symbols configured")
        if heartbeat_s <= 0:
            raise ValueError("okx: heartbeat_s must be positive")
        self.name = name
        self._venue = _OkxVenue(symbols, index_map(symbols, index_symbols), name, heartbeat_s)
        self.feed = WebsocketFeed(
            name, url, self._venue, options or WsOptions(), funding=self._venue.funding_decoder
        )

    def on_funding(self, sink: FundingSink) -> None:
        """Subscribe the perpetuals' ``funding-rate`` channel too, and announce its
        ``fundingRate`` at ``fundingTime`` (see :func:`funding`) to ``sink``."""
        self._venue.subscribe_funding()
        self.feed.funding_sink = sink

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Stream until cancelled (safe at any point); raises ``FeedFatalError`` only
        when the venue refuses the connection for good."""
        await self.feed.run(emit, reject)


def funding(
    frame: str | bytes, swaps: Mapping[str, str], source: str = "okx"
) -> list[FundingNotice]:
    """The announcements of one ``funding-rate`` push: ``fundingRate`` at ``fundingTime``.

    ``swaps`` maps perpetual instruments to configured symbols (subscribe with
    ``{"op":"subscribe","args":[{"channel":"funding-rate","instId":"BTC-USD-SWAP"}]}``).
    A real push (OKX's docs, WebSocket > Public channel > Funding rate channel)::

        {"arg":{"channel":"funding-rate","instId":"BTC-USD-SWAP"},
         "data":[{"formulaType":"noRate","fundingRate":"0.0001875391284828",
                  "fundingTime":"1700726400000","impactValue":"",
                  "instId":"BTC-USD-SWAP","instType":"SWAP","interestRate":"",
                  "maxFundingRate":"0.00375","method":"current_period",
                  "minFundingRate":"-0.00375","nextFundingRate":"",
                  "nextFundingTime":"1700755200000","premium":"0.0001233824646391",
                  "settFundingRate":"0.0001699799259033","settState":"settled",
                  "ts":"1700724675402"}]}

    gives ``[FundingNotice("BTCUSD", Decimal("0.0001875391284828"),
    1700726400000, "okx")]`` with ``swaps={"BTC-USD-SWAP": "BTCUSD"}``.
    ``nextFundingRate`` is only a forecast of the interval after: not used.
    Other channels, events and unmapped instruments give nothing; raises
    ``FrameError`` for a bad rate or time.
    """
    if frame in ("pong", b"pong", "ping", b"ping"):
        return []
    message = load_json(frame)
    if not isinstance(message, dict) or "event" in message:
        return []
    arg = message.get("arg")
    if not isinstance(arg, dict) or arg.get("channel") != "funding-rate":
        return []
    data = field(message, "data")
    if not isinstance(data, list):
        raise FrameError(RejectReason.BAD_SHAPE, "data is not a list")
    notices = []
    for item in data:
        entry = as_object(item, "data entry")
        inst_id = entry.get("instId", arg.get("instId"))
        symbol = swaps.get(inst_id) if isinstance(inst_id, str) else None
        if symbol is None:
            continue
        notices.append(
            FundingNotice(
                symbol,
                rate(field(entry, "fundingRate"), "fundingRate"),
                epoch_ms(field(entry, "fundingTime"), "fundingTime"),
                source,
            )
        )
    return notices
