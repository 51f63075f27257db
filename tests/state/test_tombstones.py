"""Tombstones against a real daemon, Redis and Mosquitto: kept long enough, then forgotten."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
from harness import (
    Collector,
    btc_long,
    mqtt_client,
    publish,
    running,
    settings_for,
    stored_positions,
)

from monitor.config.model import Limits
from monitor.service.daemon import Daemon


async def stored_ids(daemon: Daemon) -> set[str]:
    """The ids of every BTCUSDT position record in Redis."""
    return {
        raw.decode()
        for raw in await daemon.store.client.hkeys(daemon.store.keys.positions("BTCUSDT"))
    }


async def test_closed_and_liquidated_tombstones_expire_and_open_positions_stay(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """With a 2 s retention, a closed and a liquidated position are refused replays at first and
    are gone from Redis later, while an open position and the trigger index are untouched."""
    limits = replace(Limits(), tombstone_retention_s=2)
    settings = settings_for(redis_url, mqtt_url, prefix, limits=limits)
    positions = f"{prefix}/positions"
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(
            client,
            positions,
            [
                btc_long("p-open", margin="30000"),
                btc_long("p-closed"),
                btc_long("p-liquidated", margin="3000"),
            ],
        )
        await stored_positions(daemon, "BTCUSDT", 3)
        await publish(client, positions, btc_long("p-closed") | {"qty": "0", "seq": 2})
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        (liquidation,) = await events.wait_for(1)
        triggers = [
            await daemon.store.client.zrange(key, 0, -1, withscores=True)
            for key in daemon.store.keys.all_triggers("BTCUSDT")
        ]
        # Within the retention an old version replayed is still refused.
        await publish(client, positions, btc_long("p-closed"))
        assert {"p-open", "p-closed", "p-liquidated"} == await stored_ids(daemon)

        async with asyncio.timeout(15):
            while await stored_ids(daemon) != {"p-open"}:
                await asyncio.sleep(0.1)
        after = [
            await daemon.store.client.zrange(key, 0, -1, withscores=True)
            for key in daemon.store.keys.all_triggers("BTCUSDT")
        ]
        left = await daemon.store.client.zcard(daemon.store.keys.tombstones("BTCUSDT"))
    assert (liquidation["position_id"], liquidation["type"]) == ("p-liquidated", "liquidation")
    assert triggers == after
    assert 0 == left


async def test_a_new_version_revives_a_tombstone_and_it_no_longer_expires(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A liquidated position that gets a new version (a re-opened position) is open again: the
    expiry of its tombstone must not delete it."""
    limits = replace(Limits(), tombstone_retention_s=1)
    settings = settings_for(redis_url, mqtt_url, prefix, limits=limits)
    positions = f"{prefix}/positions"
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(client, positions, btc_long("p-1", margin="3000"))
        await stored_positions(daemon, "BTCUSDT", 1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        await events.wait_for(1)
        await publish(client, positions, btc_long("p-1", margin="30000") | {"seq": 2})
        key = daemon.store.keys.positions("BTCUSDT")

        async def revived() -> bool:
            record = await daemon.store.client.hget(key, "p-1")
            return record is not None and orjson.loads(record)[5] == 2

        async with asyncio.timeout(10):
            while not await revived():
                await asyncio.sleep(0.05)
        # A tombstone made after the revival: once it is gone, the sweep has passed the
        # revived position's older tombstone time too.
        await publish(client, positions, btc_long("p-sentinel"))
        await publish(client, positions, btc_long("p-sentinel") | {"qty": "0", "seq": 2})
        async with asyncio.timeout(15):
            while "p-sentinel" not in await stored_ids(daemon):
                await asyncio.sleep(0.05)
            while "p-sentinel" in await stored_ids(daemon):
                await asyncio.sleep(0.05)
        assert {"p-1"} == await stored_ids(daemon)
        assert 0 == await daemon.store.client.zcard(daemon.store.keys.tombstones("BTCUSDT"))
