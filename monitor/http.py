"""The HTTP endpoint: health, readiness and metrics, served by ``websockets``.

``websockets`` answers plain HTTP requests from ``process_request`` on the
same port as its websocket endpoint, so the dashboard's live feed can later
share this port without another server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from monitor.metrics import Metrics

Checks = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of failing dependency → reason (empty when ready)."""


def _response(status: int, body: bytes, content_type: str) -> Response:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status, reason, headers, body)


def json_response(status: int, document: object) -> Response:
    """A JSON response."""
    return _response(status, orjson.dumps(document), "application/json")


class HttpEndpoint:
    """``/healthz`` (the process is up), ``/readyz`` (Redis and MQTT usable), ``/metrics``."""

    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Checks) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.readiness = readiness
        self.bound_port: int | None = None

    async def run(self) -> None:
        """Serve until cancelled. Cancelling is safe."""
        async with serve(
            self._reject_websocket, self.host, self.port, process_request=self._route
        ) as server:
            self.bound_port = server.sockets[0].getsockname()[1] if server.sockets else self.port
            await server.serve_forever()

    async def _reject_websocket(self, connection: ServerConnection) -> None:
        await connection.close(1008, "no websocket endpoint here yet")

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            failing = await self.readiness()
            if failing:
                return json_response(503, {"status": "not ready", "failing": failing})
            return json_response(200, {"status": "ready"})
        if path == "/metrics":
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        return json_response(404, {"error": f"no such path: {path}"})
