"""What only a Redis Cluster does: slots that move, lost announcements, a primary that restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from harness import (
    Collector,
    btc_long,
    mqtt_client,
    publish,
    publishing,
    running,
    settings_for,
    settled,
    stored_positions,
    until,
)
from redis.crc import key_slot

from monitor.config.model import Limits, RedisSettings
from monitor.devtools.embedded import RedisClusterServers
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore
from monitor.state.transport import REDIS_DOWN, connect

MOVING = "MOVINGUSDT"
"""A symbol of these tests only: its slot is moved to another node and back."""


@pytest.fixture
def nodes(redis_cluster: RedisClusterServers, cluster_url: str) -> Iterator[list[redis.Redis]]:
    """A plain client per node of the (emptied) session cluster."""
    clients = [redis.Redis.from_url(node.url) for node in redis_cluster.nodes]
    yield clients
    for client in clients:
        client.close()


def _set_slot(nodes: list[redis.Redis], slot: int, owner: redis.Redis) -> None:
    """Give ``slot`` (holding no keys) to ``owner``, as every node sees it."""
    owner_id = owner.execute_command("CLUSTER", "MYID")
    for client in [owner, *(c for c in nodes if c is not owner)]:
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner_id)


async def test_the_tick_path_follows_a_slot_that_moves(
    redis_cluster: RedisClusterServers, nodes: list[redis.Redis], cluster_url: str, prefix: str
) -> None:
    """A mark whose slot is migrating, its keys already moved, runs on the importing node
    (ASK); once the slot has moved, the tick path's stale slot map is read again (MOVED)."""
    keys = Keys(prefix)
    slot = key_slot(MOVING.encode())
    transport = connect(RedisSettings(cluster_url, cluster=True))
    client = transport.client
    store = PositionStore(transport, keys, Limits())
    # The slot map is read, and the script loaded on every primary.
    assert await store.accept_marks([("BTCUSDT", Decimal(1), 1)]) != [None]
    owner_node = client.nodes_manager.get_node_from_slot(slot)
    owner = next(
        c for c, s in zip(nodes, redis_cluster.nodes, strict=True) if s.port == owner_node.port
    )
    target, server = next(
        (c, s) for c, s in zip(nodes, redis_cluster.nodes, strict=True) if c is not owner
    )
    owner_id, target_id = (c.execute_command("CLUSTER", "MYID") for c in (owner, target))
    names = [keys.price(MOVING), keys.positions(MOVING), *keys.all_triggers(MOVING)]
    try:
        # Every key of the symbol exists (a trigger member without a record is no candidate).
        await client.hset(names[0], mapping={"mark": "50", "mark_ts": 1})
        await client.hset(names[1], "unused", "-")
        for name in names[2:]:
            await client.zadd(name, {"ghost": 75})
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner_id)
        owner.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        owner.execute_command("MIGRATE", server.host, server.port, "", 0, 5000, "KEYS", *names)

        moving, other = await store.accept_marks(
            [(MOVING, Decimal(100), 2), ("BTCUSDT", Decimal(2), 2)]
        )
        assert (moving is not None, other is not None) == (True, True)
        target.execute_command("ASKING")
        assert target.hget(names[0], "mark_ts") == b"2"

        _set_slot(nodes, slot, target)
        assert [None] == await store.accept_marks([(MOVING, Decimal(99), 1)]), "older than 2"
        (newer,) = await store.accept_marks([(MOVING, Decimal(101), 3)])
        assert newer is not None and newer.quote.mark == Decimal(101)
        assert target.hget(names[0], "mark_ts") == b"3"
    finally:
        await client.aclose()
        for node in nodes:
            node.flushall()
        _set_slot(nodes, slot, owner)


async def test_events_arrive_when_the_announcements_are_lost(
    cluster_url: str, mqtt_url: str, prefix: str, nodes: list[redis.Redis]
) -> None:
    """With the relay's subscription killed on every node, a liquidation still goes out, once."""
    settings = settings_for(cluster_url, mqtt_url, prefix, cluster=True)
    settings = replace(settings, mqtt=replace(settings.mqtt, publisher="separate"))
    async with (
        Collector(mqtt_url, prefix) as events,
        running(settings) as daemon,
        publishing(settings),
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(client, f"{prefix}/positions", [btc_long("p-1")])
        await stored_positions(daemon, "BTCUSDT", 1)
        await settled(daemon, "BTCUSDT", 1)
        await until(lambda: any(node.client_list(_type="pubsub") for node in nodes))
        killed = sum(node.client_kill_filter(_type="pubsub") for node in nodes)
        assert killed >= 1
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "50000", "ts": 2})
        received = await events.wait_for(1, timeout=10)
        await events.quiet(0.5)
    assert [(e["event_id"], e["type"]) for e in received] == [("p-1:1:1", "liquidation")]


async def test_a_primary_that_restarts_empty_is_caught_up_with(
    tmp_path: Path, mqtt_url: str, prefix: str
) -> None:
    """A primary killed and restarted without its data (no AOF): the monitor reports Redis
    down meanwhile, then stores and liquidates on it again; the event goes out once."""
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        settings = settings_for(cluster.url, mqtt_url, prefix, cluster=True)
        async with (
            running(settings, lease_ttl_s=1.0) as daemon,
            Collector(mqtt_url, prefix) as events,
            mqtt_client(mqtt_url) as client,
        ):
            owner = daemon.redis.get_node_from_key(Keys(prefix).price("BTCUSDT"))
            node = next(n for n in cluster.nodes if n.port == owner.port)
            node.kill()
            async with asyncio.timeout(10):
                while "redis" not in await daemon.failing():
                    await asyncio.sleep(0.05)
            # A read over every node fails with the one error and leaves no cancellation
            # pending (Python 3.11's TaskGroup, failing at its exit, left one: the relay ended).
            with pytest.raises(REDIS_DOWN):
                await daemon.outbox.read_each(list(settings.symbols), "probe", 1, pending=True)
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            node.start()
            lease = daemon.leases.key("BTCUSDT")
            async with asyncio.timeout(20):
                while await daemon.failing() or await daemon.redis.get(lease) is None:
                    await asyncio.sleep(0.05)
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 3})
            await publish(client, f"{prefix}/positions", [btc_long("p-1")])
            await stored_positions(daemon, "BTCUSDT", 1)
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "50000", "ts": 4})
            received = await events.wait_for(1, timeout=15)
            await events.quiet(0.5)
    assert [(e["event_id"], e["type"]) for e in received] == [("p-1:1:1", "liquidation")]
