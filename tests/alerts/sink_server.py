"""A local HTTP server that stands in for the sinks: a webhook receiver, Slack's and
Telegram's APIs and PagerDuty's Events API, each made to fail at will.

Every request is recorded (path, headers, body, when). What the next requests
get is scripted per path: ``ok`` (the service's usual success), a status with
headers (``fail(500)``, ``fail(429, {"Retry-After": "1"})``), or a delay longer
than the client waits (``hang``). :meth:`SinkServer.stop` and
:meth:`SinkServer.start` take it away and bring it back on the same port.

Success answers follow the services' public documentation: Slack's incoming
webhook answers ``200 ok``; Telegram's ``sendMessage`` ``{"ok": true, "result":
...}``; PagerDuty's ``/v2/enqueue`` ``202 {"status": "success", "dedup_key": ...}``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float
    answered: int

    def json(self) -> Any:
        """The body decoded."""
        return orjson.loads(self.body)


@dataclass
class Step:
    """What one request gets: a status (None: the usual success), headers, a delay."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def fail(status: int, headers: dict[str, str] | None = None) -> Step:
    """A failure answer."""
    return Step(status, headers or {})


def hang(delay_s: float) -> Step:
    """An answer later than the client waits."""
    return Step(None, {}, delay_s)


class SinkServer:
    """The server; ``requests`` is every request received, in order."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.accepted: Counter[str] = Counter()
        """Idempotency keys answered with a success, and how often (kept as they come)."""
        self.script: dict[str, deque[Step]] = {}
        self.port = _free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def then(self, path: str, *steps: Step) -> None:
        """Script the next requests to ``path`` (a prefix: ``/hook``, ``/services``)."""
        self.script.setdefault(path, deque()).extend(steps)

    def to(self, prefix: str, status: int | None = None) -> list[Received]:
        """The requests to paths starting with ``prefix`` (answered ``status``, if given)."""
        return [
            r
            for r in self.requests
            if r.path.startswith(prefix) and (status is None or r.answered == status)
        ]

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        step = Step()
        for prefix, steps in self.script.items():
            if path.startswith(prefix) and steps:
                step = steps.popleft()
                break
        answer = self._answer(path, body, step)
        self.requests.append(
            Received(path, dict(request.headers), body, time.time(), answer.status_code)
        )
        if answer.status_code < 300:
            self.accepted[request.headers.get("idempotency-key", "")] += 1
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        return answer

    def _answer(self, path: str, body: bytes, step: Step) -> Response:
        if step.status is not None:
            return PlainTextResponse("scripted failure", step.status, step.headers)
        if path.startswith("/v2/enqueue"):
            dedup = orjson.loads(body).get("dedup_key")
            return JSONResponse(
                {"status": "success", "message": "Event processed", "dedup_key": dedup}, 202
            )
        if path.startswith("/bot"):
            return JSONResponse({"ok": True, "result": {"message_id": len(self.requests)}})
        if path.startswith("/services"):
            return PlainTextResponse("ok")
        return JSONResponse({"accepted": True})

    async def start(self) -> None:
        """Listen on :attr:`port` (the same one after a :meth:`stop`)."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=0,
        )
        self._server = uvicorn.Server(config)
        self._server.capture_signals = _no_signals  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Go away: the port refuses connections until :meth:`start`."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await self._task
            self._server = self._task = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _no_signals() -> Any:
    import contextlib

    return contextlib.nullcontext()
