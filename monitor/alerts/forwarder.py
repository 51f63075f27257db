"""``liqmon alerts``: the forwarder process, one persistent MQTT session per route.

Each route reads the bus as client id ``{mqtt.client_id}-alerts-{name}-{route}``
with a persistent session (``clean_session=False``) subscribed at QoS 1 to the
topics of the types it takes, through :class:`monitor.bus.client.Subscriber`,
which acknowledges a message only after :meth:`RouteWorker.on_message` settled
it. The broker queues what arrives while the forwarder is away, restarting or
held back by a sink outage (the retention: ``persistent_client_expiration``
and ``max_queued_messages``, see the README); Redis records what each route
delivered, for the one window the broker cannot cover (the forwarder died
after the sink accepted, before the acknowledgement). Routes are independent:
a sink outage holds back its own route only.

``/healthz``, ``/readyz`` (Redis, and each route's session) and ``/metrics``
are served by the daemon's uvicorn adapter (:class:`monitor.web.http.HttpEndpoint`).
SIGTERM or Ctrl-C stops at once: a message being delivered is not
acknowledged and comes again at the next start, under the same key.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from feeds.ws import Backoff
from monitor.alerts import templates
from monitor.alerts.filters import topic_filters
from monitor.alerts.ledger import RouteLedger
from monitor.alerts.metrics import AlertMetrics
from monitor.alerts.route import RouteWorker
from monitor.alerts.sinks import AppriseSink, PagerDutySink, Sink, WebhookSink, http_client
from monitor.bus.client import Subscriber
from monitor.bus.protocol import MqttError
from monitor.config.model import PAGERDUTY_URL, AlertRoute, Settings
from monitor.core.errors import ConfigError
from monitor.core.wire import check_name
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.transport import REDIS_DOWN, Transport, connect
from monitor.telemetry.stopping import report_stuck_tasks
from monitor.web.http import HttpEndpoint

log = structlog.get_logger("liqmon.alerts")

READY_PING_S = 1.0
"""Deadline of the Redis ping behind ``/readyz``."""


@dataclass(frozen=True, slots=True)
class RouteSession:
    """What one route reads and who handles it."""

    worker: RouteWorker
    client_id: str
    topics: list[str]
    unsubscribe: list[str]


def _env(settings: Settings, route: AlertRoute, key: str, environ: Mapping[str, str]) -> str:
    """The secret the route's ``key`` (``secret_env``...) names, or a ConfigError."""
    variable = getattr(route, key)
    value = environ.get(variable, "")
    if not value:
        raise ConfigError(
            f"{settings.source}: alerts.routes.{route.name}.{key}: the environment variable "
            f"{variable} is not set"
        )
    return value


def make_sink(settings: Settings, route: AlertRoute, environ: Mapping[str, str]) -> Sink:
    """The sink of ``route``, its secrets read from ``environ``; ConfigError if one is missing."""
    if route.template is not None:
        problem = templates.check(route.template)
        if problem:
            raise ConfigError(f"{settings.source}: alerts.routes.{route.name}.template: {problem}")
    url = route.url if route.url_env is None else _env(settings, route, "url_env", environ)
    if route.type == "webhook":
        secret = _env(settings, route, "secret_env", environ).encode()
        return WebhookSink(str(url), secret, route.timeout_s, http_client())
    if route.type == "pagerduty":
        key = _env(settings, route, "routing_key_env", environ)
        return PagerDutySink(
            url or PAGERDUTY_URL, key, route.template, route.timeout_s, http_client()
        )
    try:
        return AppriseSink(str(url), route.template, route.title, route.timeout_s)
    except ConfigError as error:
        raise ConfigError(f"{settings.source}: alerts.routes.{route.name}: {error}") from None


