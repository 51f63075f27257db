"""Symbol leases: monitors split the symbols, and one takes over when another dies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from harness import (
    Collector,
    crash,
    half_btc_long,
    mqtt_client,
    publish,
    redis_url_of,
    running,
    settings_for,
    stored_positions,
)

from monitor.config.model import RedisSettings, Settings
from monitor.state.keys import Keys
from monitor.state.leases import Leases, fair_share, preference
from monitor.state.transport import Transport, connect

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSD", "ETHUSD"]


def test_fair_share_and_preference_are_stable() -> None:
    """Five symbols over two monitors: each takes at most three, in an order of its own."""
    assert [fair_share(5, n) for n in (0, 1, 2, 3, 5, 9)] == [5, 5, 3, 2, 1, 1]
    assert preference("a", SYMBOLS) == preference("a", list(reversed(SYMBOLS)))
    assert sorted(preference("b", SYMBOLS)) == sorted(SYMBOLS)


async def test_two_monitors_split_the_symbols_and_rebalance(redis_url: str) -> None:
    """A second monitor joining gets its share; every symbol has exactly one holder."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        first = Leases(Transport.of(client), Keys("t"), "m1", SYMBOLS, ttl_s=3)
        second = Leases(Transport.of(client), Keys("t"), "m2", SYMBOLS, ttl_s=3)
        assert len(await first.refresh()) == 5
        assert await second.refresh() == []
        for _ in range(2):
            await first.refresh()
            await second.refresh()
        assert first.held.isdisjoint(second.held)
        assert first.held | second.held == set(SYMBOLS)
        assert {len(first.held), len(second.held)} == {2, 3}
        await first.release_all()
        await second.refresh()
        assert second.held == set(SYMBOLS)
    finally:
        await client.aclose()


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_leases_are_renewed_after_redis_forgot_the_scripts(
    request: pytest.FixtureRequest, cluster: bool
) -> None:
    """After SCRIPT FLUSH (a restarted Redis), a refresh renews every lease still held.

    On a Redis Cluster the five symbols' leases live on all three nodes.
    """
    client = connect(RedisSettings(redis_url_of(request, cluster), cluster=cluster)).client
    try:
        leases = Leases(Transport.of(client), Keys("t"), "m1", SYMBOLS, ttl_s=3)
        await leases.refresh()
        await client.script_flush()
        assert await leases.refresh() == []
        assert leases.held == set(SYMBOLS)
        assert {await client.pttl(leases.key(symbol)) > 2000 for symbol in SYMBOLS} == {True}
    finally:
        await client.aclose()


def monitor(settings: Settings, name: str) -> Settings:
    return replace(
        settings, mqtt=replace(settings.mqtt, client_id=f"{settings.mqtt.topic_prefix}-{name}")
    )


async def test_a_surviving_monitor_takes_over_within_the_lease_time(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The monitor holding BTCUSDT dies without a word; the other liquidates on the next crash."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    position = half_btc_long("p-1", account="a")
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(running(monitor(settings, "one"), lease_ttl_s=1.5))
        two = await stack.enter_async_context(running(monitor(settings, "two"), lease_ttl_s=1.5))
        events = await stack.enter_async_context(Collector(mqtt_url, prefix))
        client = await stack.enter_async_context(mqtt_client(mqtt_url))
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(client, f"{prefix}/positions", position)
        await stored_positions(one, "BTCUSDT", 1)
        async with asyncio.timeout(10):
            while not (one.leases.owns("BTCUSDT") or two.leases.owns("BTCUSDT")):
                await asyncio.sleep(0.05)
        holder, survivor = (one, two) if one.leases.owns("BTCUSDT") else (two, one)
        await crash(holder)
        died = time.monotonic()
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        received = await events.wait_for(1, timeout=15)
        handover_s = time.monotonic() - died
        assert survivor.leases.owns("BTCUSDT")
    assert [e["event_id"] for e in received] == ["p-1:1:1"]
    assert handover_s < 1.5 * 2 + 1, f"hand-over took {handover_s:.1f} s"
