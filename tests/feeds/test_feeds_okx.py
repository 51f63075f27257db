"""OKX v5 mark-price and index-tickers: parsed values, index mapping, bad frames, ping."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from feeds.errors import FrameError, RejectReason
from feeds.okx import OkxSource, index_map, parse, subscribe_messages, underlying
from feeds.tick import PriceKind, PriceTick

MARK, INDEX = PriceKind.MARK, PriceKind.INDEX
MARKS = {"BTC-USDT-SWAP": "BTCUSDT"}
INDEXES = {"BTC-USDT": ("BTCUSDT",)}


def tick(symbol: str, kind: PriceKind, price: str, ts_ms: int) -> PriceTick:
    return PriceTick(symbol, kind, Decimal(price), ts_ms, "okx")


def mark_push(*entries: dict[str, str]) -> str:
    arg = {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}
    return orjson.dumps({"arg": arg, "data": list(entries)}).decode()


def test_recorded_frames(frames: Any) -> None:
    """mark-price gives mark ticks (markPx), index-tickers index ticks (idxPx)."""
    recorded = frames("okx")
    parsed = [parse(frame, MARKS, INDEXES) for frame in recorded[:5]]
    assert parsed == [
        [],  # subscribe answers
        [],
        [tick("BTCUSDT", MARK, "36512.3", 1700000001000)],
        [tick("BTCUSDT", INDEX, "36506.9", 1700000001020)],
        [],  # pong
    ]
    with pytest.raises(FrameError) as caught:
        parse(recorded[5], MARKS, INDEXES)
    assert caught.value.reason == RejectReason.VENUE_ERROR
    assert caught.value.detail.startswith("60018 Wrong URL or channel")


def test_one_index_serves_every_instrument_on_it() -> None:
    """A swap and a future on BTC-USDT both get the BTC-USDT index."""
    marks = {
        "BTC-USDT-SWAP": "BTCUSDT",
        "BTC-USDT-250328": "BTCUSDT-0328",
        "ETH-USD-SWAP": "ETHUSD",
    }
    indexes = index_map(marks)
    assert indexes == {"BTC-USDT": ("BTCUSDT", "BTCUSDT-0328"), "ETH-USD": ("ETHUSD",)}
    frame = (
        '{"arg":{"channel":"index-tickers","instId":"BTC-USDT"},'
        '"data":[{"instId":"BTC-USDT","idxPx":"36506.9","ts":"1700000001020"}]}'
    )
    assert parse(frame, marks, indexes) == [
        tick("BTCUSDT", INDEX, "36506.9", 1700000001020),
        tick("BTCUSDT-0328", INDEX, "36506.9", 1700000001020),
    ]


def test_index_mapping_can_be_explicit_or_off() -> None:
    """index_symbols overrides the derivation; an empty mapping subscribes no index."""
    assert index_map(MARKS, {"BTC-USD": "BTCUSDT"}) == {"BTC-USD": ("BTCUSDT",)}
    assert index_map(MARKS, {}) == {}
    assert underlying("ETH-USD-250328") == "ETH-USD"
    with pytest.raises(ValueError, match="cannot derive"):
        underlying("BTCUSDT")


def test_subscription_messages() -> None:
    """One message lists the mark-price and index-tickers args (50 per message)."""
    (message,) = subscribe_messages(["BTC-USDT-SWAP"], ["BTC-USDT"])
    assert orjson.loads(message) == {
        "op": "subscribe",
        "args": [
            {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
            {"channel": "index-tickers", "instId": "BTC-USDT"},
        ],
    }
    assert len(subscribe_messages([f"I{n}" for n in range(60)], [f"X{n}" for n in range(60)])) == 3


def test_several_entries_keep_the_good_ones() -> None:
    """A push with one bad entry still delivers the others (in FrameError.partial)."""
    frame = mark_push(
        {"instId": "BTC-USDT-SWAP", "markPx": "36512.3", "ts": "1700000001000"},
        {"instId": "BTC-USDT-SWAP", "markPx": "-1", "ts": "1700000001200"},
        {"instId": "DOGE-USDT-SWAP", "markPx": "bad", "ts": "x"},  # unmapped: skipped
    )
    with pytest.raises(FrameError) as caught:
        parse(frame, MARKS, INDEXES)
    assert caught.value.reason == RejectReason.BAD_PRICE
    assert caught.value.partial == (tick("BTCUSDT", MARK, "36512.3", 1700000001000),)


def test_the_arg_instid_is_used_when_entries_omit_it() -> None:
    """An entry without instId belongs to the subscription's instrument."""
    frame = mark_push({"markPx": "36512.3", "ts": "1700000001000"})
    assert parse(frame, MARKS, INDEXES) == [tick("BTCUSDT", MARK, "36512.3", 1700000001000)]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("pon", RejectReason.NOT_JSON),
        ("[]", RejectReason.BAD_SHAPE),
        ('{"data":[]}', RejectReason.MISSING_FIELD),
        ('{"event":"login","code":"0"}', RejectReason.UNKNOWN_EVENT),
        (
            '{"arg":{"channel":"tickers","instId":"BTC-USDT-SWAP"},"data":[]}',
            RejectReason.UNKNOWN_EVENT,
        ),
        (
            '{"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"data":{}}',
            RejectReason.BAD_SHAPE,
        ),
        (mark_push({"instId": "BTC-USDT-SWAP", "ts": "1700000001000"}), RejectReason.MISSING_FIELD),
        (mark_push({"instId": "BTC-USDT-SWAP", "markPx": "1"}), RejectReason.MISSING_FIELD),
        (
            mark_push({"instId": "BTC-USDT-SWAP", "markPx": "1", "ts": "17e11"}),
            RejectReason.BAD_TIMESTAMP,
        ),
        (
            mark_push({"instId": "BTC-USDT-SWAP", "markPx": "", "ts": "1700000001000"}),
            RejectReason.BAD_PRICE,
        ),
    ],
)
def test_unusable_frames_raise_frame_error(frame: str, reason: RejectReason) -> None:
    """Garbage, partial frames and unknown channels raise FrameError with a reason."""
    with pytest.raises(FrameError) as caught:
        parse(frame, MARKS, INDEXES)
    assert caught.value.reason == reason


async def test_the_source_pings_and_reads_pong(h: Any) -> None:
    """The text ping goes out every heartbeat_s; the pong is not a reject."""
    collector = h.collector
    pings = 0
    three_pings = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        nonlocal pings
        await ws.recv()
        await ws.send(
            mark_push({"instId": "BTC-USDT-SWAP", "markPx": "1.5", "ts": "1700000001000"})
        )
        async for message in ws:
            assert message == "ping"
            pings += 1
            if pings == 3:
                three_pings.set()
            await ws.send("pong")

    async with asyncio.timeout(5), h.serve(handler) as url:
        source = OkxSource(MARKS, url=url, heartbeat_s=0.05, options=h.options())
        async with h.run(source):
            await collector.wait_ticks(1)
            await three_pings.wait()

    assert collector.ticks == [tick("BTCUSDT", MARK, "1.5", 1700000001000)]
    assert collector.rejects == []
    assert source.feed.stats.heartbeats >= 3
