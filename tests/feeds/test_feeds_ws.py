"""The shared websocket loop, against local servers speaking each venue's format."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from feeds.binance import BinanceSource
from feeds.errors import FeedFatalError, RejectReason
from feeds.ws import Backoff, WsOptions, classify

TS0 = 1_700_000_000_000


async def test_reconnects_and_resubscribes_after_a_drop(venue: Any, h: Any) -> None:
    """A dropped connection is redialled, resubscribed, and the later prices arrive."""
    collector = h.collector

    async def script(server: Any, ws: ServerConnection, number: int) -> None:
        if number == 0:
            await server.send_prices(ws, number, TS0 + 1000, "100.1", "100.0")
            await server.send_prices(ws, number, TS0 + 2000, "100.2", "100.1")
            await collector.wait_ticks(4)
            ws.transport.abort()  # no close frame: the network just goes away
        else:
            await server.send_prices(ws, number, TS0 + 3000, "99.5", "99.9")
            await ws.wait_closed()

    server = h.server(venue, script)
    async with asyncio.timeout(5), h.serve(server.handler) as url:
        source = venue.make(url, h.options())
        async with h.run(source):
            await collector.wait_ticks(6)

    assert server.subscriptions == [venue.subscriptions, venue.subscriptions]
    assert collector.prices() == [
        ("BTCUSDT", "mark", "100.1", TS0 + 1000),
        ("BTCUSDT", "index", "100.0", TS0 + 1000),
        ("BTCUSDT", "mark", "100.2", TS0 + 2000),
        ("BTCUSDT", "index", "100.1", TS0 + 2000),
        ("BTCUSDT", "mark", "99.5", TS0 + 3000),
        ("BTCUSDT", "index", "99.9", TS0 + 3000),
    ]
    assert collector.rejects == []
    assert {t.source for t in collector.ticks} == {venue.name}


async def test_a_silent_connection_is_detected_and_replaced(venue: Any, h: Any) -> None:
    """A server that stops sending without closing is dropped after idle_timeout_s."""
    collector = h.collector
    idle_s = 0.3

    async def script(server: Any, ws: ServerConnection, number: int) -> None:
        await server.send_prices(ws, number, TS0 + 1000 * (number + 1), "100", "101")
        await ws.wait_closed()  # silent, but the socket stays open (and answers pings)

    server = h.server(venue, script)
    async with asyncio.timeout(5), h.serve(server.handler) as url:
        source = venue.make(url, h.options(idle_timeout_s=idle_s))
        async with h.run(source):
            await collector.wait_ticks(2)
            first = time.monotonic()
            await collector.wait_ticks(4)
            elapsed = time.monotonic() - first

    assert idle_s * 0.8 <= elapsed <= idle_s + 1.0
    assert source.feed.stats.idle_timeouts >= 1
    assert server.subscriptions == [venue.subscriptions, venue.subscriptions]
    assert [t.ts_ms for t in collector.ticks] == [TS0 + 1000] * 2 + [TS0 + 2000] * 2


async def test_garbage_is_rejected_and_the_stream_goes_on(venue: Any, h: Any) -> None:
    """Garbage frames go to reject() with a reason; older ticks pass through in arrival
    order for the daemon's order guard (Bybit refuses an older delta, which would corrupt
    its merged state)."""
    collector = h.collector
    garbage_text = "}{ definitely not json"
    garbage_bytes = b"\xff\xfe\x00binary"

    async def script(server: Any, ws: ServerConnection, number: int) -> None:
        await server.send_prices(ws, number, TS0 + 2000, "100", "101")
        await ws.send(garbage_text)
        await ws.send(garbage_bytes)
        await ws.send("{}")
        await server.send_prices(ws, number, TS0 + 1000, "90", "91")  # out of order
        await server.send_prices(ws, number, TS0 + 3000, "110", "111")
        await ws.wait_closed()

    server = h.server(venue, script)
    expected_ts = [TS0 + 2000, TS0 + 1000, TS0 + 3000]
    expected_rejects = 3
    if venue.name == "bybit":
        expected_ts.remove(TS0 + 1000)
        expected_rejects += 1
    async with asyncio.timeout(5), h.serve(server.handler) as url:
        source = venue.make(url, h.options())
        async with h.run(source):
            await collector.wait_for(
                lambda: (
                    len(collector.ticks) >= 6 - 2 * (venue.name == "bybit")
                    and len(collector.rejects) >= expected_rejects
                )
            )

    assert [t.ts_ms for t in collector.ticks] == [ts for ts in expected_ts for _ in (0, 1)]
    assert collector.rejects[:2] == [
        (venue.name, RejectReason.NOT_JSON, garbage_text.encode()),
        (venue.name, RejectReason.NOT_JSON, garbage_bytes),
    ]
    assert collector.rejects[2][1] in {RejectReason.MISSING_FIELD, RejectReason.BAD_SHAPE}
    if venue.name == "bybit":
        assert collector.rejects[3][1] == RejectReason.OUT_OF_ORDER
    assert server.connections == 1, "a bad frame must not cost the connection"


async def test_a_server_that_accepts_and_drops_at_once_is_backed_off(h: Any) -> None:
    """websockets resets its backoff after each handshake; the feed's own backoff
    still spaces out reconnects to a server that drops every session."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.recv()
        await ws.close()

    options = h.options(backoff=Backoff(base_s=0.05, max_s=0.4))
    async with asyncio.timeout(5), h.serve(handler) as url:
        source = BinanceSource({"BTCUSDT": "BTCUSDT"}, url=url, options=options)
        async with h.run(source):
            await asyncio.sleep(1.0)  # reconnects counted over a second: time is the test
    # Equal jitter: waits of at least 0.025, 0.05, 0.1, 0.2, 0.2 ... seconds.
    assert 2 <= connections <= 8


