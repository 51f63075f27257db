"""The aiomqtt client the tools use (watch, replay, the demo, the benchmarks).

The daemon keeps its own measured MQTT 3.1.1 client (:mod:`monitor.bus.client`);
the tools, which need no such budget, use the maintained library.
"""

from __future__ import annotations

import aiomqtt

from monitor.bus.client import tls_context
from monitor.config.model import MqttSettings


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
