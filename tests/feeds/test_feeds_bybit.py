"""Bybit v5 tickers: snapshot/delta merging, bad frames, heartbeat."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from feeds.bybit import BybitParser, BybitSource, TickerState, subscribe_messages
from feeds.errors import FrameError, RejectReason
from feeds.tick import PriceKind, PriceTick

MARK, INDEX = PriceKind.MARK, PriceKind.INDEX


def tick(kind: PriceKind, price: str, ts_ms: int, symbol: str = "BTCUSDT") -> PriceTick:
    return PriceTick(symbol, kind, Decimal(price), ts_ms, "bybit")


def push(kind: str, ts_ms: int, **data: str) -> str:
    body = {"symbol": "BTCUSDT", **data}
    return orjson.dumps(
        {"topic": "tickers.BTCUSDT", "type": kind, "data": body, "cs": 1, "ts": ts_ms}
    ).decode()


def test_deltas_without_mark_keep_the_snapshot_mark(frames: Any) -> None:
    """Recorded snapshot then deltas: the mark stays from the snapshot, the index moves."""
    parser = BybitParser({"BTCUSDT": "BTCUSDT"})
    parsed = [parser(frame) for frame in frames("bybit")]
    assert parsed == [
        [],  # subscription answer
        [tick(MARK, "36512.33", 1700000001100), tick(INDEX, "36506.87", 1700000001100)],
        [tick(MARK, "36512.33", 1700000001200), tick(INDEX, "36507.02", 1700000001200)],
        [tick(MARK, "36512.33", 1700000001300), tick(INDEX, "36507.02", 1700000001300)],
        [tick(MARK, "36511.90", 1700000001400), tick(INDEX, "36506.55", 1700000001400)],
        [],  # pong
    ]
    assert parser.state("BTCUSDT") == TickerState(
        Decimal("36511.90"), Decimal("36506.55"), 1700000001400
    )


def test_an_older_delta_is_refused_and_not_applied() -> None:
    """A delta older than the merged state would roll it back: out_of_order, state kept."""
    parser = BybitParser({"BTCUSDT": "BTCUSDT"})
    parser(push("snapshot", 1700000002000, markPrice="100", indexPrice="99"))
    with pytest.raises(FrameError) as caught:
        parser(push("delta", 1700000001000, markPrice="50"))
    assert caught.value.reason == RejectReason.OUT_OF_ORDER
    assert parser.state("BTCUSDT") == TickerState(Decimal(100), Decimal(99), 1700000002000)


def test_a_delta_with_a_bad_field_is_refused_whole() -> None:
    """A bad markPrice in a delta rejects the delta; its good indexPrice is not applied."""
    parser = BybitParser({"BTCUSDT": "BTCUSDT"})
    parser(push("snapshot", 1700000001000, markPrice="100", indexPrice="99"))
    with pytest.raises(FrameError) as caught:
        parser(push("delta", 1700000001100, markPrice="", indexPrice="98"))
    assert caught.value.reason == RejectReason.BAD_PRICE
    assert parser.state("BTCUSDT") == TickerState(Decimal(100), Decimal(99), 1700000001000)


def test_a_new_snapshot_replaces_the_state() -> None:
    """A snapshot is the full state: nothing of the previous one survives."""
    parser = BybitParser({"BTCUSDT": "BTCUSDT"})
    parser(push("snapshot", 1700000001000, markPrice="100", indexPrice="99"))
    assert parser(push("snapshot", 1700000000500, indexPrice="97")) == [
        tick(INDEX, "97", 1700000000500)
    ]


def test_a_delta_before_any_snapshot_yields_what_it_carries() -> None:
    """Without a snapshot only the fields present are known."""
    parser = BybitParser({"BTCUSDT": "BTC-PERP"})
    assert parser(push("delta", 1700000001000, indexPrice="99.5")) == [
        tick(INDEX, "99.5", 1700000001000, symbol="BTC-PERP")
    ]


def test_unmapped_symbols_are_ignored_and_not_stored() -> None:
    """Tickers for symbols outside the mapping give nothing."""
    parser = BybitParser({"ETHUSDT": "ETHUSDT"})
    assert parser(push("snapshot", 1700000001000, markPrice="100", indexPrice="99")) == []
    assert parser.state("BTCUSDT") is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("pong", RejectReason.NOT_JSON),
        ("[]", RejectReason.BAD_SHAPE),
        ('{"data":{}}', RejectReason.BAD_SHAPE),
        (
            '{"success":false,"ret_msg":"error:handler not found,topic:tickers.FOO",'
            '"conn_id":"c1","req_id":"liqmon-1","op":"subscribe"}',
            RejectReason.VENUE_ERROR,
        ),
        (
            '{"topic":"orderbook.1.BTCUSDT","type":"snapshot","data":{},"ts":1700000001000}',
            RejectReason.UNKNOWN_EVENT,
        ),
        (
            '{"topic":"tickers.BTCUSDT","type":"full","data":{},"ts":1700000001000}',
            RejectReason.BAD_SHAPE,
        ),
        (
            '{"topic":"tickers.BTCUSDT","type":"delta","ts":1700000001000}',
            RejectReason.MISSING_FIELD,
        ),
        (
            '{"topic":"tickers.BTCUSDT","type":"delta","data":{"markPrice":"1"}}',
            RejectReason.MISSING_FIELD,
        ),
        (
            '{"topic":"tickers.BTCUSDT","type":"delta","data":{"markPrice":"x"},"ts":1700000001000}',
            RejectReason.BAD_PRICE,
        ),
        (
            '{"topic":"tickers.BTCUSDT","type":"delta","data":{"markPrice":"1"},"ts":"now"}',
            RejectReason.BAD_TIMESTAMP,
        ),
    ],
)
def test_unusable_frames_raise_frame_error(frame: str, reason: RejectReason) -> None:
    """Garbage, partial frames and venue errors raise FrameError with a reason."""
    with pytest.raises(FrameError) as caught:
        BybitParser({"BTCUSDT": "BTCUSDT"})(frame)
    assert caught.value.reason == reason


def test_subscription_messages_carry_ten_topics_each() -> None:
    """Topics are chunked by ten with distinct req_ids."""
    messages = [orjson.loads(m) for m in subscribe_messages([f"S{n}USDT" for n in range(25)])]
    assert [len(m["args"]) for m in messages] == [10, 10, 5]
    assert messages[0]["args"][0] == "tickers.S0USDT"
    assert [m["req_id"] for m in messages] == ["liqmon-1", "liqmon-2", "liqmon-3"]


def test_the_source_picks_the_url_by_category() -> None:
    """linear and inverse have their own public endpoints; a URL overrides both."""
    assert BybitSource({"BTCUSD": "BTCUSD"}, category="inverse").feed.url.endswith("/inverse")
    assert BybitSource({"BTCUSDT": "BTCUSDT"}).feed.url.endswith("/v5/public/linear")
    assert BybitSource({"X": "X"}, url="ws://h/").feed.url == "ws://h/"
    with pytest.raises(ValueError, match="category"):
        BybitSource({"X": "X"}, category="spot")  # type: ignore[arg-type]


async def test_snapshot_and_deltas_over_a_local_server_with_heartbeats(h: Any) -> None:
    """The source answers Bybit's heartbeat rule and merges deltas that omit markPrice."""
    collector = h.collector
    pings: list[str] = []
    three_pings = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the subscription
        await ws.send(
            '{"success":true,"ret_msg":"","conn_id":"c1","req_id":"liqmon-1","op":"subscribe"}'
        )
        await ws.send(push("snapshot", 1700000001000, markPrice="36512.33", indexPrice="36506.87"))
        await ws.send(push("delta", 1700000001100, indexPrice="36507.10", bid1Price="1"))
        await ws.send(push("delta", 1700000001200, indexPrice="36508.00"))
        async for message in ws:
            pings.append(str(message))
            if len(pings) == 3:
                three_pings.set()
            await ws.send('{"success":true,"ret_msg":"pong","conn_id":"c1","op":"ping"}')

    async with asyncio.timeout(5), h.serve(handler) as url:
        source = BybitSource({"BTCUSDT": "BTCUSDT"}, url=url, heartbeat_s=0.05, options=h.options())
        async with h.run(source):
            await collector.wait_ticks(6)
            await three_pings.wait()

    assert collector.ticks == [
        tick(MARK, "36512.33", 1700000001000),
        tick(INDEX, "36506.87", 1700000001000),
        tick(MARK, "36512.33", 1700000001100),
        tick(INDEX, "36507.10", 1700000001100),
        tick(MARK, "36512.33", 1700000001200),
        tick(INDEX, "36508.00", 1700000001200),
    ]
    assert set(pings) == {'{"op":"ping"}'}
    assert collector.rejects == [], "pongs and subscription answers are not rejects"
