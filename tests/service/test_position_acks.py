"""Position versions are acknowledged to the broker only once stored: real Redis and Mosquitto."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import btc_long, crash, mqtt_client, publish, running, settings_for, stored_positions

from monitor.service.daemon import Daemon

VERSIONS = 20


async def until_failing(daemon: Daemon, dependency: str) -> None:
    """Wait until the daemon reports ``dependency`` as failing."""
    async with asyncio.timeout(15):
        while dependency not in await daemon.failing():
            await asyncio.sleep(0.02)


async def until_taken(daemon: Daemon) -> None:
    """Wait until the daemon is applying position versions (it took a message)."""
    async with asyncio.timeout(15):
        while not daemon.positions_in_flight:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("stop", ["sigterm", "crash"])
async def test_versions_taken_while_redis_is_down_survive_the_monitor_stopping(
    fresh_redis: Any, mqtt_url: str, prefix: str, stop: str
) -> None:
    """Redis is down, 20 versions reach the monitor, the monitor stops (SIGTERM's path, or a
    crash): once Redis and a monitor are back, all 20 are stored, since none was acknowledged
    to the broker before it was."""
    server = fresh_redis(appendonly=True)
    settings = settings_for(server.url, mqtt_url, prefix)
    async with running(settings, drain_timeout_s=1.0) as daemon:
        server.stop()
        await until_failing(daemon, "redis")
        async with mqtt_client(mqtt_url, "feeder") as feeder:
            for n in range(VERSIONS):
                await publish(feeder, f"{prefix}/positions", btc_long(f"p-{n}"))
        await until_taken(daemon)
        if stop == "crash":
            await crash(daemon)
    server.start()
    async with running(settings) as daemon:
        await stored_positions(daemon, "BTCUSDT", VERSIONS)
        stored = await daemon.store.client.hlen(daemon.store.keys.positions("BTCUSDT"))
    assert VERSIONS == stored


async def test_a_rolling_restart_in_the_middle_of_a_load_loses_no_version(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """100 messages of 500 versions are on their way when the monitor is stopped (SIGTERM's
    path, with a short drain): its successor stores every one of the 50,000; none was
    acknowledged unstored."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    messages = [[btc_long(f"p-{m}-{n}") for n in range(500)] for m in range(100)]
    async with running(settings, drain_timeout_s=0.1) as daemon:
        async with mqtt_client(mqtt_url, "feeder") as feeder:
            for message in messages:
                await publish(feeder, f"{prefix}/positions", message)
        key = daemon.store.keys.positions("BTCUSDT")
        async with asyncio.timeout(15):
            while not await daemon.store.client.hlen(key):
                await asyncio.sleep(0.01)
        stopped_at = await daemon.store.client.hlen(key)
    async with running(settings) as daemon:
        await stored_positions(daemon, "BTCUSDT", 50_000, timeout=60)
        stored = await daemon.store.client.hlen(key)
    assert stopped_at < 50_000, "the stop must land mid-load"
    assert 50_000 == stored
