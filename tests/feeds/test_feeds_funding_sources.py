"""Venue sources asked for funding: announcements from a local server speaking each venue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from feeds.binance import BinanceSource
from feeds.bybit import BybitSource
from feeds.funding import FundingNotice
from feeds.okx import OkxSource

FUNDING_TS = 1700006400000

OKX_PUSH = (
    '{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"fundingRate":'
    '"0.0001","fundingTime":"1700006400000","instId":"BTC-USDT-SWAP","instType":"SWAP",'
    '"nextFundingTime":"1700035200000","ts":"1700000001000"}]}'
)
SOURCES: dict[str, Callable[[str, Any], Any]] = {
    "binance": lambda url, o: BinanceSource({"BTCUSDT": "BTC-PERP"}, url=url, options=o),
    "bybit": lambda url, o: BybitSource({"BTCUSDT": "BTC-PERP"}, url=url, options=o),
    "okx": lambda url, o: OkxSource({"BTC-USDT-SWAP": "BTC-PERP"}, url=url, options=o),
}


@pytest.mark.parametrize("venue", list(SOURCES))
async def test_a_venue_source_announces_funding_when_asked(
    h: Any, frames: Callable[[str], list[str]], venue: str
) -> None:
    """A source given a sink hands it its frames' funding while its ticks flow as before;
    OKX subscribes the funding-rate channel of its perpetuals for it."""
    sent = {
        "binance": frames("binance")[:2],
        "bybit": frames("bybit")[:2],
        "okx": [*frames("okx")[2:4], OKX_PUSH],
    }[venue]
    received: list[str] = []
    notices: list[FundingNotice] = []

    async def handler(ws: ServerConnection) -> None:
        received.append(str(await ws.recv()))
        for frame in sent:
            await ws.send(frame)
        await ws.wait_closed()

    async with asyncio.timeout(5), h.serve(handler) as url:
        source = SOURCES[venue](url, h.options())
        source.on_funding(notices.append)
        async with h.run(source):
            await h.collector.wait_ticks(2)
            await h.collector.wait_for(lambda: bool(notices))

    assert notices[0] == FundingNotice("BTC-PERP", Decimal("0.0001"), FUNDING_TS, venue)
    assert h.collector.rejects == []
    if venue == "okx":
        assert '{"channel":"funding-rate","instId":"BTC-USDT-SWAP"}' in received[0]
