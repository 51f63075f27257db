"""Fixtures of the alert forwarder's tests: the sink server, a forwarder in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from harness import settings_for, until
from sink_server import SinkServer

from monitor.alerts.forwarder import Forwarder
from monitor.bus.client import Publisher
from monitor.config.model import AlertRoute, AlertsSettings, Settings


@pytest.fixture
async def sinks() -> AsyncIterator[SinkServer]:
    """The local stand-in for every HTTP sink, started."""
    server = SinkServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def alert_settings(
    redis_url: str, mqtt_url: str, prefix: str, *routes: AlertRoute, **alerts: Any
) -> Settings:
    """The example configuration pointed at the test servers, with ``routes``."""
    return settings_for(
        redis_url, mqtt_url, prefix, alerts=AlertsSettings(routes=routes, http_port=0, **alerts)
    )


@contextlib.asynccontextmanager
async def forwarding(
    settings: Settings, environ: Mapping[str, str], name: str = "test"
) -> AsyncIterator[Forwarder]:
    """A forwarder running in this process, every route's session connected."""
    forwarder = Forwarder(settings, name, 0, environ)
    task = asyncio.create_task(forwarder.run(), name="forwarder")
    try:
        await until(lambda: len(forwarder.connected) == len(forwarder.sessions) or task.done())
        if task.done():
            task.result()
        yield forwarder
    finally:
        forwarder.stopping.set()
        await asyncio.wait_for(task, 10)


async def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``messages`` at QoS 1, as liqmon's relay does."""
    async with Publisher.connect(settings.mqtt, f"{settings.mqtt.client_id}-test-pub") as publisher:
        await publisher.publish_batch(messages)


def with_routes(settings: Settings, *routes: AlertRoute) -> Settings:
    """``settings`` with other routes."""
    return replace(settings, alerts=replace(settings.alerts, routes=routes))
