"""What a route keeps in Redis: folds that survive a crash, delivered keys, Redis away."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from alert_samples import event, message
from conftest import alert_settings, forwarding, publish
from harness import until
from sink_server import SinkServer
from test_webhook import ENV, OUTAGE_S, hook_route

from monitor.alerts.folding import summarize
from monitor.alerts.items import Item, item_of
from monitor.alerts.ledger import RouteLedger


def item(number: int) -> Item:
    found = item_of(*message("p", event(number)))
    assert found is not None
    return found


async def test_a_fold_taken_before_a_crash_is_summarized_again_under_the_same_key(
    redis_url: str,
) -> None:
    """Folding is idempotent; a summary not yet marked done comes back whole, same window."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = RouteLedger(client, "t", "desk", 60, 100)
        for number in (1, 2, 2, 3):
            await ledger.fold(item(number), 1_000 + number)
        assert 1_001 == await ledger.fold_opened_ms()
        taken = await ledger.take_fold()
        assert taken is not None
        await ledger.fold(item(4), 5_000)  # folded while the summary is being sent
        again = await ledger.take_fold()  # the forwarder died before fold_done
        assert again is not None
        assert (1_001, ["pos-1:1:1", "pos-2:1:1", "pos-3:1:1"]) == (
            again[0],
            sorted(i.key for i in again[1]),
        )
        summary = summarize("desk", again[0], 10.0, again[1])
        assert summary.key == summarize("desk", taken[0], 10.0, taken[1]).key
        await ledger.fold_done([i.key for i in again[1]], summary.key)
        assert all([await ledger.delivered(k) for k in ("pos-1:1:1", summary.key)])
        assert 5_000 == await ledger.fold_opened_ms()
        rest = await ledger.take_fold()
        assert rest is not None and ["pos-4:1:1"] == [i.key for i in rest[1]]
        await ledger.fold_done(["pos-4:1:1"], None)  # dead-lettered: its key stays unmarked
        assert await ledger.fold_opened_ms() is None
        assert await ledger.take_fold() is None
    finally:
        await client.aclose()


async def test_nothing_is_lost_or_repeated_while_redis_is_away(
    sinks: SinkServer, fresh_redis, mqtt_url: str, prefix: str
) -> None:
    """Without Redis nothing is settled or acknowledged; readiness says so; all arrive after."""
    server = fresh_redis()
    settings = alert_settings(server.url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    async with forwarding(settings, ENV) as forwarder:
        await publish(settings, [message(prefix, event(n)) for n in range(10)])
        await until(lambda: len(sinks.accepted) == 10)
        await asyncio.to_thread(server.stop)
        await publish(settings, [message(prefix, event(n)) for n in range(10, 30)])
        failing = await forwarder.failing()
        assert "redis" in failing
        await asyncio.sleep(OUTAGE_S)  # the outage itself: Redis stays away this long
        assert 10 == len(sinks.accepted)  # nothing is sent that cannot be checked first
        await asyncio.to_thread(server.start)
        await until(lambda: len(sinks.accepted) == 30, timeout_s=30)
        assert {} == await forwarder.failing()
    assert {f"pos-{n}:1:1" for n in range(30)} == set(sinks.accepted)
    assert {1} == set(sinks.accepted.values())
