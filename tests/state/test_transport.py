"""One server or a cluster: the transport chosen at connect time, and what differs."""

from __future__ import annotations

import asyncio

from monitor.config.model import Limits, RedisSettings
from monitor.state.keys import Keys
from monitor.state.outbox import Outbox
from monitor.state.transport import ClusterNodes, SingleNode, Transport, connect


async def test_a_single_server_gets_the_single_node_transport(redis_url: str) -> None:
    """``redis.cluster = false``: one kept connection per lane, nothing announced."""
    transport = connect(RedisSettings(redis_url))
    try:
        assert isinstance(transport, SingleNode)
        assert not transport.cluster
        assert not Outbox(transport, Keys("t"), Limits()).announced
        assert [] == transport.announcement(Keys("t"), "BTCUSDT")
        assert await transport.client.ping()
        assert isinstance(Transport.of(transport.client), SingleNode)
    finally:
        await transport.aclose()


async def test_a_cluster_gets_the_cluster_transport_which_announces(
    cluster_url: str, prefix: str
) -> None:
    """``redis.cluster = true``: an alert queued in an outbox is announced on outbox-ready,
    where the relay learns which outbox to read."""
    transport = connect(RedisSettings(cluster_url, cluster=True))
    keys = Keys(prefix)
    outbox = Outbox(transport, keys, Limits())
    heard: list[str] = []
    ready, subscribed = asyncio.Event(), asyncio.Event()

    def on_ready(symbol: str) -> None:
        heard.append(symbol)
        ready.set()

    try:
        assert isinstance(transport, ClusterNodes)
        assert transport.cluster and outbox.announced
        assert isinstance(Transport.of(transport.client), ClusterNodes)
        async with asyncio.TaskGroup() as group:
            watching = group.create_task(outbox.watch(on_ready, subscribed))
            await subscribed.wait()
            await outbox.enqueue("ETHUSDT", "alert-1", f"{prefix}/alerts/ETHUSDT/x", b"{}")
            async with asyncio.timeout(5):
                await ready.wait()
            watching.cancel()
        assert ["ETHUSDT"] == heard
        assert 1 == await outbox.length(["ETHUSDT"])
    finally:
        await transport.aclose()
