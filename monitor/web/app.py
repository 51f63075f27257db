"""The HTTP application: health, metrics, the JSON API, the dashboard and its live feed.

=====================================  ==============================================
``GET /healthz``                       the process is up
``GET /readyz``                        200 when ready, else 503 with what is failing
``GET /metrics``                       Prometheus text format
``GET /api/positions``                 closest to liquidation first (:mod:`monitor.web.api`)
``GET /api/positions/{id}``            one position (404 when unknown)
``GET /api/events``                    recent published events and alerts
``GET /api/symbols``                   prices, feed age and guard state per symbol
``GET /api/stress``                    what liquidates at a price or move (:mod:`.stress`)
``GET /api/liquidation-map``           open positions by liquidation price, in buckets
``GET /openapi.json``                  this table as an OpenAPI document
``GET /``                              the dashboard (static files in ``dashboard/``)
``/ws``                                the dashboard's live feed (:mod:`monitor.web.live`)
=====================================  ==============================================

Two layers. :class:`Edge`, in front, decides what may reach a route at all:
the page, ``/api/*`` and ``/ws`` answer only requests that name this server
and come from its own page or an allow-listed origin (else a 403 says why,
:mod:`monitor.core.origins`); with a token configured, ``/api/*``, ``/ws`` and
``/metrics`` need it (else a 401); every answer carries the security headers.
Behind it, FastAPI routes the request and types the query parameters.

Every error is ``{"error": "..."}``: a bad query parameter a 400 (never
FastAPI's 422), an unknown id or path a 404, a wrong method a 405 with
``Allow``, Redis unavailable a 503. Answers are encoded with orjson, from the
same dicts ``liqmon positions`` prints; :mod:`monitor.web.schema` describes them.
"""

import hmac
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from importlib import resources
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qs, unquote, urlencode

import orjson
from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from monitor import __version__
from monitor.core.origins import Admission
from monitor.core.status import Status
from monitor.state.readmodel import REDIS_DOWN
from monitor.telemetry.metrics import render_in_turns
from monitor.web import schema
from monitor.web.api import (
    DEFAULT_EVENTS,
    DEFAULT_LIMIT,
    EVENT_TYPES,
    MAX_ACCOUNT_LENGTH,
    MAX_LIMIT,
    Api,
    ApiError,
    EventsQuery,
    check_account,
    check_event_type,
    check_symbol,
    parse_bool,
    parse_limit,
    parse_status,
    positions_query,
    query_params,
)
from monitor.web.live import LiveFeed, PageClosed
from monitor.web.stress import map_document, parse_price, stress_documents, stress_query

Checks = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of failing dependency → reason (empty when ready)."""


class Exposition(Protocol):
    """What ``/metrics`` renders: the daemon's :mod:`~monitor.telemetry.metrics`, or
    another process's (``liqmon alerts``)."""

    @property
    def registry(self) -> CollectorRegistry:
        """The metrics, rendered in the Prometheus text exposition format."""
        ...


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

CHECKED = ("/api/", "/ws")
"""Paths (besides the page's files) that carry the book: Host and Origin are checked."""

PROTECTED = ("/api/", "/ws", "/metrics")
"""Paths that carry data and need the bearer token when one is configured; the
health checks, the page's static files and the API's description do not."""

SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))
"""On every answer: no content sniffing, and nothing about the book kept in a cache."""

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JsonResponse(Response):
    """A JSON answer encoded with orjson (``Content-Type: application/json``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """``content`` as compact JSON."""
        return orjson.dumps(content)


class MetricsResponse(Response):
    """The Prometheus text exposition format."""

    media_type = METRICS_TYPE


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JsonResponse:
    """The error document every failure answers with."""
    return JsonResponse({"error": message}, status, headers)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The dashboard's files by path, with their content types."""
    folder = resources.files("monitor.web").joinpath("dashboard")
    return {
        path: (folder.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in STATIC.items()
    }


# -- the edge: what may reach a route at all ----------------------------------


class Edge:
    """Host and Origin admission, the token, and the security headers, in front of ``app``.

    These apply by path prefix, to paths no route serves too (an unknown
    ``/api/x`` from a foreign page is a 403, not a 404), so they sit in front
    of the router rather than in route dependencies.
    """

    def __init__(
        self, app: ASGIApp, admission: Admission, token: str | None, pages: bool, live: bool
    ) -> None:
        self.app = app
        self.admission = admission
        self.token = token
        self.pages = pages
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or pass on one request (or websocket handshake)."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, _headed(send, ()))
            return
        origin = _single(scope, b"origin")
        shared: tuple[tuple[bytes, bytes], ...] = ()
        if self.pages and scope["path"].startswith("/api/") and self.admission.cross_origin(origin):
            # An allow-listed origin's page may read the answer; for any other
            # cross-origin page the browser keeps it unreadable.
            shared = (
                (b"access-control-allow-origin", (origin or "").encode()),
                (b"vary", b"Origin"),
            )
        await self.app(scope, receive, _headed(send, shared))

    def _refusal(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if (self.pages and path in STATIC) or path.startswith(CHECKED):
            refused = self.admission.refusal(_single(scope, b"host"), _single(scope, b"origin"))
            if refused is not None:
                return error(403, refused)
        if self.token and path.startswith(PROTECTED) and not self._authorized(scope):
            return error(
                401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="liqmon"'}
            )
        if scope["type"] == "websocket" and not (self.live and path == "/ws"):
            return not_found(scope)
        return None

    def _authorized(self, scope: Scope) -> bool:
        """The bearer token from the Authorization header, or ``?token=`` (for the page)."""
        assert self.token is not None
        header = _single(scope, b"authorization") or ""
        offered = header[7:] if header.startswith("Bearer ") else ""
        if not offered:
            query = scope.get("query_string", b"").decode("latin-1")
            offered = next(iter(parse_qs(query).get("token", [])), "")
        return hmac.compare_digest(offered.encode(), self.token.encode())


def _headed(send: Send, extra: Iterable[tuple[bytes, bytes]]) -> Send:
    """``send`` adding the security headers (and ``extra``) to the answer's head."""
    added = [*SECURITY_HEADERS, *extra]

    async def sending(message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            present = {name.lower() for name, _ in message.get("headers", [])}
            headers = [*message.get("headers", []), *(h for h in added if h[0] not in present)]
            message = {**message, "headers": [(_cased(name), value) for name, value in headers]}
        await send(message)

    return sending


def _cased(name: bytes) -> bytes:
    """A header name in its usual spelling (``Content-Type``): the case means nothing to
    HTTP, but clients that compare it exactly saw it so before."""
    lowered = name.lower()
    return b"WWW-Authenticate" if lowered == b"www-authenticate" else lowered.title()


def _single(scope: Scope, name: bytes) -> str | None:
    """A header's value; None when absent, and an impossible value when repeated (refused)."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]
    if len(values) > 1:
        return " ".join(values)
    return values[0] if values else None


def raw_path(scope: Scope) -> str:
    """The path as the client sent it (percent-escapes kept), for error messages."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


def not_found(scope: Scope) -> JsonResponse:
    """The 404 of a path nothing serves."""
    return error(404, f"no such path: {raw_path(scope)}")


# -- query strings ------------------------------------------------------------


class StrictQuery(APIRoute):
    """An API route whose query string is read as liqmon always has: an unknown, repeated
    or malformed parameter is a 400, an empty value counts as not given, and ``token``
    (a credential, checked by :class:`Edge`) is no parameter. What remains is typed
    and validated by FastAPI from the route's declared parameters."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, behind the strict reading of the query string."""
        handler = super().get_route_handler()
        allowed = tuple(field.alias for field in self.dependant.query_params)

        async def strict(request: Request) -> Response:
            query = _without_token(request.scope.get("query_string", b"").decode("latin-1"))
            params = query_params(query, allowed)
            scope = {**request.scope, "query_string": urlencode(params).encode()}
            return await handler(Request(scope, request.receive))

        return strict


def _without_token(query: str) -> str:
    """The query string minus ``token=`` (a credential, not an API parameter)."""
    return "&".join(pair for pair in query.split("&") if pair and not pair.startswith("token="))


def _checked(check: Callable[[str], Any]) -> BeforeValidator:
    """A pydantic validator from one of :mod:`monitor.web.api`'s parameter checks: its
    message becomes the 400's (see :func:`_invalid`)."""

    def validate(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return check(value)
        except ApiError as refused:
            raise ValueError(refused.message) from None

    return BeforeValidator(validate)


def _limit(value: str) -> int:
    return parse_limit(value, DEFAULT_LIMIT)


def _at_risk(value: str) -> bool:
    return parse_bool("at_risk", value)


async def _invalid(request: Request, exc: Exception) -> Response:
    """A query parameter FastAPI refused: a 400 with the first one's message, as before."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ValueError):
        return error(400, str(cause))
    where = ".".join(str(part) for part in first.get("loc", ())[1:])
    return error(400, f"{where}: {first.get('msg', 'invalid')}")


# -- the application ----------------------------------------------------------


class PageSocket:
    """A dashboard's websocket (Starlette's) as the live feed's
    :class:`~monitor.web.live.Connection`."""

    def __init__(self, socket: WebSocket) -> None:
        self.socket = socket

    async def send(self, text: str) -> None:
        """Send one text frame."""
        try:
            await self.socket.send_text(text)
        except (WebSocketDisconnect, WebSocketDisconnected) as gone:
            raise PageClosed from gone

    async def receive(self) -> str | bytes:
        """The page's next frame."""
        message = await self.socket.receive()
        if message["type"] == "websocket.disconnect":
            raise PageClosed
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")


DESCRIPTION = (
    'Read-only. Every error is a JSON document `{"error": "..."}`: a bad query '
    "parameter is a 400, an unknown id or path a 404, a wrong method a 405, Redis "
    "unavailable a 503. `/api/*` answers only requests that name this server and come "
    "from its own page or an allow-listed origin (else a 403)."
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schema.Error, "description": "A query parameter is unknown or invalid"},
    403: {"model": schema.Error, "description": "Host or Origin not allowed"},
    503: {
        "model": schema.Error,
        "description": (
            "Redis unavailable (or, for a stress or a map, the symbol's liquidation book "
            "still being filed)"
        ),
    },
}


def build(
    metrics: Exposition,
    readiness: Checks,
    api: Api | None = None,
    live: LiveFeed | None = None,
    token: str | None = None,
    admission: Admission | None = None,
) -> tuple[FastAPI, Edge]:
    """The FastAPI application and the :class:`Edge` in front of it (what to serve).

    Without ``api`` only the health checks and ``/metrics`` are served (``liqmon publish``).
    """
    app = FastAPI(
        title="liqmon",
        version=__version__,
        summary="Positions closest to liquidation, events and feed state of one liqmon monitor",
        docs_url=None,  # the docs UIs load their scripts from a CDN: not under this CSP
        redoc_url=None,
        redirect_slashes=False,
        generate_unique_id_function=lambda route: route.name,
    )

    @app.get("/healthz", tags=["probes"], responses={200: {"model": schema.Health}})
    async def healthz() -> Response:
        """The process is up."""
        return JsonResponse({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["probes"],
        responses={200: {"model": schema.Ready}, 503: {"model": schema.NotReady}},
    )
    async def readyz() -> Response:
        """Ready to monitor; else a 503 names each failing dependency."""
        failing = await readiness()
        if failing:
            return JsonResponse({"status": "not ready", "failing": failing}, 503)
        return JsonResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["probes"],
        response_class=MetricsResponse,
        responses={200: {"content": {METRICS_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        if live is not None:
            # liqmon_positions is counted when scraped, not on a timer.
            await live.refresh_counts()
        return MetricsResponse(await render_in_turns(metrics.registry))

    if api is not None:
        _add_api_routes(app, api)
        for path, (body, content_type) in load_static().items():
            app.add_api_route(
                path, _static(body, content_type), methods=["GET"], include_in_schema=False
            )
    if live is not None:

        @app.websocket("/ws")
        async def feed(socket: WebSocket) -> None:
            await socket.accept()
            await live.serve(PageSocket(socket))

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error(exc.status, exc.message)

    async def redis_down(request: Request, exc: Exception) -> Response:
        return error(503, f"redis unavailable: {exc}")

    async def crashed(request: Request, exc: Exception) -> Response:
        return error(500, "internal error; see the monitor's log")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return not_found(request.scope)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} not allowed on {raw_path(request.scope)}"
            return error(405, f"{message} (allowed: {allowed})", exc.headers)
        return error(exc.status_code, str(exc.detail), exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, http_error)
    for kind in REDIS_DOWN:
        app.add_exception_handler(kind, redis_down)
    app.add_exception_handler(Exception, crashed)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
            )
            app.openapi_schema = tidy(document, token is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    edge = Edge(
        app,
        admission or Admission.build("127.0.0.1", (), ()),
        token,
        pages=api is not None,
        live=live is not None,
    )
    return app, edge


def _static(body: bytes, content_type: str) -> Callable[[], Awaitable[Response]]:
    async def page() -> Response:
        return Response(
            body, media_type=content_type, headers={"Content-Security-Policy": PAGE_SECURITY}
        )

    return page


Endpoint = Callable[..., Awaitable[Response]]


def _add_api_routes(app: FastAPI, api: Api) -> None:
    """``/api/*``: typed, strictly read query parameters over :class:`Api`'s reads."""

    def get(path: str, answer: type[schema.Document], *more: int) -> Callable[[Endpoint], Endpoint]:
        """Register a GET route answering ``answer`` (and errors, ``more`` of them too)."""
        responses = {**ERRORS, 200: {"model": answer}}
        responses.update({status: {"model": schema.Error} for status in more})

        def add(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(
                path,
                endpoint,
                methods=["GET"],
                tags=["api"],
                responses=responses,
                route_class_override=StrictQuery,
            )
            return endpoint

        return add

    @get("/api/positions", schema.PositionsPage)
    async def positions(
        symbol: Annotated[
            str | None,
            _checked(lambda value: check_symbol(value, api.symbols)),
            Query(description="Only this symbol", json_schema_extra={"enum": api.symbols}),
        ] = None,
        account: Annotated[
            str | None,
            _checked(check_account),
            Query(description="Only this account", max_length=MAX_ACCOUNT_LENGTH),
        ] = None,
        status: Annotated[
            Status | None,
            _checked(parse_status),
            Query(description="Only this status (default: healthy and margin_call)"),
        ] = None,
        at_risk: Annotated[
            bool,
            _checked(_at_risk),
            Query(description="Only positions in margin call (excludes `status`)"),
        ] = False,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="How many"), _checked(_limit)
        ] = DEFAULT_LIMIT,
    ) -> Response:
        """The ``limit`` positions closest to liquidation that match the filters."""
        query = positions_query(
            api.symbols, symbol=symbol, account=account, status=status, at_risk=at_risk, limit=limit
        )
        listing = await api.positions(query)
        return JsonResponse(listing.document(query.limit))

    @get("/api/positions/{position_id:path}", schema.PositionRow, 404)
    async def position(request: Request, position_id: str) -> Response:
        """One position with its prices and live state."""
        # From the path as sent: an id may hold an escaped "/", never a real one.
        segment = raw_path(request.scope).removeprefix("/api/positions/")
        if not segment or "/" in segment:
            return not_found(request.scope)
        return JsonResponse(await api.position(unquote(segment)))

    @get("/api/events", schema.EventsPage)
    async def events(
        limit: Annotated[
            int,
            Query(ge=1, le=MAX_LIMIT, description="How many"),
            _checked(lambda value: parse_limit(value, DEFAULT_EVENTS)),
        ] = DEFAULT_EVENTS,
        type: Annotated[
            str | None,
            _checked(check_event_type),
            Query(description="Only this type", json_schema_extra={"enum": sorted(EVENT_TYPES)}),
        ] = None,
    ) -> Response:
        """The most recent published events and alerts, newest first."""
        found = await api.events(EventsQuery(limit, type))
        return JsonResponse({"events": found, "count": len(found)})

    @get("/api/symbols", schema.SymbolsPage)
    async def symbols() -> Response:
        """Per symbol: stored prices, the feed's state, and positions by status."""
        return JsonResponse({"symbols": await api.symbols_state(), "positions": await api.counts()})

    _add_stress_routes(api, get)


DECIMAL = r"^[0-9]{1,28}(\.[0-9]{1,28})?$"
"""A positive decimal as the stress and map parameters accept it (no exponent)."""
MOVE = r"^-?[0-9]{1,28}(\.[0-9]{1,28})?$"


def _add_stress_routes(api: Api, get: Callable[..., Callable[[Endpoint], Endpoint]]) -> None:
    """``/api/stress`` and ``/api/liquidation-map`` (:mod:`monitor.web.stress`)."""

    @get("/api/stress", schema.StressPage, 409)
    async def stress(
        symbol: Annotated[
            str | None,
            Query(
                description="A symbol; with a move, several separated by commas "
                "(default: every symbol)",
                max_length=1000,
            ),
        ] = None,
        price: Annotated[
            str | None,
            Query(description="The price to stress at (one symbol)", pattern=DECIMAL),
        ] = None,
        move: Annotated[
            str | None,
            Query(
                description="Instead of a price: the move from each mark (-0.1: 10 % down), "
                "above -1 and at most 10",
                pattern=MOVE,
            ),
        ] = None,
    ) -> Response:
        """What liquidates, what is called and what it costs if the mark goes to a price."""
        query = stress_query(api.symbols, symbol, price, move)
        return JsonResponse({"stress": await stress_documents(api, query)})

    @get("/api/liquidation-map", schema.LiquidationMap)
    async def liquidation_map(
        symbol: Annotated[
            str,
            _checked(lambda value: check_symbol(value, api.symbols)),
            Query(description="The symbol", json_schema_extra={"enum": api.symbols}),
        ],
        low: Annotated[str, Query(description="The lowest price mapped", pattern=DECIMAL)],
        high: Annotated[str, Query(description="The end of the range (excluded)", pattern=DECIMAL)],
        step: Annotated[
            str, Query(description="The width of a bucket (at most 2000 buckets)", pattern=DECIMAL)
        ],
    ) -> Response:
        """Open positions by liquidation price in buckets ``[low, high)``, with the
        cumulative notional outwards from the mark."""
        document = await map_document(
            api,
            symbol,
            parse_price("low", low),
            parse_price("high", high),
            parse_price("step", step),
        )
        return JsonResponse(document)


def tidy(document: dict[str, Any], token: bool) -> dict[str, Any]:
    """The generated OpenAPI document as liqmon answers: no 422 (a bad parameter is a 400),
    optional query parameters without a null branch (absent or empty is how to say none),
    and, with a token, the bearer scheme on the paths that need it."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if token:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "token": {"type": "apiKey", "in": "query", "name": "token"},
        }
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter.get("schema", {}))
                if parameter["in"] == "query":
                    # `?symbol=` is no filter (StrictQuery), as the dashboard sends it.
                    parameter["allowEmptyValue"] = True
            if token and path.startswith(PROTECTED):
                operation["security"] = [{"bearer": []}, {"token": []}]
                operation["responses"]["401"] = {
                    "description": "Missing or wrong bearer token",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
    return document


def _without_null(parameter: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` as ``X`` (keeping the title, description and enum)."""
    branches = parameter.get("anyOf")
    if not isinstance(branches, list):
        return parameter
    kept = [branch for branch in branches if branch != {"type": "null"}]
    if len(kept) != 1:
        return parameter
    merged = {key: value for key, value in parameter.items() if key != "anyOf"}
    return {**kept[0], **merged}