async def test_a_fatal_handshake_refusal_ends_run(h: Any) -> None:
    """HTTP 404 at the handshake will not get better: run raises FeedFatalError."""
    collector = h.collector

    def refuse(connection: ServerConnection, request: Any) -> Response:
        return connection.respond(HTTPStatus.NOT_FOUND, "no such stream\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never reached")

    async with asyncio.timeout(5), h.serve(handler, process_request=refuse) as url:
        source = BinanceSource({"BTCUSDT": "BTCUSDT"}, url=url, options=WsOptions(proxy=False))
        with pytest.raises(FeedFatalError, match="HTTP 404"):
            await source.run(collector.emit, collector.reject)


async def test_a_retryable_handshake_refusal_is_retried(h: Any) -> None:
    """HTTP 503 (and 429) at the handshake are retried with backoff until it works."""
    collector = h.collector
    kit = h.kits["binance"]
    answers = [HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.TOO_MANY_REQUESTS]

    def busy(connection: ServerConnection, request: Any) -> Response | None:
        return connection.respond(answers.pop(0), "busy\n") if answers else None

    async def script(server: Any, ws: ServerConnection, number: int) -> None:
        await server.send_prices(ws, number, TS0, "1.5", "1.4")
        await ws.wait_closed()

    server = h.server(kit, script)
    async with asyncio.timeout(5), h.serve(server.handler, process_request=busy) as url:
        source = kit.make(url, h.options())
        async with h.run(source):
            await collector.wait_ticks(2)
    assert answers == []
    assert collector.prices()[0] == ("BTCUSDT", "mark", "1.5", TS0)


async def test_cancelling_a_connected_source_is_prompt(venue: Any, h: Any) -> None:
    """Cancelling run while streaming re-raises CancelledError at once and closes the socket."""
    collector = h.collector
    closed = asyncio.Event()

    async def script(server: Any, ws: ServerConnection, number: int) -> None:
        await server.send_prices(ws, number, TS0, "10", "10")
        await ws.wait_closed()
        closed.set()

    server = h.server(venue, script)
    async with asyncio.timeout(5), h.serve(server.handler) as url:
        source = venue.make(url, h.options())
        task = asyncio.create_task(source.run(collector.emit, collector.reject))
        await collector.wait_ticks(2)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5
        await asyncio.wait_for(closed.wait(), 1.0)


async def test_cancelling_during_a_stuck_handshake_is_prompt(h: Any) -> None:
    """A TCP server that never answers the websocket handshake does not delay cancellation."""
    collector = h.collector
    asked = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")  # the handshake request, never answered
                asked.set()
                await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()

    tcp = await asyncio.start_server(mute, "127.0.0.1", 0)
    async with asyncio.timeout(5), tcp:
        port = tcp.sockets[0].getsockname()[1]
        source = BinanceSource(
            {"BTCUSDT": "BTCUSDT"}, url=f"ws://127.0.0.1:{port}/", options=h.options()
        )
        task = asyncio.create_task(source.run(collector.emit, collector.reject))
        await asked.wait()
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5
        tcp.close()


def test_backoff_delays_grow_with_jitter_up_to_the_cap() -> None:
    """Attempt n waits in [c/2, c] with c = min(max, base * factor**n)."""
    delays = Backoff(base_s=0.5, max_s=4.0, factor=2.0).delays(random.Random(7))
    observed = [next(delays) for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(observed, caps, strict=True))
    assert len(set(observed)) == len(observed), "jittered, not constant"


def test_backoff_rejects_nonsense() -> None:
    """A zero base or a cap below the base is a configuration error."""
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(base_s=0)
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(base_s=2, max_s=1)


def _status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers()))


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (_status(503), True),
        (_status(429), True),
        (_status(418), True),
        (_status(404), False),
        (_status(403), False),
        (_status(200), False),
        (ValueError("bug"), False),
    ],
)
def test_classify_tells_retryable_from_fatal(exc: Exception, retry: bool) -> None:
    """Network trouble and rate limits are retried; refusals and bugs are fatal."""
    verdict = classify(exc)
    if retry:
        assert verdict is None
    else:
        assert isinstance(verdict, FeedFatalError)
