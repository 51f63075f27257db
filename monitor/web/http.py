"""The HTTP endpoint: health, metrics, the JSON API and the dashboard, served by ``websockets``.

``websockets`` answers plain HTTP requests from ``process_request`` on the
same port as its websocket endpoint, so one port serves all of it:

=====================================  ==============================================
``GET /healthz``                       the process is up
``GET /readyz``                        200 when ready, else 503 with what is failing
``GET /metrics``                       Prometheus text format
``GET /api/positions``                 closest to liquidation first (:mod:`monitor.web.api`)
``GET /api/positions/{id}``            one position (404 when unknown)
``GET /api/events``                    recent published events and alerts
``GET /api/symbols``                   prices, feed age and guard state per symbol
``GET /``                              the dashboard (static files in ``dashboard/``)
``/ws``                                the dashboard's live feed (:mod:`monitor.web.live`)
=====================================  ==============================================

Bad query parameters are a 400 and unknown ids a 404, each with
``{"error": "..."}``; a 503 says Redis is unavailable. The page, ``/api/*`` and
``/ws`` answer only requests that name this server and come from its own page
or an allow-listed origin, else a 403 says why (:mod:`monitor.core.origins`).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from monitor.core.origins import Admission
from monitor.state.readmodel import REDIS_DOWN
from monitor.telemetry.metrics import Metrics
from monitor.web.api import Api, ApiError, parse_events_query, parse_positions_query, query_params
from monitor.web.live import LiveFeed

Checks = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of failing dependency → reason (empty when ready)."""

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
"""The dashboard's files: everything it loads comes from this endpoint."""

PAGE_SECURITY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _response(
    status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
            *extra,
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def json_response(status: int, document: object) -> Response:
    """A JSON response."""
    return _response(status, orjson.dumps(document), "application/json")


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("monitor.web").joinpath("dashboard")
    return {
        path: (folder.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in STATIC.items()
    }


class HttpEndpoint:
    """Health, readiness, metrics; with an :class:`Api`, also ``/api/*``, ``/`` and ``/ws``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
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
        self.live = LiveFeed(api, metrics) if api is not None else None
        self.static = _load_static() if api is not None else {}
        self.bound_port: int | None = None

    async def run(self) -> None:
        """Serve until cancelled. Cancelling is safe."""
        async with serve(
            self._websocket,
            self.host,
            self.port,
            process_request=self._route,
            max_size=16 * 1024,
            server_header="liqmon",
        ) as server:
            self.bound_port = server.sockets[0].getsockname()[1] if server.sockets else self.port
            if self.live is None:
                await server.serve_forever()
                return
            async with asyncio.TaskGroup() as group:
                group.create_task(self.live.run(), name="dashboard-feed")
                group.create_task(server.serve_forever(), name="http-serve")

    async def _websocket(self, connection: ServerConnection) -> None:
        request = connection.request
        if self.live is None or request is None or urlsplit(request.path).path != "/ws":
            await connection.close(1008, "the live feed is at /ws")
            return
        await self.live.serve(connection)

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            failing = await self.readiness()
            if failing:
                return json_response(503, {"status": "not ready", "failing": failing})
            return json_response(200, {"status": "ready"})
        if path == "/metrics" and not (self.token and not self._authorized(request, parts.query)):
            if self.live is not None:
                # liqmon_positions is counted when scraped, not on a timer.
                await self.live.refresh_counts()
            # Rendering hundreds of symbols' series takes tens of milliseconds:
            # in a thread, so the event loop keeps evaluating ticks meanwhile.
            body = await asyncio.to_thread(self.metrics.render)
            return _response(200, body, "text/plain; version=0.0.4; charset=utf-8")
        origin = _single(request.headers, "Origin")
        if path in self.static or path.startswith(CHECKED):
            refusal = self.admission.refusal(_single(request.headers, "Host"), origin)
            if refusal is not None:
                return json_response(403, {"error": refusal})
        if self.token and path.startswith(PROTECTED) and not self._authorized(request, parts.query):
            return _response(
                401,
                orjson.dumps({"error": "missing or wrong bearer token"}),
                "application/json",
                (("WWW-Authenticate", 'Bearer realm="liqmon"'),),
            )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None if path == "/ws" and self.live is not None else _not_found(path)
        if path in self.static:
            body, content_type = self.static[path]
            return _response(200, body, content_type, (("Content-Security-Policy", PAGE_SECURITY),))
        if path.startswith("/api/") and self.api is not None:
            # An allow-listed origin's page may read the answer; for any other
            # cross-origin page the browser keeps it unreadable.
            shared = (
                (("Access-Control-Allow-Origin", origin or ""), ("Vary", "Origin"))
                if self.admission.cross_origin(origin)
                else ()
            )
            try:
                document = await self._api(self.api, path, _without_token(parts.query))
                status = 200
            except ApiError as error:
                status, document = error.status, {"error": error.message}
            except REDIS_DOWN as error:
                status, document = 503, {"error": f"redis unavailable: {error}"}
            return _response(status, orjson.dumps(document), "application/json", shared)
        return _not_found(path)

    def _authorized(self, request: Request, query: str) -> bool:
        """The bearer token from the Authorization header, or ``?token=`` (for the page)."""
        assert self.token is not None
        header = request.headers.get("Authorization", "")
        offered = header[7:] if header.startswith("Bearer ") else ""
        if not offered:
            offered = next(iter(parse_qs(query).get("token", [])), "")
        return hmac.compare_digest(offered.encode(), self.token.encode())

    async def _api(self, api: Api, path: str, query: str) -> dict[str, Any]:
        if path == "/api/positions":
            positions = parse_positions_query(query, api.symbols)
            listing = await api.positions(positions)
            return {
                "positions": listing.rows,
                "count": len(listing.rows),
                "limit": positions.limit,
                "complete": listing.complete,
            }
        if path.startswith("/api/positions/"):
            query_params(query, ())
            segment = path.removeprefix("/api/positions/")
            if not segment or "/" in segment:
                raise ApiError(404, f"no such path: {path}")
            return await api.position(unquote(segment))
        if path == "/api/events":
            events = await api.events(parse_events_query(query))
            return {"events": events, "count": len(events)}
        if path == "/api/symbols":
            query_params(query, ())
            return {"symbols": await api.symbols_state(), "positions": await api.counts()}
        raise ApiError(404, f"no such path: {path}")


def _without_token(query: str) -> str:
    """The query string minus ``token=`` (a credential, not an API parameter)."""
    pairs = [pair for pair in query.split("&") if pair and not pair.startswith("token=")]
    return "&".join(pairs)


CHECKED = ("/api/", "/ws")
"""Paths (besides the page's files) that carry the book: Host and Origin are checked."""

PROTECTED = ("/api/", "/ws", "/metrics")
"""Paths that carry data and need the bearer token when one is configured; the
health checks and the page's static files do not."""


def _single(headers: Headers, name: str) -> str | None:
    """A header's value; None when absent, and an impossible value when repeated (refused)."""
    values = headers.get_all(name)
    if len(values) > 1:
        return " ".join(values)
    return values[0] if values else None


def _not_found(path: str) -> Response:
    return json_response(404, {"error": f"no such path: {path}"})
