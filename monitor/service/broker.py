"""The MQTT adapter: the monitor's persistent sessions, which read prices and
positions, and the connection that publishes events, all lean MQTT 3.1.1
clients from :mod:`monitor.bus.client`.

All connections live in one loop that follows aiomqtt's reconnection guide:
connect, back off on :class:`~monitor.bus.protocol.MqttError`; a failure of any
(keep-alive unanswered, a malformed packet, the broker gone) restarts all.
Each consuming session, a :class:`~monitor.bus.client.Subscriber`, is persistent
(``clean_session=False`` and a stable client id), so QoS 1 messages
addressed to the monitor while it was away are delivered when it returns;
it acknowledges a QoS 1 message only after the intake handled it, so a
message whose handling did not finish comes again. The monitor reads prices
as ``{client_id}`` and positions as ``{client_id}-positions``: a position
message is acknowledged only once its versions are stored, and ticks must
not wait behind that. A subscriber costs about a third of aiomqtt's CPU per
message received (``benchmarks/receive.py``).
Events go out through :class:`~monitor.bus.client.Publisher` (clean session: the
outbox is the durable store), driven by a :class:`~monitor.service.relay.Relay`.
A bus may hold either side alone: the monitor without its relay when
``liqmon publish`` runs beside it, that process with the relay only.

Two clients with one client id knock each other off the broker: each
CONNECT makes the broker close the other's connection, which reconnects at
once and does the same (two monitors with the default id: 73 times in
12 s, measured), and MQTT 3.1.1 gives no reason. The loop tells that apart
from a broker going away (after which reconnecting fails for a while) with
:class:`TakeoverWatch`, and says so in one error line.

aiomqtt remains for the tools around the daemon (:func:`make_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.bus.client import Publisher, Subscriber
from monitor.bus.protocol import ConnectionLost, MqttError, OnMessage
from monitor.config.model import MqttSettings
from monitor.core.errors import leaves
from monitor.service.backoff import Backoff
from monitor.service.relay import Relay
from monitor.telemetry.metrics import Metrics

log = structlog.get_logger("liqmon.bus")

TAKEN_OVER_WITHIN_S = 5.0
"""A connection the broker closes this soon after accepting it counts as taken over."""

TAKEOVERS = 3
"""Takeovers within :data:`TAKEOVER_WINDOW_S` that mean another client uses our id."""

TAKEOVER_WINDOW_S = 60.0


class TakeoverWatch:
    """Notices the broker handing our client id to another client, again and again.

    Pure (the caller passes the times): :meth:`closed` is told of every
    connection the broker closed, with how long it had been up, and answers
    True once, at the :data:`TAKEOVERS`-th close within
    :data:`TAKEOVER_WINDOW_S` that came within :data:`TAKEN_OVER_WITHIN_S`
    of the broker accepting the connection. A broker that restarts closes a
    connection too, but then refuses the next ones for a while: closes
    spread over minutes, or after long-lived connections, do not add up.
    """

    def __init__(
        self,
        takeovers: int = TAKEOVERS,
        window_s: float = TAKEOVER_WINDOW_S,
        within_s: float = TAKEN_OVER_WITHIN_S,
    ) -> None:
        self.takeovers = takeovers
        self.window_s = window_s
        self.within_s = within_s
        self.reported = False
        self._recent: deque[float] = deque(maxlen=takeovers)

    def taken_over(self, up_s: float) -> bool:
        """True if a connection closed by the broker after ``up_s`` looks taken over."""
        return up_s < self.within_s

    def closed(self, up_s: float, now_s: float) -> bool:
        """Record a close after ``up_s`` of connection at ``now_s``; True the one time it is
        the sign of a duplicate client id."""
        if not self.taken_over(up_s):
            return False
        self._recent.append(now_s)
        if self.reported or len(self._recent) < self.takeovers:
            return False
        if now_s - self._recent[0] > self.window_s:
            return False
        self.reported = True
        return True


@dataclass(frozen=True, slots=True)
class Session:
    """One persistent MQTT session the bus keeps: who it is, what it reads, who handles it.

    ``unsubscribe`` names filters an older configuration may have left in
    the session (see :meth:`~monitor.bus.client.Subscriber.connect`).
    """

    client_id: str
    topics: list[str]
    on_message: OnMessage
    unsubscribe: tuple[str, ...] = ()


class Bus:
    """Keeps the MQTT connections up: sessions in (Subscribers), outbox out (Relay).

    ``sessions`` are the persistent sessions to read (none: only publish);
    ``relay`` publishes the outbox as ``publisher_id`` (None: another
    process does). :attr:`connected` is set while all are up.
    Connections the broker took over (see :class:`TakeoverWatch`) are
    counted in ``metrics``.
    """

    def __init__(
        self,
        settings: MqttSettings,
        sessions: Sequence[Session],
        relay: Relay | None,
        publisher_id: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = list(sessions)
        self.relay = relay
        self.publisher_id = publisher_id
        self.metrics = metrics
        self.connected = asyncio.Event()
        self.takeovers = TakeoverWatch()

    async def run(self) -> None:
        """Connect, subscribe, consume and publish until cancelled. Cancelling is safe."""
        backoff = Backoff()
        while True:
            # (client id, connection) of what is open, and since when.
            opened: list[tuple[str, Subscriber | Publisher]] = []
            up_since: float | None = None
            try:
                async with contextlib.AsyncExitStack() as connections:
                    subscribers: list[tuple[Session, Subscriber]] = []
                    publisher = None
                    for session in self.sessions:
                        subscriber = await connections.enter_async_context(
                            Subscriber.connect(
                                self.settings,
                                session.client_id,
                                session.topics,
                                unsubscribe=session.unsubscribe,
                            )
                        )
                        subscribers.append((session, subscriber))
                        opened.append((session.client_id, subscriber))
                    if self.relay is not None:
                        publisher = await connections.enter_async_context(
                            Publisher.connect(self.settings, self.publisher_id)
                        )
                        opened.append((self.publisher_id, publisher))
                    up_since = time.monotonic()
                    self.connected.set()
                    log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
                    async with asyncio.TaskGroup() as group:
                        tasks: list[asyncio.Task[Any]] = []
                        for session, subscriber in subscribers:
                            tasks.append(
                                group.create_task(
                                    subscriber.run(session.on_message),
                                    name=f"mqtt-consume-{session.client_id}",
                                )
                            )
                        if publisher is not None and self.relay is not None:
                            tasks.append(
                                group.create_task(self.relay.run(publisher), name="outbox-publish")
                            )
                            # An idle publisher connection that broke ends
                            # readiness now, not at the next event.
                            tasks.append(
                                group.create_task(publisher.raise_when_lost(), name="outbox-watch")
                            )
                        # Waited for here, not at the group's exit: on Python
                        # 3.11 a task failing while the group waits at its exit
                        # leaves this task cancelled for good, and the loop
                        # reconnects after the failure in this same task.
                        await asyncio.wait(tasks)
            except* MqttError as errors:
                self.connected.clear()
                # The first failure, out of the task groups' nesting (the
                # relay's own group adds a level).
                error = next(leaves(errors))
                log.warning("mqtt_disconnected", error=str(error))
                if up_since is not None and isinstance(error, ConnectionLost):
                    self._closed_by_broker(error, opened, time.monotonic() - up_since)
            # Backing off starts over only after a connection that lasted: one the
            # broker closes at once (our id taken over again) keeps backing off.
            if up_since is not None and not self.takeovers.taken_over(time.monotonic() - up_since):
                backoff.reset()
            await backoff.wait()

    def _closed_by_broker(
        self,
        error: MqttError,
        opened: list[tuple[str, Subscriber | Publisher]],
        up_s: float,
    ) -> None:
        """An accepted connection was lost after ``up_s``: was it taken over?"""
        if self.metrics is not None and self.takeovers.taken_over(up_s):
            self.metrics.mqtt_takeovers.inc()
        if self.takeovers.closed(up_s, time.monotonic()):
            # The connection whose failure ended the session is the one taken over.
            client_id = next(
                (name for name, connection in opened if connection.failed is error),
                opened[0][0],
            )
            log.error(
                "mqtt_client_id_conflict",
                message=f"another MQTT client is using client_id {client_id}: "
                "give each monitor/publisher its own mqtt.client_id",
                client_id=client_id,
                takeovers=self.takeovers.takeovers,
                within_s=self.takeovers.window_s,
            )
