"""The HTTP endpoint: the application of :mod:`monitor.web.app` served by uvicorn in the
daemon's own event loop.

uvicorn is run as a library, not as a process manager, so three of its habits
are turned off: it would install SIGTERM and SIGINT handlers (the daemon owns
those: :class:`QuietServer`), call ``sys.exit`` when the port is taken (the
socket is bound here instead, so the error reaches the command line as one
line: :func:`listen`), and configure logging (its errors go to structlog like
everything else; no access log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from monitor.core.origins import Admission
from monitor.telemetry.metrics import Metrics
from monitor.web import app
from monitor.web.api import Api
from monitor.web.app import Checks, Exposition
from monitor.web.live import LiveFeed

log = structlog.get_logger("liqmon.http")

GRACE_S = 1
"""On cancellation, how long requests in flight may take to finish before they are cancelled."""
MAX_FRAME = 16 * 1024
"""The largest message a page may send over ``/ws`` (a filter is a few dozen bytes)."""

__all__ = ["Checks", "HttpEndpoint", "listen"]


class HttpEndpoint:
    """Health, readiness, metrics; with an :class:`Api`, also ``/api/*``, ``/`` and ``/ws``.

    ``metrics`` is what ``/metrics`` renders: the daemon's :class:`Metrics` (which the
    API's live feed also reads), or any other :class:`Exposition` (``liqmon alerts``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Exposition,
        readiness: Checks,
        api: Api | None = None,
        token: str | None = None,
        allowed_hosts: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.token = token
        self.admission = Admission.build(host, allowed_hosts, allowed_origins)
        self.port = port
        self.metrics = metrics
        self.readiness = readiness
        self.api = api
        self.live: LiveFeed | None = None
        if api is not None:
            if not isinstance(metrics, Metrics):
                raise TypeError("the API's live feed reads the daemon's Metrics")
            self.live = LiveFeed(api, metrics)
        self.app, self.edge = app.build(
            metrics, readiness, api, self.live, token=token, admission=self.admission
        )
        self.bound_port: int | None = None
        _route_uvicorn_logs()

    async def run(self) -> None:
        """Serve until cancelled. Cancelling is safe and prompt: the port is closed at once,
        pages get a "going away" close, requests in flight have :data:`GRACE_S` to finish.

        Raises ``OSError`` (``EADDRINUSE``) when the port is taken.
        """
        sockets = await listen(self.host, self.port)
        try:
            self.bound_port = sockets[0].getsockname()[1]
            server = QuietServer(
                uvicorn.Config(
                    self.edge,
                    http="h11",
                    ws="websockets-sansio",
                    ws_max_size=MAX_FRAME,
                    interface="asgi3",
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    proxy_headers=False,
                    server_header=False,
                    headers=[("Server", "liqmon")],
                    timeout_graceful_shutdown=GRACE_S,
                )
            )
            async with asyncio.TaskGroup() as group:
                if self.live is not None:
                    group.create_task(self.live.run(), name="dashboard-feed")
                group.create_task(_serve(server, sockets), name="http-serve")
        finally:
            for sock in sockets:
                sock.close()


class QuietServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing (uvicorn's would replace the daemon's)."""
        yield


async def _serve(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    """Run ``server`` on ``sockets``; on cancellation, shut it down before re-raising.

    uvicorn stops by polling a flag; a cancellation instead lands in its loop and
    would leave the listening sockets and open connections behind.
    """
    try:
        await server.serve(sockets=sockets)
    except asyncio.CancelledError:
        if server.started:
            server.should_exit = True
            await server.shutdown(sockets=sockets)
        raise


async def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host`` resolves to, as ``asyncio``'s
    ``create_server`` binds them, and with its error when the port is taken
    (``error while attempting to bind on address ('127.0.0.1', 8321): address
    already in use``, which the command line turns into one line)."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as refused:
                reason = (refused.strerror or str(refused)).lower()
                raise OSError(
                    refused.errno,
                    f"error while attempting to bind on address {address!r}: {reason}",
                ) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _ToStructlog(logging.Handler):
    """uvicorn's own errors (an exception in a request, a forced shutdown) as structlog
    events. Its warnings are left out: they are about malformed requests, which any
    client can send as often as it likes."""

    def emit(self, record: logging.LogRecord) -> None:
        log.error("http_server_error", message=record.getMessage(), exc_info=record.exc_info)


def _route_uvicorn_logs() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(handler, _ToStructlog) for handler in server_log.handlers):
        server_log.addHandler(_ToStructlog(logging.ERROR))
        server_log.setLevel(logging.ERROR)
        server_log.propagate = False
