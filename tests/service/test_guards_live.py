"""The price guards in the running daemon: alerts on the bus, decisions held or skipped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiomqtt
import redis
from harness import (
    Collector,
    crash,
    half_btc_long,
    http_get,
    mqtt_client,
    publish,
    running,
    settings_for,
    settled,
    stored_positions,
    until,
)

from monitor.config.model import Settings
from monitor.core.guards import DEFAULT_GUARDS, GuardSettings
from monitor.core.status import Status
from monitor.service.daemon import Daemon
from monitor.state.keys import Keys

REJECTED = "liqmon_rejected_messages_total"

LONG = half_btc_long("p-1", account="acct-1")


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
    # Only BTCUSDT's: the others, never ticked, would go stale (and alert) too.
    settings = replace(settings, guards={**settings.guards, "BTCUSDT": guards})
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


# --- issue #12: a future timestamp, two monitors, a feed that never ticked -------------


class Alerts(Collector):
    """Keeps every alert payload of ``{prefix}/alerts/{symbol}/#``, re-sends included."""

    def __init__(self, url: str, prefix: str, symbol: str) -> None:
        super().__init__(url, prefix)
        self.symbol = symbol

    async def __aenter__(self) -> Alerts:
        await self.client.__aenter__()
        await self.client.subscribe(f"{self.prefix}/alerts/{self.symbol}/#", qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def of_type(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` alerts of type ``kind`` arrived; return them."""
        async with asyncio.timeout(timeout):
            while len(found := [a for a in self.events if a["type"] == kind]) < count:
                await asyncio.sleep(0.02)
        return found


def stored_price(redis_url: str, prefix: str, **fields: int | str) -> None:
    """Write BTCUSDT's price hash as an earlier monitor (or an older version) left it."""
    with redis.Redis.from_url(redis_url) as plain:
        plain.hset(Keys(prefix).price("BTCUSDT"), mapping=dict(fields))


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def all_guards(settings: Settings, guards: GuardSettings) -> Settings:
    """``settings`` with ``guards`` for every symbol."""
    return replace(settings, guards={name: guards for name in settings.symbols})


def named(settings: Settings, name: str) -> Settings:
    """``settings`` for a monitor of its own MQTT client id (so its own leases)."""
    client_id = f"{settings.mqtt.topic_prefix}-{name}"
    return replace(settings, mqtt=replace(settings.mqtt, client_id=client_id))


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    """One sample of the daemon's /metrics (None when the series does not exist)."""
    return daemon.metrics.registry.get_sample_value(name, labels)


async def test_a_mark_stamped_in_the_future_is_dead_lettered_and_the_crash_after_it_liquidates(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark stamped in microseconds is rejected as future_ts; the next real mark liquidates."""
    mark = f"{prefix}/prices/BTCUSDT/mark"
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        now = wall_ms()
        await publish(client, mark, {"price": "60000", "ts": now})
        await publish(client, f"{prefix}/positions", LONG)
        await stored_positions(daemon, "BTCUSDT", 1)
        await publish(client, mark, {"price": "60000", "ts": now * 1000})
        await until(lambda: 1 == sample(daemon, REJECTED, source="mqtt", reason="future_ts"))
        await publish(client, mark, {"price": "54000", "ts": now + 1})
        received = await events.wait_for(1)
        dead = await daemon.store.client.xrange(daemon.store.keys.dead_letter)
        stored = await daemon.store.quote("BTCUSDT")
    assert ["liquidation"] == [e["type"] for e in received]
    assert [b"future_ts"] == [fields[b"reason"] for _, fields in dead]
    assert stored is not None and (Decimal(54000), now + 1) == (stored.mark, stored.mark_ts_ms)


async def test_a_symbol_frozen_by_a_stored_future_mark_recovers_at_start(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark_ts in the future left in Redis by an older version does not block correct marks."""
    now = wall_ms()
    stored_price(redis_url, prefix, mark="60000", mark_ts=now * 1000)
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/positions", LONG)
        await stored_positions(daemon, "BTCUSDT", 1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": now})
        received = await events.wait_for(1)
    assert ["liquidation"] == [e["type"] for e in received]


async def test_two_monitors_announce_a_stale_feed_once_under_one_id(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Only the lease holder announces; after it dies the other repeats the episode's id.

    A subscriber that keeps alert ids (as it keeps event ids) sees one feed_stale
    and one feed_resumed.
    """
    settings = all_guards(settings_for(redis_url, mqtt_url, prefix), GuardSettings(stale_after_s=1))
    symbols = set(settings.symbols)
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(running(named(settings, "one"), lease_ttl_s=1.5))
        two = await stack.enter_async_context(running(named(settings, "two"), lease_ttl_s=1.5))
        await until(
            lambda: (
                one.leases.held | two.leases.held == symbols
                and not (one.leases.held & two.leases.held)
            )
        )
        client = await stack.enter_async_context(mqtt_client(mqtt_url))
        alerts = await stack.enter_async_context(Alerts(mqtt_url, prefix, "BTCUSDT"))
        last = wall_ms()
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60001.5", "ts": last})
        await alerts.of_type("feed_stale")
        await alerts.quiet(2.5)
        announced = [a for a in alerts.events if a["detail"].get("mark") == "60001.5"]
        holder, survivor = (one, two) if one.leases.owns("BTCUSDT") else (two, one)
        await crash(holder)
        again = await alerts.of_type("feed_stale", count=len(announced) + 1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60002", "ts": last + 1})
        resumed = await alerts.of_type("feed_resumed")
        assert survivor.leases.owns("BTCUSDT")
    episode = last + 1000
    assert [f"BTCUSDT:feed_stale:{episode}"] == [a["alert_id"] for a in announced]
    assert {f"BTCUSDT:feed_stale:{episode}"} == {a["alert_id"] for a in again}
    assert [f"BTCUSDT:feed_resumed:{episode}"] == [a["alert_id"] for a in resumed]


async def test_a_symbol_that_never_ticked_goes_stale_from_start(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Positions and no mark since start: feed_stale, stale in the API, the metric series, and
    not ready, naming the symbol whose positions go unwatched (the other symbols, stale too but
    with no positions, are not named); a fresh mark makes it ready again."""
    settings = all_guards(
        settings_for(redis_url, mqtt_url, prefix), GuardSettings(stale_after_s=0.5)
    )
    async with (
        Alerts(mqtt_url, prefix, "BTCUSDT") as alerts,
        running(settings) as daemon,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/positions", LONG)
        await stored_positions(daemon, "BTCUSDT", 1)
        (stale,) = await alerts.of_type("feed_stale")
        await until(lambda: sample(daemon, "liqmon_feed_stale", symbol="BTCUSDT") == 1)
        status, body, _ = await http_get(daemon, "/api/symbols")
        age = sample(daemon, "liqmon_feed_age_seconds", symbol="BTCUSDT")
        unready = await daemon.failing()
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        (resumed,) = await alerts.of_type("feed_resumed")
        ready = await daemon.failing()
    assert ["feeds"] == list(unready)
    assert unready["feeds"].startswith("stale with open positions: BTCUSDT (no fresh mark for ")
    assert {} == ready
    feed = {s["symbol"]: s["feed"] for s in body["symbols"]}["BTCUSDT"]
    assert (200, True) == (status, feed["stale"])
    assert age is not None and age > 0.5
    assert "mark" not in stale["detail"] and float(stale["detail"]["age_s"]) > 0.5
    assert stale["alert_id"].replace("feed_stale", "feed_resumed") == resumed["alert_id"]


async def test_after_a_restart_a_minutes_old_stored_mark_is_stale_at_once(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The feed died with the monitor: the stored mark's age counts, so feed_stale comes at once."""
    marked = wall_ms() - 180_000
    stored_price(redis_url, prefix, mark="60000", mark_ts=marked)
    settings = settings_for(redis_url, mqtt_url, prefix)
    stale_after_ms = int(settings.guards.get("BTCUSDT", DEFAULT_GUARDS).stale_after_s * 1000)
    async with Alerts(mqtt_url, prefix, "BTCUSDT") as alerts, running(settings) as daemon:
        (stale,) = await alerts.of_type("feed_stale", timeout=5)
        status, body, _ = await http_get(daemon, "/api/symbols")
        stale_metric = sample(daemon, "liqmon_feed_stale", symbol="BTCUSDT")
    feed = {s["symbol"]: s["feed"] for s in body["symbols"]}["BTCUSDT"]
    assert (200, True, 1) == (status, feed["stale"], stale_metric)
    assert feed["age_s"] >= 180
    assert f"BTCUSDT:feed_stale:{marked + stale_after_ms}" == stale["alert_id"]
    assert "60000" == stale["detail"]["mark"] and float(stale["detail"]["age_s"]) >= 180


async def test_a_stored_index_stamped_in_the_future_does_not_freeze_the_index(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """An index_ts in the future left in Redis by an older version: new index ticks are stored."""
    now = wall_ms()
    stored_price(redis_url, prefix, index="1", index_ts=now * 1000)
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": "60000", "ts": now})
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": now})
        await settled(daemon, "BTCUSDT", now)
        status, body, _ = await http_get(daemon, "/api/symbols")
    btc = {s["symbol"]: s for s in body["symbols"]}["BTCUSDT"]
    assert (200, "60000", now) == (status, btc["index"], btc["index_ts"])
