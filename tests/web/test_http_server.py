"""The HTTP server inside the daemon's loop: it leaves the signals alone, reports a taken
port as an error to its caller, and stops at once when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import time
from collections.abc import Iterator

import pytest
import websockets
from harness import crash, running, settings_for
from websockets.asyncio.client import connect

from monitor.telemetry.metrics import Metrics
from monitor.web.http import HttpEndpoint


async def always_ready() -> dict[str, str]:
    """A readiness check with nothing failing."""
    return {}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A local port another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_taken_port_is_an_error_for_the_caller_not_an_exit(taken_port: int) -> None:
    """run() raises EADDRINUSE naming the address (the command line's one-line error reads
    it), instead of uvicorn's sys.exit."""
    endpoint = HttpEndpoint("127.0.0.1", taken_port, Metrics(), always_ready)
    with pytest.raises(OSError) as refused:
        async with asyncio.timeout(5):
            await endpoint.run()
    assert errno.EADDRINUSE == refused.value.errno
    assert f"('127.0.0.1', {taken_port})" in str(refused.value)


async def test_the_server_leaves_the_signal_handlers_to_the_daemon() -> None:
    """While serving, SIGTERM and SIGINT keep the handlers the process had."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    endpoint = HttpEndpoint("127.0.0.1", 0, Metrics(), always_ready)
    task = asyncio.create_task(endpoint.run())
    try:
        async with asyncio.timeout(5):
            while endpoint.bound_port is None:
                await asyncio.sleep(0.01)
            status = await asyncio.to_thread(_status, endpoint.bound_port, "/healthz")
        during = {sig: signal.getsignal(sig) for sig in before}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert 200 == status
    assert before == during


async def test_cancelling_stops_the_server_at_once_and_closes_open_pages(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A daemon cancelled while a dashboard page is open closes the page at once, telling it
    the server is restarting (1012), and its port refuses new connections."""
    async with running(settings_for(redis_url, mqtt_url, prefix)) as daemon:
        port = daemon.http.bound_port
        assert port is not None
        page = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
        await page.recv()  # the hello: the page is attached
        stopping = asyncio.create_task(crash(daemon))
        started = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await page.recv()
        took_s = time.monotonic() - started
        await stopping
        await page.close()
    assert took_s < 0.5
    assert closed.value.rcvd is not None
    assert 1012 == closed.value.rcvd.code  # service restart: the page reconnects
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(_status, port, "/healthz")


def _status(port: int, path: str) -> int:
    """The status of a plain GET (raises when nothing listens)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        head = sock.recv(64).decode("latin-1")
    return int(head.split(" ")[1])
