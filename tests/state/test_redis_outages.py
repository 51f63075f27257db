"""Redis that goes silent or runs out of memory, against real servers.

A silent Redis (a frozen host, a fail-over that black-holes the old address)
answers nothing and closes nothing; one out of memory answers every write
with OOM. Either way the monitor must say so in ``/readyz``, keep trying with
backoff, and announce every liquidation exactly once when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from harness import (
    Collector,
    btc_long,
    mqtt_client,
    publish,
    running,
    serving,
    settings_for,
    task_of,
    until,
)
from proxy import BlackHoleProxy
from redis.exceptions import TimeoutError as RedisTimeoutError

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import Settings
from monitor.core.wire import position_from_object
from monitor.devtools.embedded import RedisServer
from monitor.service.daemon import Daemon, PublisherDaemon, Service
from monitor.service.engine import Engine
from monitor.state.channel import REPLY_DEADLINE_S
from monitor.state.keys import Keys
from monitor.state.outbox import Outbox
from monitor.state.positions import UNCHECKED, DecidedAt, PositionStore, Write
from monitor.state.transport import Transport

SYMBOL = "BTCUSDT"


async def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    """What ``GET /readyz`` answers (status, body), asked over HTTP from another thread."""
    http = getattr(service, "http", None)
    assert http is not None and http.bound_port is not None
    url = f"http://127.0.0.1:{http.bound_port}/readyz"

    def get() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    return await asyncio.to_thread(get)


def outage(service: Service, reason: str) -> float:
    """The ``liqmon_redis_outage`` gauge for ``reason`` (0 when never set)."""
    sample = service.metrics.registry.get_sample_value("liqmon_redis_outage", {"reason": reason})
    return sample or 0.0


async def metric_says(service: Service, reason: str, value: float) -> None:
    """Wait until the outage gauge (updated every second) shows ``value`` for ``reason``."""

    async def shown() -> bool:
        return value == outage(service, reason)

    await until(shown, 10)


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """redis-server stopped (SIGSTOP) inside the block: it answers nothing, closes nothing."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def book(count: int, prefix: str = "p") -> list[dict[str, Any]]:
    """``count`` BTC longs at 60,000, 3,000 of margin: healthy at 60,000, liquidated at 50,000."""
    return [btc_long(f"{prefix}-{n}", account=f"acct-{n % 20}") for n in range(count)]


async def seeded(daemon: Daemon, feeder: Any, prefix: str, positions: list[dict[str, Any]]) -> None:
    """Store the mark at 60,000 and ``positions``, and wait until all are stored."""
    await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "60000", "ts": 1})
    for start in range(0, len(positions), 1000):
        await publish(feeder, f"{prefix}/positions", positions[start : start + 1000])
    key = daemon.store.keys.positions(SYMBOL)

    async def stored() -> bool:
        return len(positions) == await daemon.store.client.hlen(key) and daemon.idle()

    await until(stored)


def liquidations(collector: Collector) -> Counter[str]:
    """How many times each position's liquidation arrived."""
    return Counter(e["position_id"] for e in collector.events if e["type"] == "liquidation")


