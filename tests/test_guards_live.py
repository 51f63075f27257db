"""The price guards in the running daemon: alerts on the bus, decisions held or skipped."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import aiomqtt
from harness import mqtt_client, publish, running, settings_for, settled, stored_positions

from monitor.guards import GuardSettings
from monitor.status import Status

LONG = {
    "id": "p-1", "account": "acct-1", "symbol": "BTCUSDT", "side": "long",
    "qty": "0.5", "entry_price": "60000", "margin": "3000", "seq": 1,
}  # fmt: skip


async def collect(client: aiomqtt.Client, count: int, timeout: float = 10) -> list[str]:
    """The topics of the next ``count`` alerts and events."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if message.topic.value.split("/")[1] in ("alerts", "events"):
                seen.append(message.topic.value)
                if len(seen) == count:
                    return seen
    return seen


async def test_deviation_holds_liquidation_until_mark_and_index_agree(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """With hold_on_deviation, a mark far from the index raises a margin call, not a liquidation.

    The liquidation follows once an index that agrees with the mark arrives.
    """
    guards = GuardSettings(max_mark_index_deviation=Decimal("0.02"), hold_on_deviation=True)
    settings = settings_for(redis_url, mqtt_url, prefix)
    settings = replace(settings, guards={name: guards for name in settings.symbols})
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": "60000", "ts": 1})
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(client, f"{prefix}/positions", LONG)
        await stored_positions(daemon, "BTCUSDT", 1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        await settled(daemon, "BTCUSDT", 2)
        first = await collect(client, 2)
        found = (await daemon.store.records("BTCUSDT", ["p-1"]))[0]
        assert found is not None and found[0].status is Status.MARGIN_CALL
        await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": "54100", "ts": 3})
        second = await collect(client, 2)
    assert sorted(first) == sorted(
        [f"{prefix}/alerts/BTCUSDT/price_deviation", f"{prefix}/events/acct-1/BTCUSDT/margin_call"]
    )
    assert sorted(second) == sorted(
        [
            f"{prefix}/alerts/BTCUSDT/price_deviation_cleared",
            f"{prefix}/events/acct-1/BTCUSDT/liquidation",
        ]
    )


async def test_a_stale_feed_is_announced_and_no_decision_is_made_on_it(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """No mark for stale_after_s: a feed_stale alert; a position arriving then is not judged."""
    guards = GuardSettings(stale_after_s=0.5)
    settings = settings_for(redis_url, mqtt_url, prefix)
    settings = replace(settings, guards={name: guards for name in settings.symbols})
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 1})
        stale = await collect(client, 1, timeout=5)
        await publish(client, f"{prefix}/positions", LONG)
        await stored_positions(daemon, "BTCUSDT", 1)
        found = (await daemon.store.records("BTCUSDT", ["p-1"]))[0]
        assert found is not None and found[0].status is Status.HEALTHY
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        resumed = await collect(client, 2)
    assert stale == [f"{prefix}/alerts/BTCUSDT/feed_stale"]
    assert sorted(resumed) == sorted(
        [f"{prefix}/alerts/BTCUSDT/feed_resumed", f"{prefix}/events/acct-1/BTCUSDT/liquidation"]
    )
