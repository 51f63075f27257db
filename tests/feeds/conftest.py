"""Shared pieces for the feed tests: a tick collector, local websocket servers
that speak each venue's format, and fast connection options.

Test modules cannot import this file (``tests/`` is not a package), so
everything is handed out as fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from feeds.binance import BinanceSource
from feeds.bybit import BybitSource
from feeds.okx import OkxSource
from feeds.source import PriceSource
from feeds.tick import PriceTick
from feeds.ws import Backoff, WsOptions

FRAMES = Path(__file__).parent / "frames"
TS0 = 1_700_000_000_000

Handler = Callable[[ServerConnection], Awaitable[None]]


class Collector:
    """Stands in for the daemon: records emitted ticks and rejected frames."""

    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self.rejects: list[tuple[str, str, bytes]] = []
        self._changed = asyncio.Event()

    async def emit(self, tick: PriceTick) -> None:
        self.ticks.append(tick)
        self._changed.set()

    async def reject(self, source: str, reason: str, raw: bytes) -> None:
        self.rejects.append((source, reason, raw))
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (callers bound this with a timeout)."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def wait_ticks(self, count: int) -> None:
        await self.wait_for(lambda: len(self.ticks) >= count)

    def prices(self) -> list[tuple[str, str, str, int]]:
        """(symbol, kind, price, ts_ms) per tick, easy to compare."""
        return [(t.symbol, t.kind.value, str(t.price), t.ts_ms) for t in self.ticks]


@contextlib.asynccontextmanager
async def _serve_local(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@contextlib.asynccontextmanager
async def _running(source: PriceSource, collector: Collector) -> AsyncIterator[asyncio.Task[None]]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(
            source.run(collector.emit, collector.reject), name="source-under-test"
        )
        try:
            yield task
        finally:
            task.cancel()


def fast(**overrides: Any) -> WsOptions:
    settings: dict[str, Any] = {
        "idle_timeout_s": 5.0,
        "backoff": Backoff(base_s=0.01, max_s=0.05),
        "open_timeout_s": 2.0,
        "close_timeout_s": 0.5,
        "ping_interval_s": None,
        "proxy": False,
    }
    settings.update(overrides)
    return WsOptions(**settings)


@pytest.fixture
def frames() -> Callable[[str], list[str]]:
    """``frames("bybit")``: the recorded-looking frames of ``frames/bybit.jsonl``."""

    def load(name: str) -> list[str]:
        return (FRAMES / f"{name}.jsonl").read_text().splitlines()

    return load


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class VenueKit:
    """How a local server impersonates one venue, for the venue-agnostic tests.

    ``frames(conn, ts_ms, mark, index)`` gives the frames that carry one mark
    and one index price for ``BTCUSDT``; ``conn`` counts the frames already
    sent on this connection (Bybit opens each connection with a snapshot).
    """

    name: str
    make: Callable[[str, WsOptions], PriceSource]
    subscriptions: list[str]
    frames: Callable[[int, int, str, str], list[str]]


def _binance_frames(sent: int, ts_ms: int, mark: str, index: str) -> list[str]:
    data = {"e": "markPriceUpdate", "E": ts_ms, "s": "BTCUSDT", "p": mark, "i": index}
    data |= {"P": mark, "r": "0.00010000", "T": TS0 + 3_600_000}
    return [_dumps({"stream": "btcusdt@markPrice@1s", "data": data})]


def _bybit_frames(sent: int, ts_ms: int, mark: str, index: str) -> list[str]:
    kind = "snapshot" if sent == 0 else "delta"
    data = {"symbol": "BTCUSDT", "markPrice": mark, "indexPrice": index, "lastPrice": mark}
    return [_dumps({"topic": "tickers.BTCUSDT", "type": kind, "data": data, "cs": 1, "ts": ts_ms})]


def _okx_frames(sent: int, ts_ms: int, mark: str, index: str) -> list[str]:
    mark_entry = {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "markPx": mark, "ts": str(ts_ms)}
    index_entry = {"instId": "BTC-USDT", "idxPx": index, "ts": str(ts_ms)}
    return [
        _dumps({"arg": {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}, "data": [mark_entry]}),
        _dumps({"arg": {"channel": "index-tickers", "instId": "BTC-USDT"}, "data": [index_entry]}),
    ]


VENUES = {
    "binance": VenueKit(
        "binance",
        lambda url, options: BinanceSource({"BTCUSDT": "BTCUSDT"}, url=url, options=options),
        ['{"method":"SUBSCRIBE","params":["btcusdt@markPrice@1s"],"id":1}'],
        _binance_frames,
    ),
    "bybit": VenueKit(
        "bybit",
        lambda url, options: BybitSource({"BTCUSDT": "BTCUSDT"}, url=url, options=options),
        ['{"req_id":"liqmon-1","op":"subscribe","args":["tickers.BTCUSDT"]}'],
        _bybit_frames,
    ),
    "okx": VenueKit(
        "okx",
        lambda url, options: OkxSource({"BTC-USDT-SWAP": "BTCUSDT"}, url=url, options=options),
        [
            '{"op":"subscribe","args":[{"channel":"mark-price","instId":"BTC-USDT-SWAP"},'
            '{"channel":"index-tickers","instId":"BTC-USDT"}]}'
        ],
        _okx_frames,
    ),
}


@pytest.fixture(params=sorted(VENUES))
def venue(request: pytest.FixtureRequest) -> VenueKit:
    """Each venue in turn."""
    kit: VenueKit = VENUES[request.param]
    return kit


class VenueServer:
    """A local venue: checks the subscription on every connection, then runs
    ``script(self, ws, connection_number)``.

    A connection whose first messages are not the expected subscriptions is
    closed with 1008 and gets no data, so ticks arriving after a reconnect
    prove that the client resubscribed.
    """

    def __init__(
        self,
        kit: VenueKit,
        script: Callable[[VenueServer, ServerConnection, int], Awaitable[None]],
    ) -> None:
        self.kit = kit
        self.script = script
        self.connections = 0
        self.subscriptions: list[list[str]] = []
        self.sent_on: dict[int, int] = {}

    async def handler(self, ws: ServerConnection) -> None:
        number = self.connections
        self.connections += 1
        received = [str(await ws.recv()) for _ in self.kit.subscriptions]
        self.subscriptions.append(received)
        if received != self.kit.subscriptions:
            await ws.close(1008, "expected a subscription first")
            return
        self.sent_on[number] = 0
        await self.script(self, ws, number)

    async def send_prices(
        self, ws: ServerConnection, number: int, ts_ms: int, mark: str, index: str
    ) -> None:
        """Send connection ``number`` the frames of one mark and one index price."""
        for frame in self.kit.frames(self.sent_on[number], ts_ms, mark, index):
            await ws.send(frame)
        self.sent_on[number] += 1


class Harness:
    """Everything a websocket test needs, as one fixture.

    ``collector`` records what the source emits and rejects; ``serve(handler)``
    starts a local server; ``run(source)`` runs a source into the collector
    and cancels it on exit; ``options(**overrides)`` gives fast WsOptions;
    ``server(kit, script)`` builds a :class:`VenueServer`; ``kits`` holds every
    venue's kit by name.
    """

    def __init__(self) -> None:
        self.collector = Collector()
        self.kits = VENUES

    def serve(self, handler: Handler, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[str]:
        return _serve_local(handler, **kwargs)

    def run(
        self, source: PriceSource
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
        return _running(source, self.collector)

    def options(self, **overrides: Any) -> WsOptions:
        return fast(**overrides)

    def server(
        self,
        kit: VenueKit,
        script: Callable[[VenueServer, ServerConnection, int], Awaitable[None]],
    ) -> VenueServer:
        return VenueServer(kit, script)


@pytest.fixture
def h() -> Harness:
    """The websocket test harness."""
    return Harness()
