"""Binance USDⓈ-M mark-price frames: parsed values, bad frames, subscriptions."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from feeds.binance import BinanceSource, parse, stream_names, subscribe_messages
from feeds.errors import FrameError, RejectReason
from feeds.tick import PriceKind, PriceTick

SYMBOLS = {"BTCUSDT": "BTC-PERP", "ETHUSDT": "ETH-PERP"}
MARK, INDEX = PriceKind.MARK, PriceKind.INDEX


def tick(symbol: str, kind: PriceKind, price: str, ts_ms: int) -> PriceTick:
    return PriceTick(symbol, kind, Decimal(price), ts_ms, "binance")


def test_recorded_frames_parse_to_mark_and_index(frames: Any) -> None:
    """Combined-stream, raw and all-market frames all give a mark (p) and an index (i)."""
    parsed = [parse(frame, SYMBOLS) for frame in frames("binance")]
    assert parsed == [
        [],  # {"result":null,"id":1}: the subscription answer
        [
            tick("BTC-PERP", MARK, "36512.40000000", 1700000001000),
            tick("BTC-PERP", INDEX, "36505.87636364", 1700000001000),
        ],
        [
            tick("ETH-PERP", MARK, "2049.07000000", 1700000001000),
            tick("ETH-PERP", INDEX, "2048.43488372", 1700000001000),
        ],
        [
            tick("BTC-PERP", MARK, "36510.10000000", 1700000002000),
            tick("BTC-PERP", INDEX, "36504.01272727", 1700000002000),
        ],
        [  # !markPrice@arr: SOLUSDT is not configured and is skipped
            tick("BTC-PERP", MARK, "36508.90000000", 1700000003000),
            tick("BTC-PERP", INDEX, "36503.21181818", 1700000003000),
            tick("ETH-PERP", MARK, "2049.11000000", 1700000003000),
            tick("ETH-PERP", INDEX, "2048.50139535", 1700000003000),
        ],
    ]


def test_prices_keep_every_digit() -> None:
    """Prices are Decimals built from the venue's strings, trailing zeros included."""
    frame = b'{"e":"markPriceUpdate","E":1700000001000,"s":"BTCUSDT","p":"0.000012345678","i":"7"}'
    mark, index = parse(frame, SYMBOLS, source="binance-backup")
    assert mark.price.as_tuple() == Decimal("0.000012345678").as_tuple()
    assert index == PriceTick("BTC-PERP", INDEX, Decimal(7), 1700000001000, "binance-backup")


def _event(**fields: object) -> str:
    event = {"e": "markPriceUpdate", "E": 1700000001000, "s": "BTCUSDT", "p": "1.5", "i": "1.4"}
    event.update(fields)
    return orjson.dumps({key: value for key, value in event.items() if value is not None}).decode()


@pytest.mark.parametrize(
    ("frame", "reason", "detail"),
    [
        ("", RejectReason.NOT_JSON, ""),
        ('{"stream":"btcusdt@markPrice","data":{"e":"markPr', RejectReason.NOT_JSON, "markPr"),
        ('"markPriceUpdate"', RejectReason.BAD_SHAPE, "neither"),
        ("[1, 2]", RejectReason.BAD_SHAPE, "array entry"),
        (_event(p=None), RejectReason.MISSING_FIELD, "p"),
        (_event(i=None), RejectReason.MISSING_FIELD, "i"),
        (_event(E=None), RejectReason.MISSING_FIELD, "E"),
        (_event(s=None), RejectReason.MISSING_FIELD, "s"),
        (_event(p="abc"), RejectReason.BAD_PRICE, "p='abc'"),
        (_event(p="-1.5"), RejectReason.BAD_PRICE, "positive"),
        (_event(p="0"), RejectReason.BAD_PRICE, "positive"),
        (_event(i="NaN"), RejectReason.BAD_PRICE, "i='NaN'"),
        (_event(p="Infinity"), RejectReason.BAD_PRICE, "positive"),
        (_event(p=1.5), RejectReason.BAD_PRICE, "not a decimal string"),
        (_event(E="soon"), RejectReason.BAD_TIMESTAMP, "E='soon'"),
        (_event(E=1700000001), RejectReason.BAD_TIMESTAMP, "not epoch ms"),
        (_event(E=True), RejectReason.BAD_TIMESTAMP, "E=True"),
        (_event(e="aggTrade"), RejectReason.UNKNOWN_EVENT, "aggTrade"),
        ('{"error":{"code":2,"msg":"Invalid request"},"id":1}', RejectReason.VENUE_ERROR, "2"),
    ],
)
def test_unusable_frames_raise_frame_error_with_a_reason(
    frame: str, reason: RejectReason, detail: str
) -> None:
    """Garbage, partial and nonsensical frames raise FrameError naming what is wrong."""
    with pytest.raises(FrameError) as caught:
        parse(frame, SYMBOLS)
    assert caught.value.reason == reason
    assert detail in caught.value.detail
    assert caught.value.partial == ()


