"""Binance USDⓈ-M futures mark-price streams: a pure parser and a source.

Streams (lower-case symbols; docs: "Mark Price Stream" and "Mark Price Stream
for All market" under USDⓈ-M Futures > Websocket Market Streams):
``<symbol>@markPrice`` (every 3 s), ``<symbol>@markPrice@1s``, and the
all-market ``!markPrice@arr`` / ``!markPrice@arr@1s``. Mark-price streams are
routed under ``/market``: an unrouted ``wss://fstream.binance.com/ws``
connection accepts the subscription and then silently delivers nothing, hence
the default ``wss://fstream.binance.com/market/stream`` (stream mode: every
event wrapped as ``{"stream": ..., "data": ...}``; the raw ``/ws`` form works
too). A connection lives at most 24 h and carries at most 200 streams; the
server's protocol pings are answered by websockets itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import orjson

from feeds.decode import as_object, epoch_ms, field, load_json, price, text
from feeds.errors import FrameError, RejectReason
from feeds.funding import FundingNotice, rate
from feeds.source import Emit, FundingSink, Reject
from feeds.tick import PriceKind, PriceTick
from feeds.ws import Decoder, Heartbeat, WebsocketFeed, WsOptions

DEFAULT_URL = "wss://fstream.binance.com/market/stream"
MAX_STREAMS = 200
"""Binance's limit of streams per connection."""
STREAMS_PER_MESSAGE = 50
"""Streams per SUBSCRIBE message (Binance also limits 10 messages/s)."""

UpdateSpeed = Literal["1s", "3s"]


def parse(
    frame: str | bytes,
    symbols: Mapping[str, str],
    source: str = "binance",
) -> list[PriceTick]:
    """Turn one Binance frame into ticks: a mark (``p``) and an index (``i``) per symbol.

    ``symbols`` maps Binance's symbol (``"BTCUSDT"``) to the configured one;
    events for other symbols are skipped. Subscription answers give ``[]``.
    A real frame from ``btcusdt@markPrice@1s`` on ``/market/stream``::

        {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate",
         "E":1562305380000,"s":"BTCUSDT","p":"11794.15000000",
         "i":"11784.62659091","P":"11784.25641265","r":"0.00038167",
         "T":1562306400000}}

    gives ``[PriceTick("BTCUSDT", MARK, Decimal("11794.15000000"),
    1562305380000, "binance"), PriceTick("BTCUSDT", INDEX,
    Decimal("11784.62659091"), 1562305380000, "binance")]``. The raw form
    (``/ws``) is the bare ``data`` object; ``!markPrice@arr`` sends a list of
    such objects.

    Raises ``FrameError``; with an array, ``partial`` carries the ticks of the
    entries that were fine.
    """
    message = load_json(frame)
    if isinstance(message, dict):
        if "data" in message and "stream" in message:
            message = message["data"]
        elif "id" in message and "result" in message:
            return []  # {"result":null,"id":1}: subscription accepted
        elif "error" in message:
            raise FrameError(RejectReason.VENUE_ERROR, orjson.dumps(message["error"]).decode())
    if isinstance(message, dict):
        return _event(message, symbols, source)
    if not isinstance(message, list):
        raise FrameError(RejectReason.BAD_SHAPE, "neither an event nor a list of events")
    ticks: list[PriceTick] = []
    first_error: FrameError | None = None
    for item in message:
        try:
            ticks.extend(_event(as_object(item, "array entry"), symbols, source))
        except FrameError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise FrameError(first_error.reason, first_error.detail, ticks)
    return ticks


def _event(event: Mapping[str, object], symbols: Mapping[str, str], source: str) -> list[PriceTick]:
    kind = field(event, "e")
    if kind != "markPriceUpdate":
        raise FrameError(RejectReason.UNKNOWN_EVENT, f"e={kind!r}")
    symbol = symbols.get(text(event, "s"))
    if symbol is None:
        return []
    ts_ms = epoch_ms(field(event, "E"), "E")
    mark = price(field(event, "p"), "p")
    index = price(field(event, "i"), "i")
    return [
        PriceTick(symbol, PriceKind.MARK, mark, ts_ms, source),
        PriceTick(symbol, PriceKind.INDEX, index, ts_ms, source),
    ]


def stream_names(
    symbols: Sequence[str], update_speed: UpdateSpeed = "1s", all_market: bool = False
) -> list[str]:
    """The stream names to subscribe: one per symbol, or the all-market one."""
    suffix = "@1s" if update_speed == "1s" else ""
    if all_market:
        return [f"!markPrice@arr{suffix}"]
    return [f"{symbol.lower()}@markPrice{suffix}" for symbol in symbols]