class Forwarder:
    """One ``liqmon alerts --name NAME`` process: every configured route."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        http_port: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        check_name("--name", name)
        alerts = settings.alerts
        if not alerts.routes:
            raise ConfigError(f"{settings.source}: alerts.routes: no [[alerts.routes]] configured")
        self.settings = settings
        self.name = name
        self.metrics = AlertMetrics()
        environ = os.environ if environ is None else environ
        sinks = {route.name: make_sink(settings, route, environ) for route in alerts.routes}
        self.transport: Transport = connect(settings.redis)
        client = self.transport.client
        prefix = settings.mqtt.topic_prefix
        self.sessions: list[RouteSession] = []
        for route in alerts.routes:
            ledger = RouteLedger(
                client,
                settings.redis.key_prefix,
                route.name,
                alerts.delivered_ttl_s,
                alerts.dead_letter_maxlen,
            )
            worker = RouteWorker(route, sinks[route.name], ledger, self.metrics, alerts.retention_s)
            wanted, unwanted = topic_filters(prefix, route.types)
            client_id = f"{settings.mqtt.client_id}-alerts-{name}-{route.name}"
            self.sessions.append(RouteSession(worker, client_id, wanted, unwanted))
        port = alerts.http_port if http_port is None else http_port
        self.http = HttpEndpoint(
            settings.http.host, port, self.metrics, self.failing, token=settings.http.token
        )
        self.connected: set[str] = set()
        self.stopping = asyncio.Event()

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM and SIGINT into a stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def run(self) -> None:
        """Serve every route until :attr:`stopping` is set (or cancelled: safe).

        Raises ``OSError`` when the HTTP port is taken.
        """
        log.info(
            "alerts_starting",
            name=self.name,
            config=self.settings.source,
            routes=[session.worker.route.name for session in self.sessions],
        )
        tasks: list[asyncio.Task[None]] = []
        watchdog: asyncio.Task[None] | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks.append(group.create_task(self.http.run(), name="http"))
                for session in self.sessions:
                    route = session.worker.route.name
                    tasks.append(group.create_task(self._consume(session), name=f"route-{route}"))
                    tasks.append(
                        group.create_task(session.worker.run_folds(), name=f"folds-{route}")
                    )
                await self.stopping.wait()
                log.info("alerts_stopping", name=self.name)
                for task in tasks:
                    task.cancel()
                watchdog = asyncio.create_task(report_stuck_tasks(), name="stop-watchdog")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            for session in self.sessions:
                await session.worker.sink.aclose()
            await self.transport.client.aclose()
        log.info("alerts_stopped", name=self.name)

    async def _consume(self, session: RouteSession) -> None:
        """Keep the route's persistent session and hand its messages over; reconnect."""
        route = session.worker.route.name
        gauge = self.metrics.connected.labels(route)
        delays = Backoff(base_s=0.1, max_s=5.0).delays()
        while True:
            raise_if_cancelling()
            try:
                async with Subscriber.connect(
                    self.settings.mqtt,
                    session.client_id,
                    session.topics,
                    unsubscribe=session.unsubscribe,
                ) as subscriber:
                    self.connected.add(route)
                    gauge.set(1)
                    delays = Backoff(base_s=0.1, max_s=5.0).delays()
                    await subscriber.run(session.worker.on_message)
            except MqttError as error:
                log.warning("alerts_mqtt_disconnected", route=route, error=str(error))
            finally:
                self.connected.discard(route)
                gauge.set(0)
            await asyncio.sleep(next(delays))

    async def failing(self) -> dict[str, str]:
        """What is not usable now: Redis, and each route whose session is not connected."""
        failing: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_PING_S):
                await self.transport.client.ping()
        except (*REDIS_DOWN, TimeoutError) as error:
            failing["redis"] = str(error) or type(error).__name__
        for session in self.sessions:
            route = session.worker.route.name
            if route not in self.connected:
                failing[f"mqtt:{route}"] = "not connected"
        return failing


async def retry_route(
    settings: Settings, route_name: str, environ: Mapping[str, str] | None = None
) -> tuple[int, list[str]]:
    """``liqmon alerts retry ROUTE``: its dead letters sent again (see
    :meth:`RouteWorker.retry_dead_letters`). Raises ConfigError for an unknown route."""
    route = settings.alerts.route(route_name)
    if route is None:
        known = ", ".join(r.name for r in settings.alerts.routes) or "none"
        raise ConfigError(
            f"{settings.source}: alerts.routes: no route {route_name!r} (configured: {known})"
        )
    sink = make_sink(settings, route, os.environ if environ is None else environ)
    transport = connect(settings.redis)
    alerts = settings.alerts
    ledger = RouteLedger(
        transport.client,
        settings.redis.key_prefix,
        route.name,
        alerts.delivered_ttl_s,
        alerts.dead_letter_maxlen,
    )
    worker = RouteWorker(route, sink, ledger, AlertMetrics(), alerts.retention_s)
    try:
        return await worker.retry_dead_letters()
    finally:
        await sink.aclose()
        await transport.client.aclose()
