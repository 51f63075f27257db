"""The MQTT adapter: the monitor's persistent session, which reads prices and
positions, and the connection that publishes events, both lean MQTT 3.1.1
clients from :mod:`monitor.mqtt`.

Both connections live in one loop that follows aiomqtt's reconnection guide:
connect, back off on :class:`~monitor.mqtt.MqttError`; a failure of either
(keep-alive unanswered, a malformed packet, the broker gone) restarts both.
The consuming session, :class:`~monitor.mqtt.Subscriber`, is persistent
(``clean_session=False`` and a stable client id), so QoS 1 messages
addressed to the monitor while it was away are delivered when it returns;
it acknowledges a QoS 1 message only after the intake handled it, so a
message whose handling did not finish comes again. It costs about a third
of aiomqtt's CPU per message received (``benchmarks/receive.py``).
Events go out through :class:`~monitor.mqtt.Publisher` (clean session: the
outbox is the durable store), driven by a :class:`~monitor.relay.Relay`.
A bus may hold either side alone: the monitor without its relay when
``liqmon publish`` runs beside it, that process with the relay only.

aiomqtt remains for the tools around the daemon (:func:`make_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiomqtt
import structlog

from monitor.backoff import Backoff
from monitor.config import MqttSettings
from monitor.mqtt import MqttError, OnMessage, Publisher, Subscriber, tls_context
from monitor.relay import Relay

log = structlog.get_logger("liqmon.bus")


def make_client(settings: MqttSettings, identifier: str, *, persistent: bool) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker (TLS and credentials from the settings)."""
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=identifier,
        clean_session=not persistent,
        tls_context=tls_context(settings),
        max_inflight_messages=settings.max_inflight,
        max_queued_outgoing_messages=0,
        keepalive=30,
        timeout=10,
    )


class Bus:
    """Keeps the MQTT connections up: subscriptions in (Subscriber), outbox out (Relay).

    ``intake`` is the persistent session's subscriptions and handler (None:
    no session); ``relay`` publishes the outbox as ``publisher_id`` (None:
    another process does). :attr:`connected` is set while all are up.
    """

    def __init__(
        self,
        settings: MqttSettings,
        intake: tuple[list[str], OnMessage] | None,
        relay: Relay | None,
        publisher_id: str,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.relay = relay
        self.publisher_id = publisher_id
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Connect, subscribe, consume and publish until cancelled. Cancelling is safe."""
        backoff = Backoff()
        while True:
            try:
                async with contextlib.AsyncExitStack() as connections:
                    subscriber = publisher = None
                    if self.intake is not None:
                        subscriber = await connections.enter_async_context(
                            Subscriber.connect(
                                self.settings, self.settings.client_id, self.intake[0]
                            )
                        )
                    if self.relay is not None:
                        publisher = await connections.enter_async_context(
                            Publisher.connect(self.settings, self.publisher_id)
                        )
                    self.connected.set()
                    backoff.reset()
                    log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
                    async with asyncio.TaskGroup() as group:
                        tasks: list[asyncio.Task[Any]] = []
                        if subscriber is not None and self.intake is not None:
                            tasks.append(
                                group.create_task(
                                    subscriber.run(self.intake[1]), name="mqtt-consume"
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
                log.warning("mqtt_disconnected", error=str(errors.exceptions[0]))
            await backoff.wait()
