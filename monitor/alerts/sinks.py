"""The sinks: thin async adapters that make one delivery attempt each.

Every :meth:`Sink.send` returns when the sink accepted the item, or raises
:class:`Retryable` (a timeout, no connection, 408, 429, 5xx; with the
``Retry-After`` asked for, if any) or :class:`Refused` (any other answer:
retrying cannot help). What to do next is :mod:`monitor.alerts.route`'s.

* :class:`WebhookSink`: the event's JSON exactly as published, signed
  (:mod:`monitor.alerts.signing`), on httpx.
* :class:`PagerDutySink`: Events API v2 (:mod:`monitor.alerts.pagerduty`), on httpx.
* :class:`AppriseSink`: chat and e-mail through Apprise, whose calls block:
  they run in a worker thread (``asyncio.to_thread``). Apprise answers only
  True or False; the status in its log line (``error=400.``) tells a refusal
  from an outage, and an answer without one is retried. Chat services take
  no idempotency key: a message whose answer timed out may be shown twice.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import apprise
import httpx
import orjson

from monitor.alerts import pagerduty, signing, templates
from monitor.alerts.items import Item
from monitor.alerts.policy import Verdict, retry_after_s, verdict
from monitor.core.errors import ConfigError, RequestFailed, Unavailable


class Retryable(Unavailable):
    """Try again later: a timeout, no connection, or an answer that asks for it; the message
    says why (kept with a dead letter once the retention runs out)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Refused(RequestFailed):
    """The sink refused the item: retrying the same request cannot succeed (dead-lettered at
    once, with the message)."""


class Sink(Protocol):
    """One route's destination."""

    async def send(self, item: Item) -> None:
        """Deliver ``item`` once; raise :class:`Retryable` or :class:`Refused`."""

    async def aclose(self) -> None:
        """Release connections."""


def _answer(response: httpx.Response, now_s: float) -> None:
    """Raise for an answer that is not an acceptance (see :mod:`monitor.alerts.policy`)."""
    found = verdict(response.status_code)
    if found is Verdict.ACCEPTED:
        return
    text = response.text[:200].strip()
    message = f"HTTP {response.status_code}" + (f": {text}" if text else "")
    if found is Verdict.RETRY:
        raise Retryable(message, retry_after_s(response.headers.get("retry-after"), now_s))
    raise Refused(message)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    now: Callable[[], float],
) -> None:
    try:
        # httpx's timeout bounds each read and write; this bounds the whole attempt.
        async with asyncio.timeout(timeout_s):
            response = await client.post(url, content=body, headers=headers, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        raise Retryable(f"no answer within {timeout_s} s") from None
    except httpx.TransportError as error:
        raise Retryable(f"cannot reach the sink: {error!r}") from None
    _answer(response, now())


def http_client() -> httpx.AsyncClient:
    """The HTTP client of a forwarder: no redirects followed, no environment proxies."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


class WebhookSink:
    """A signed JSON POST of the event exactly as published (a summary: its document)."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout_s: float,
        client: httpx.AsyncClient,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.client = client
        self.now = now

    async def send(self, item: Item) -> None:
        """POST ``item.payload`` with ``Idempotency-Key`` and a fresh signature."""
        headers = signing.headers(self.secret, item.key, item.payload, self.now())
        await _post(self.client, self.url, item.payload, headers, self.timeout_s, self.now)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


class PagerDutySink:
    """Events API v2: trigger and resolve incidents by episode."""

    def __init__(
        self,
        url: str,
        routing_key: str,
        template: str | None,
        timeout_s: float,
        client: httpx.AsyncClient,
        source: str = "liqmon",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.routing_key = routing_key
        self.template = template
        self.timeout_s = timeout_s
        self.client = client
        self.source = source
        self.now = now

    async def send(self, item: Item) -> None:
        """POST the trigger or resolve document of ``item``."""
        summary = templates.render(self.template, item)
        body = orjson.dumps(pagerduty.document(self.routing_key, item, summary, self.source))
        headers = {"Content-Type": "application/json", "Idempotency-Key": item.key}
        await _post(self.client, self.url, body, headers, self.timeout_s, self.now)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


_STATUS = re.compile(r"error=(\d{3})\b")

PACING_ALLOWANCE_S = 10.0
"""Added to an Apprise route's deadline: Apprise paces the messages to one service
(seconds apart, for e-mail) inside the call."""


class AppriseSink:
    """Slack, Telegram, Discord, e-mail... by Apprise URL; blocking calls in a thread."""

    def __init__(self, url: str, template: str | None, title: str | None, timeout_s: float) -> None:
        self.notifier = apprise.Apprise()
        if not self.notifier.add(url):
            # Never the URL itself in the message: it carries the service's token.
            raise ConfigError("Apprise does not understand the route's URL")
        self.template = template
        self.title = title
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def _notify(self, title: str, body: str) -> tuple[bool, list[str]]:
        """Apprise's blocking call (in a worker thread), with what it logged."""
        logged: list[str] = []

        def keep(entry: Any, _plugin: Any) -> None:
            logged.append(str(entry.message))

        # One call at a time: a call abandoned by the deadline below still holds
        # the service's pacing, and the next must wait for it, not run beside it.
        with self._lock:
            ok = bool(self.notifier.notify(body=body, title=title, log_callback=keep, log_level=30))
        return ok, logged

    async def send(self, item: Item) -> None:
        """Notify; a failure is refused when Apprise logged a 4xx (but 408, 429)."""
        body = templates.render(self.template, item)
        title = templates.title(self.title, item)
        deadline_s = self.timeout_s + PACING_ALLOWANCE_S
        try:
            # The thread cannot be cancelled: the deadline abandons it (it
            # finishes on its own within the plugins' socket timeouts).
            async with asyncio.timeout(deadline_s):
                ok, logged = await asyncio.to_thread(self._notify, title, body)
        except TimeoutError:
            raise Retryable(f"Apprise did not return within {deadline_s} s") from None
        if ok:
            return
        last = logged[-1] if logged else "Apprise reported a failure"
        statuses = [int(found) for line in logged for found in _STATUS.findall(line)]
        if statuses and verdict(statuses[-1]) is Verdict.REFUSED:
            raise Refused(last[:300])
        raise Retryable(last[:300])

    async def aclose(self) -> None:
        """Nothing to release (Apprise opens a connection per notification)."""
