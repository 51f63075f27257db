"""A venue websocket drives the monitor: a Binance-format server crashes the price.

The daemon is configured with a Binance source pointed at a local server that
speaks Binance's mark-price stream format; the liquidation it causes arrives
on MQTT, with the index price the frames carried.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import orjson
from harness import (
    Collector,
    half_btc_long,
    mqtt_client,
    publish,
    running,
    settings_for,
    stored_positions,
)
from websockets.asyncio.server import ServerConnection, serve

from feeds.binance import BinanceSource
from feeds.ws import WsOptions

TS0 = 1_732_400_000_000


def frame(ts_ms: int, mark: str, index: str) -> bytes:
    """One combined-stream markPrice frame, as Binance sends it."""
    data = {"e": "markPriceUpdate", "E": ts_ms, "s": "BTCUSDT", "p": mark, "i": index,
            "P": mark, "r": "0.00010000", "T": ts_ms + 3_600_000}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@markPrice@1s", "data": data})


async def test_a_binance_stream_crash_liquidates(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Marks from a Binance-format stream fall below a long's liquidation price: one liquidation."""
    subscribed = asyncio.Event()
    crash = asyncio.Event()

    async def venue(ws: ServerConnection) -> None:
        request = orjson.loads(await ws.recv())
        assert request["method"] == "SUBSCRIBE"
        assert request["params"] == ["btcusdt@markPrice@1s"]
        await ws.send(orjson.dumps({"result": None, "id": request["id"]}).decode())
        await ws.send(frame(TS0, "60000", "60010").decode())
        subscribed.set()
        await crash.wait()
        for n, price in enumerate(("58000", "56000", "54000"), 1):
            await ws.send(frame(TS0 + n * 1000, price, str(Decimal(price) + 5)).decode())
        await ws.wait_closed()

    async with serve(venue, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        source = BinanceSource(
            {"BTCUSDT": "BTCUSDT"}, url=f"ws://127.0.0.1:{port}/stream", options=WsOptions()
        )
        settings = replace(settings_for(redis_url, mqtt_url, prefix), sources=(source,))
        position = half_btc_long("p-1", account="acct-7")
        async with (
            running(settings, sources=list(settings.sources)) as daemon,
            Collector(mqtt_url, prefix) as events,
            mqtt_client(mqtt_url) as client,
        ):
            async with asyncio.timeout(10):
                await subscribed.wait()
            await publish(client, f"{prefix}/positions", position)
            await stored_positions(daemon, "BTCUSDT", 1)
            crash.set()
            received = await events.wait_for(1)
            await events.quiet(0.3)
    assert [(e["event_id"], e["type"], e["mark_price"]) for e in received] == [
        ("p-1:1:1", "liquidation", "54000")
    ]
    # Binance frames carry the mark before the index; the event reports the
    # latest index stored when the mark was evaluated: this frame's or the last.
    assert received[0]["index_price"] in {"54005", "56005"}