def test_a_bad_entry_in_the_all_market_array_keeps_the_good_ones() -> None:
    """One bad symbol in !markPrice@arr must not blank the whole market."""
    frame = orjson.dumps(
        [
            orjson.loads(_event(s="ETHUSDT", p="2049.1", i="2048.5")),
            orjson.loads(_event(p="")),
            orjson.loads(_event(s="XRPUSDT", p="garbage")),  # not configured: not checked
        ]
    )
    with pytest.raises(FrameError) as caught:
        parse(frame, SYMBOLS)
    assert caught.value.reason == RejectReason.BAD_PRICE
    assert caught.value.partial == (
        tick("ETH-PERP", MARK, "2049.1", 1700000001000),
        tick("ETH-PERP", INDEX, "2048.5", 1700000001000),
    )


def test_unmapped_symbols_are_ignored() -> None:
    """Symbols outside the mapping give no ticks and no error."""
    assert parse(_event(s="DOGEUSDT"), SYMBOLS) == []


def test_stream_names_and_subscription_messages() -> None:
    """Lower-case stream names, 1 s or 3 s, 50 streams per SUBSCRIBE, numbered ids."""
    assert stream_names(["BTCUSDT"], "1s") == ["btcusdt@markPrice@1s"]
    assert stream_names(["BTCUSDT"], "3s") == ["btcusdt@markPrice"]
    assert stream_names(["BTCUSDT"], "1s", all_market=True) == ["!markPrice@arr@1s"]
    assert stream_names(["BTCUSDT"], "3s", all_market=True) == ["!markPrice@arr"]
    messages = [orjson.loads(m) for m in subscribe_messages([f"s{n}" for n in range(120)])]
    assert [m["id"] for m in messages] == [1, 2, 3]
    assert [len(m["params"]) for m in messages] == [50, 50, 20]
    assert {m["method"] for m in messages} == {"SUBSCRIBE"}


def test_the_source_refuses_bad_configuration() -> None:
    """No symbols, an unknown speed, or more than 200 streams fail at construction."""
    with pytest.raises(ValueError, match="no symbols"):
        BinanceSource({})
    with pytest.raises(ValueError, match="update_speed"):
        BinanceSource({"BTCUSDT": "BTCUSDT"}, update_speed="5s")  # type: ignore[arg-type]
    many = {f"C{n}USDT": f"C{n}" for n in range(201)}
    with pytest.raises(ValueError, match="all_market"):
        BinanceSource(many)
    assert BinanceSource(many, all_market=True).feed.url.endswith("/market/stream")


async def test_all_market_source_against_a_local_server(h: Any) -> None:
    """With all_market the source subscribes !markPrice@arr and keeps only mapped symbols."""
    collector = h.collector
    received: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        received.append(str(await ws.recv()))
        await ws.send('{"result":null,"id":1}')
        await ws.send(
            orjson.dumps(
                {
                    "stream": "!markPrice@arr",
                    "data": [
                        orjson.loads(_event(s="SOLUSDT", p="57.7", i="57.6")),
                        orjson.loads(_event(s="BTCUSDT", p="36500.5", i="36499.5")),
                    ],
                }
            )
        )
        await ws.wait_closed()

    async with asyncio.timeout(5), h.serve(handler) as url:
        source = BinanceSource(
            {"BTCUSDT": "BTC-PERP"},
            url=url,
            update_speed="3s",
            all_market=True,
            options=h.options(),
        )
        async with h.run(source):
            await collector.wait_ticks(2)

    assert received == ['{"method":"SUBSCRIBE","params":["!markPrice@arr"],"id":1}']
    assert collector.ticks == [
        tick("BTC-PERP", MARK, "36500.5", 1700000001000),
        tick("BTC-PERP", INDEX, "36499.5", 1700000001000),
    ]
    assert collector.rejects == []
