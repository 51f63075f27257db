"""A publisher that died with events in flight: the survivor claims and delivers them."""

from __future__ import annotations

import pytest
from harness import Collector, redis_url_of, running, settings_for

from monitor.config.model import Limits
from monitor.service import relay
from monitor.state.keys import OUTBOX_GROUP, Keys
from monitor.state.outbox import Outbox
from monitor.state.transport import connect


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_events_a_dead_publisher_read_but_never_acknowledged_are_delivered(
    request: pytest.FixtureRequest,
    mqtt_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    cluster: bool,
) -> None:
    """Entries read by a consumer that then vanished reach subscribers, once, in order."""
    monkeypatch.setattr(relay, "CLAIM_EVERY_S", 0.2)
    monkeypatch.setattr(relay, "ABANDONED_AFTER_MS", 300)
    settings = settings_for(redis_url_of(request, cluster), mqtt_url, prefix, cluster)
    keys = Keys(prefix)
    outbox = keys.outbox("ETHUSDT")
    client = connect(settings.redis).client
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


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_claiming_where_the_groups_were_lost_makes_them_again(
    request: pytest.FixtureRequest, prefix: str, cluster: bool
) -> None:
    """A server (a cluster node) that lost its data has nothing to claim: the groups come back."""
    transport = connect(
        settings_for(redis_url_of(request, cluster), "mqtt://x", prefix, cluster).redis
    )
    client = transport.client
    store = Outbox(transport, Keys(prefix), Limits())
    try:
        assert [] == await store.claim_abandoned(["BTCUSDT", "BTCUSD"], "me", 0, 10)
        assert [1, 1] == [
            len(await client.xinfo_groups(store.keys.outbox(symbol)))
            for symbol in ("BTCUSDT", "BTCUSD")
        ]
    finally:
        await client.aclose()


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_a_successor_publishes_what_its_predecessor_had_read_before_anything_newer(
    request: pytest.FixtureRequest,
    mqtt_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    cluster: bool,
) -> None:
    """A publisher read five margin calls and died; their clears were committed after. The
    monitor that takes the symbol over sends the margin calls first, then the clears: a
    subscriber never sees a clear before its margin call."""
    monkeypatch.setattr(relay, "CLAIM_EVERY_S", 0.2)
    monkeypatch.setattr(relay, "ABANDONED_AFTER_MS", 1000)
    settings = settings_for(redis_url_of(request, cluster), mqtt_url, prefix, cluster)
    outbox = Keys(prefix).outbox("ETHUSDT")
    client = connect(settings.redis).client
    await client.xgroup_create(outbox, OUTBOX_GROUP, id="0", mkstream=True)

    async def commit(kind: str, n: int) -> None:
        event_id = f"p-{n}:1:{1 if kind == 'margin_call' else 2}"
        topic = f"{prefix}/events/acct-9/ETHUSDT/{kind}"
        payload = f'{{"event_id": "{event_id}", "type": "{kind}", "n": {n}}}'
        await client.xadd(outbox, {"event_id": event_id, "topic": topic, "payload": payload})

    for n in range(5):
        await commit("margin_call", n)
    await client.xreadgroup(OUTBOX_GROUP, "dead-publisher", {outbox: ">"}, count=10)
    for n in range(5):
        await commit("margin_call_cleared", n)

    async with Collector(mqtt_url, prefix) as collector, running(settings):
        events = await collector.wait_for(10, timeout=10)
        await collector.quiet(0.5)
    await client.aclose()
    assert [(e["type"], e["n"]) for e in events] == [
        *(("margin_call", n) for n in range(5)),
        *(("margin_call_cleared", n) for n in range(5)),
    ]
