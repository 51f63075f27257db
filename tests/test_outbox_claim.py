"""A publisher that died with events in flight: the survivor claims and delivers them."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from harness import Collector, running, settings_for

from monitor import relay
from monitor.keys import OUTBOX_GROUP, Keys


async def test_events_a_dead_publisher_read_but_never_acknowledged_are_delivered(
    redis_url: str, mqtt_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries read by a consumer that then vanished reach subscribers, once, in order."""
    monkeypatch.setattr(relay, "CLAIM_EVERY_S", 0.2)
    monkeypatch.setattr(relay, "ABANDONED_AFTER_MS", 300)
    settings = settings_for(redis_url, mqtt_url, prefix)
    keys = Keys(prefix)
    outbox = keys.outbox("ETHUSDT")
    client = aioredis.Redis.from_url(redis_url)
    await client.xgroup_create(outbox, OUTBOX_GROUP, id="0", mkstream=True)
    topic = f"{prefix}/events/acct-9/ETHUSDT/liquidation"
    for n in range(5):
        payload = f'{{"event_id": "ghost-{n}:1:1", "n": {n}}}'
        await client.xadd(
            outbox, {"event_id": f"ghost-{n}:1:1", "topic": topic, "payload": payload}
        )
    # The dead monitor had read them (they are in its pending list) and died.
    await client.xreadgroup(OUTBOX_GROUP, "dead-monitor", {outbox: ">"}, count=10)

    async with Collector(mqtt_url, prefix) as collector, running(settings):
        events = await collector.wait_for(5, timeout=10)
        await collector.quiet(0.5)
        left = await client.xlen(outbox)
    await client.aclose()
    assert [event["n"] for event in events] == [0, 1, 2, 3, 4]
    assert left == 0