async def test_a_black_holed_redis_connection_is_dropped_and_every_liquidation_announced(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Every connection to Redis goes silent (the old address black-holed): the tick path and
    the outbox reader give up on it within their deadlines, reconnect, and all 10 liquidations
    go out, once each."""
    host, port = redis_url.removeprefix("redis://").removesuffix("/0").split(":")
    async with BlackHoleProxy(host, int(port)) as proxy:
        settings = settings_for(proxy.url, mqtt_url, prefix)
        async with (
            running(settings) as daemon,
            Collector(mqtt_url, prefix) as collector,
            mqtt_client(mqtt_url, "feeder") as feeder,
        ):
            await seeded(daemon, feeder, prefix, book(10))
            assert proxy.black_hole() > 0
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})
            await collector.wait_for(10, timeout=6 * REPLY_DEADLINE_S + 5)
            await collector.quiet(0.5)
            await until(lambda: _ready(daemon))
    assert {f"p-{n}": 1 for n in range(10)} == liquidations(collector)


async def test_a_frozen_redis_is_reported_stuck_then_every_liquidation_goes_out_once(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """Redis frozen (SIGSTOP) with a crash tick in flight: /readyz answers 503 saying Redis does
    not reply (the metric too); once it thaws, all 10 liquidations are announced exactly once."""
    server = fresh_redis()
    settings = settings_for(server.url, mqtt_url, prefix)
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as collector,
        mqtt_client(mqtt_url, "feeder") as feeder,
    ):
        await seeded(daemon, feeder, prefix, book(10))
        with frozen(server):
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})

            async def reported_stuck() -> bool:
                status, body = await readyz(daemon)
                return status == 503 and "no reply" in body["failing"].get("redis", "")

            await until(reported_stuck, 3 * REPLY_DEADLINE_S + 2)
            await metric_says(daemon, "no_reply", 1)
            assert [] == collector.events
        await collector.wait_for(10, timeout=20)
        await collector.quiet(0.5)
        await until(lambda: _ready(daemon))
        status, _ = await readyz(daemon)
        await metric_says(daemon, "no_reply", 0)
    assert 200 == status
    assert {f"p-{n}": 1 for n in range(10)} == liquidations(collector)


OOM_BURST = 3000


def full(url: str, headroom_bytes: int) -> None:
    """Cap Redis' memory at what it uses now plus ``headroom_bytes`` (noeviction)."""
    with redis.Redis.from_url(url) as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", max(used + headroom_bytes, 1))


def unlimited(url: str) -> None:
    """Lift the memory cap."""
    with redis.Redis.from_url(url) as client:
        client.config_set("maxmemory", 0)


async def test_redis_out_of_memory_is_an_outage_and_every_liquidation_goes_out_once_it_frees(
    fresh_redis: Any, fresh_mosquitto: Any, prefix: str
) -> None:
    """3,000 liquidations meet a Redis with 1 MB of headroom: /readyz says Redis is out of
    memory, the outage metric says so, and once maxmemory is raised all 3,000 are announced
    exactly once."""
    server = fresh_redis()
    broker = fresh_mosquitto()
    settings = settings_for(server.url, broker.url, prefix)
    try:
        async with (
            running(settings) as daemon,
            Collector(broker.url, prefix) as collector,
            mqtt_client(broker.url, "feeder") as feeder,
        ):
            await seeded(daemon, feeder, prefix, book(OOM_BURST))
            full(server.url, 1 << 20)
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})

            async def reported_full() -> bool:
                status, body = await readyz(daemon)
                return status == 503 and "out of memory" in body["failing"].get("redis", "")

            await until(reported_full)
            await metric_says(daemon, "out_of_memory", 1)
            unlimited(server.url)
            await collector.wait_for(OOM_BURST, timeout=60)
            await collector.quiet(1.0)
            await until(lambda: _ready(daemon))
            await metric_says(daemon, "out_of_memory", 0)
    finally:
        unlimited(server.url)
    assert {f"p-{n}": 1 for n in range(OOM_BURST)} == liquidations(collector)


async def events_queued(settings: Settings, mqtt_url: str, prefix: str, count: int) -> Settings:
    """A crash liquidates ``count`` positions under a monitor that leaves its events to a
    separate publisher (none runs): they wait in the outbox. Returns those settings."""
    separate = replace(settings, mqtt=replace(settings.mqtt, publisher="separate"))
    async with running(separate) as monitor, mqtt_client(mqtt_url, "feeder") as feeder:
        await seeded(monitor, feeder, prefix, book(count))
        await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})

        async def queued() -> bool:
            return count == await monitor.outbox.length([SYMBOL]) and monitor.idle()

        await until(queued)
    return separate