def subscribe_messages(streams: Sequence[str]) -> list[str]:
    """``{"method":"SUBSCRIBE","params":[...],"id":n}`` messages, 50 streams each."""
    return [
        orjson.dumps(
            {
                "method": "SUBSCRIBE",
                "params": list(streams[start : start + STREAMS_PER_MESSAGE]),
                "id": number,
            }
        ).decode()
        for number, start in enumerate(range(0, len(streams), STREAMS_PER_MESSAGE), 1)
    ]


class _BinanceVenue:
    heartbeat: Heartbeat | None = None

    def __init__(self, symbols: Mapping[str, str], streams: Sequence[str], source: str) -> None:
        self._symbols = dict(symbols)
        self._messages = subscribe_messages(streams)
        self._source = source

    def subscriptions(self) -> Sequence[str]:
        return self._messages

    def decoder(self) -> Decoder:
        symbols, source = self._symbols, self._source
        return lambda frame: parse(frame, symbols, source)


class BinanceSource:
    """Mark and index prices from Binance USDⓈ-M futures (a ``PriceSource``).

    ``symbols`` maps Binance symbols to configured ones
    (``{"BTCUSDT": "BTCUSDT"}``). ``update_speed`` picks the 1 s or 3 s stream;
    ``all_market=True`` subscribes ``!markPrice@arr`` instead of one stream per
    symbol (and still emits only the mapped symbols), which is the way past
    Binance's 200-streams-per-connection limit. Connection behaviour (idle
    timeout, backoff, keep-alive) comes from ``options``.
    """

    def __init__(
        self,
        symbols: Mapping[str, str],
        *,
        url: str = DEFAULT_URL,
        name: str = "binance",
        update_speed: UpdateSpeed = "1s",
        all_market: bool = False,
        options: WsOptions | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("binance: no symbols configured")
        if update_speed not in ("1s", "3s"):
            raise ValueError(f"binance: update_speed must be '1s' or '3s', not {update_speed!r}")
        streams = stream_names(list(symbols), update_speed, all_market)
        if len(streams) > MAX_STREAMS:
            raise ValueError(
                f"binance: {len(streams)} streams exceed {MAX_STREAMS} per connection;"
                " use all_market = true"
            )
        self.name = name
        mapped = dict(symbols)
        self.feed = WebsocketFeed(
            name,
            url,
            _BinanceVenue(symbols, streams, name),
            options or WsOptions(),
            funding=lambda: lambda frame: funding(frame, mapped, name),
        )

    def on_funding(self, sink: FundingSink) -> None:
        """Announce each frame's ``r`` at ``T`` (see :func:`funding`) to ``sink``."""
        self.feed.funding_sink = sink

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Stream until cancelled (safe at any point); raises ``FeedFatalError`` only
        when the venue refuses the connection for good."""
        await self.feed.run(emit, reject)


def funding(
    frame: str | bytes, symbols: Mapping[str, str], source: str = "binance"
) -> list[FundingNotice]:
    """The funding announcements in one mark-price frame: rate ``r`` at funding time ``T``.

    The frame of :func:`parse`'s example::

        {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate",
         "E":1562305380000,"s":"BTCUSDT","p":"11794.15000000",
         "i":"11784.62659091","P":"11784.25641265","r":"0.00038167",
         "T":1562306400000}}

    gives ``[FundingNotice("BTCUSDT", Decimal("0.00038167"), 1562306400000,
    "binance")]``. A symbol without funding (a delivery contract: ``"r":""``,
    ``"T":0``), another event, an unmapped symbol and subscription answers give
    nothing; ``!markPrice@arr`` gives one per mapped entry. Raises ``FrameError``
    for a bad rate or time.
    """
    message = load_json(frame)
    if isinstance(message, dict) and "data" in message and "stream" in message:
        message = message["data"]
    entries = message if isinstance(message, list) else [message]
    notices = []
    for item in entries:
        if not isinstance(item, dict) or item.get("e") != "markPriceUpdate":
            continue
        symbol = symbols.get(text(item, "s"))
        if symbol is None or item.get("r") in (None, "") or item.get("T") in (None, 0):
            continue
        notices.append(
            FundingNotice(symbol, rate(item["r"], "r"), epoch_ms(item["T"], "T"), source)
        )
    return notices