async def test_a_monitor_started_on_a_full_redis_drains_its_outbox_and_waits_for_memory(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """A monitor restarted while Redis is out of memory does not exit: it recovers (nothing to
    write), publishes the 100 events its last life left in the outbox, reports the outage in
    /readyz, and becomes ready once maxmemory is raised."""
    server = fresh_redis()
    settings = settings_for(server.url, mqtt_url, prefix)
    await events_queued(settings, mqtt_url, prefix, 100)
    full(server.url, -(1 << 16))
    try:
        daemon = Daemon(settings)
        async with Collector(mqtt_url, prefix) as collector, serving(daemon, ready=False):

            async def reported_full() -> bool:
                assert not task_of(daemon).done(), "the monitor exited on a full Redis"
                return "out of memory" in (await daemon.failing()).get("redis", "")

            await until(reported_full)
            await collector.wait_for(100)
            await until(lambda: _outbox_empty(daemon))
            status, body = await readyz(daemon)
            assert 503 == status and "out of memory" in body["failing"]["redis"]
            unlimited(server.url)
            await until(lambda: _ready(daemon))
            await collector.quiet(0.5)
    finally:
        unlimited(server.url)
    assert {f"p-{n}": 1 for n in range(100)} == liquidations(collector)


async def test_the_publisher_starts_and_drains_the_outbox_while_redis_is_full(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """``liqmon publish`` started on a Redis out of memory still publishes every queued event
    and empties the outbox (XACK and XDEL free memory; nothing it needs at start is a write)."""
    server = fresh_redis()
    separate = await events_queued(
        settings_for(server.url, mqtt_url, prefix), mqtt_url, prefix, 500
    )
    full(server.url, -(1 << 16))
    try:
        async with Collector(mqtt_url, prefix) as collector:
            publisher = PublisherDaemon(separate, "publisher")
            async with serving(publisher, ready=False):
                await collector.wait_for(500, timeout=30)
                await until(lambda: _outbox_empty(publisher))
                assert not task_of(publisher).done()
                with redis.Redis.from_url(server.url) as client:
                    still_capped = int(client.config_get("maxmemory")["maxmemory"])
            await collector.quiet(0.5)
    finally:
        unlimited(server.url)
    assert still_capped > 0
    assert {f"p-{n}": 1 for n in range(500)} == liquidations(collector)


async def _outbox_empty(service: Service) -> bool:
    return 0 == await service.outbox.length([SYMBOL])


async def _ready(service: Service) -> bool:
    return not await service.failing()


class _ReplyLostOnce(PositionStore):
    """A position store whose first commit runs in Redis but whose reply is lost (a deadline missed
    after Redis had done the work): what a retry after a timeout meets."""

    lost = False

    async def commit(
        self, symbol: str, writes: Sequence[Write], decided_at: DecidedAt = UNCHECKED
    ) -> set[str] | None:
        conflicts = await super().commit(symbol, writes, decided_at)
        if not self.lost:
            self.lost = True
            raise RedisTimeoutError(f"no reply from Redis within {REPLY_DEADLINE_S:g} s")
        return conflicts


async def test_a_commit_whose_reply_was_lost_is_retried_without_a_second_event(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Retrying a tick whose commit went through but timed out (as the daemon does) queues
    each liquidation once: the commit is compare-and-set, the retry finds them done."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    client = aioredis.Redis.from_url(redis_url)
    transport = Transport.of(client)
    store = _ReplyLostOnce(transport, Keys(prefix), settings.limits)
    outbox = Outbox(transport, Keys(prefix), settings.limits)
    engine = Engine(store, settings.symbols, settings.risk, prefix)
    try:
        await outbox.ensure_groups([SYMBOL])
        await store.accept_marks([(SYMBOL, Decimal(60000), 1)])
        await engine.apply_updates([position_from_object(p, settings.symbols) for p in book(10)])
        tick = PriceTick(SYMBOL, PriceKind.MARK, Decimal(50000), 2, "test")
        (candidates,) = await engine.accept_marks([tick])
        assert candidates is not None
        with pytest.raises(RedisTimeoutError):
            await engine.on_candidates(tick, candidates)
        # The daemon retries with the candidates it had: their records are stale now.
        retried = await engine.on_candidates(tick, candidates)
        queued = await outbox.read([SYMBOL], "test", 100, 1, pending=False)
    finally:
        await client.aclose()
    assert [] == retried.events
    event_ids = [entry.event_id for entry in queued]
    assert sorted(f"p-{n}:1:1" for n in range(10)) == sorted(event_ids)


async def test_the_publishers_outbox_reader_gives_up_on_a_black_holed_connection(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """``liqmon publish`` reading through an address that goes silent mid-read: its blocking
    outbox read misses its deadline, reconnects, and every event committed meanwhile goes out."""
    host, port = redis_url.removeprefix("redis://").removesuffix("/0").split(":")
    direct = settings_for(redis_url, mqtt_url, prefix)
    direct = replace(direct, mqtt=replace(direct.mqtt, publisher="separate"))
    async with BlackHoleProxy(host, int(port)) as proxy:
        through = replace(direct, redis=replace(direct.redis, url=proxy.url))
        publisher = PublisherDaemon(through, "publisher")
        async with (
            running(direct) as monitor,
            serving(publisher, ready=False),
            Collector(mqtt_url, prefix) as collector,
            mqtt_client(mqtt_url, "feeder") as feeder,
        ):
            await until(lambda: _ready(publisher))
            await seeded(monitor, feeder, prefix, book(10))
            assert proxy.black_hole() > 0
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})
            await collector.wait_for(10, timeout=6 * REPLY_DEADLINE_S + 5)
            await collector.quiet(0.5)
    assert {f"p-{n}": 1 for n in range(10)} == liquidations(collector)
