"""Redis losing its data under a running monitor (restarted empty, or flushed), against real
servers: it is noticed, reported, alerted and re-synced, and event ids stay unique across it.

Redis restarted without persistence answers as if nothing happened; only the
epoch key (``{prefix}:epoch``, :mod:`monitor.state.epoch`) being gone tells the loss.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from harness import (
    Collector,
    btc_long,
    heard,
    mqtt_client,
    publish,
    publishing,
    running,
    serving,
    settings_for,
    stored_positions,
    until,
)
from test_redis_outages import readyz

from monitor.core.evaluation import GENERATION_STRIDE, event_id
from monitor.service.daemon import Daemon, Service
from monitor.state.epoch import Epoch, EpochState, Verdict, check
from monitor.state.keys import Keys

SYMBOL = "BTCUSDT"
REPO = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
BOOK = [btc_long(f"p-{n}", account=f"acct-{n % 3}") for n in range(10)]


def data_lost(service: Service) -> float:
    """The ``liqmon_redis_outage{reason="data_lost"}`` gauge."""
    sample = service.metrics.registry.get_sample_value(
        "liqmon_redis_outage", {"reason": "data_lost"}
    )
    return sample or 0.0


def liqmon(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    """The installed command, with the shipped configuration pointed at ``redis_url``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    env["LIQMON_REDIS_URL"] = redis_url
    done = subprocess.run(
        [str(LIQMON), *args], cwd=REPO, env=env, capture_output=True, timeout=30, check=False
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def resync_requests(url: str, prefix: str) -> AbstractAsyncContextManager[list[Any]]:
    """Every message on ``{prefix}/resync``, as it arrives."""
    return heard(url, f"{prefix}/resync", "resync")


def test_event_ids_of_a_later_generation_differ_and_still_split_from_the_right() -> None:
    """Generation 1 keeps today's ids; later ones offset the transition number, so a
    re-sent version's transitions get new ids that still end in two integers."""
    assert "p:1:17:1" == event_id("p:1", 17, 1)
    assert "p:1:17:1" == event_id("p:1", 17, 1, generation=1)
    later = event_id("p:1", 17, 1, generation=2)
    assert "p:1:17:2000000001" == later
    position_id, seq, n = later.rsplit(":", 2)
    assert (position_id, int(seq), int(n) % GENERATION_STRIDE) == ("p:1", 17, 1)
    ids = {event_id("p", 1, t, g) for g in (1, 2, 3) for t in range(1, 50)}
    assert 3 * 49 == len(ids)


def test_an_epoch_check_tells_a_loss_from_another_process_noticing_it_first() -> None:
    """Absent, or another id of no higher generation: lost; the same id: same; a successor
    naming ours, or of a higher generation: adopt it."""
    known = Epoch("a", 1, 10)
    successor = known.successor(None, 20, "b")
    assert (successor.generation, successor.state, successor.lost) == (
        2,
        EpochState.AWAITING_RELOAD,
        "a",
    )
    assert Verdict.LOST == check(known, None)
    assert Verdict.SAME == check(known, Epoch("a", 1, 10))
    assert Verdict.ADOPT == check(known, successor)
    # A process started on the emptied Redis wrote a first epoch before we looked.
    stranger = Epoch.first(30, "c")
    assert Verdict.LOST == check(known, stranger)
    assert 2 == known.successor(stranger, 40).generation
    # Its writer then sees our successor of generation 2 and adopts it, rather than
    # declaring a loss in turn (the two would write a new generation every second).
    assert Verdict.ADOPT == check(stranger, known.successor(stranger, 40))
    assert successor == Epoch.decode(successor.encode())
    assert EpochState.LIVE == successor.reloaded().state


async def test_redis_restarted_empty_is_reported_resynced_and_recovered_by_a_load(
    fresh_redis: Any, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """Redis restarted empty under a running monitor: /readyz 503 naming the data loss, the
    data_lost gauge at 1, one redis_data_lost error line, one re-sync request on MQTT; a
    'liqmon positions load' of the book makes it ready again, and the next crash liquidates
    all 10 under ids unlike those before the loss."""
    server = fresh_redis()
    settings = settings_for(server.url, mqtt_url, prefix)
    # The command line reads the shipped configuration: the same key prefix.
    settings = replace(settings, redis=replace(settings.redis, key_prefix="liqmon"))
    book = tmp_path / "book.jsonl"
    book.write_text("".join(json.dumps(position) + "\n" for position in BOOK))
    with structlog.testing.capture_logs() as logs:
        async with (
            running(settings) as daemon,
            Collector(mqtt_url, prefix) as events,
            resync_requests(mqtt_url, prefix) as resyncs,
            mqtt_client(mqtt_url, "feeder") as feeder,
        ):
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "60000", "ts": 1})
            await publish(feeder, f"{prefix}/positions", BOOK)
            await stored_positions(daemon, SYMBOL, len(BOOK))
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 2})
            before = {e["event_id"] for e in await events.wait_for(10)}
            assert {f"p-{n}:1:1" for n in range(10)} == before

            server.restart()  # no AOF, no RDB: it comes back empty

            # Judged on one answer each: a pooled connection that meets the restart first
            # can report "not connected" for a moment in between.
            async def reported() -> bool:
                status, body = await readyz(daemon)
                line = body.get("failing", {}).get("redis", "")
                return status == 503 and "data lost" in line and "liqmon positions load" in line

            await until(reported)
            await until(lambda: data_lost(daemon) == 1.0)
            await until(lambda: _arrived(resyncs, 1), 10)
            (request,) = resyncs
            assert (request["type"], request["generation"]) == ("resync", 2)
            assert daemon.epoch is not None and request["epoch"] == daemon.epoch.id

            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "60000", "ts": 3})
            done = await asyncio.to_thread(
                liqmon, "positions", "load", str(book), redis_url=server.url
            )
            assert 0 == done.returncode, done.stderr
            assert "marked reloaded" in done.stderr

            async def ready() -> bool:
                return (await readyz(daemon))[0] == 200

            await until(ready, 10)
            assert 0.0 == data_lost(daemon)
            await publish(feeder, f"{prefix}/prices/{SYMBOL}/mark", {"price": "50000", "ts": 4})
            after = {e["event_id"] for e in (await events.wait_for(20))[10:]}
            await events.quiet(0.3)
    assert {f"p-{n}:1:{2 * GENERATION_STRIDE + 1}" for n in range(10)} == after
    assert 1 == len(resyncs)
    lost = [line for line in logs if line["event"] == "redis_data_lost"]
    assert 1 == len(lost)
    assert "error" == lost[0]["log_level"]
    assert "liqmon positions load" in lost[0]["message"]


async def _arrived(received: list[Any], count: int) -> bool:
    return len(received) >= count


async def test_a_publisher_notices_the_loss_and_positions_reloaded_ends_it(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """A flushed Redis under a monitor and a 'liqmon publish': both report the loss, the
    re-sync request goes out once, and 'liqmon positions reloaded' makes both ready."""
    server = fresh_redis()
    settings = settings_for(server.url, mqtt_url, prefix)
    settings = replace(settings, redis=replace(settings.redis, key_prefix="liqmon"))
    settings = replace(settings, mqtt=replace(settings.mqtt, publisher="separate"))
    async with (
        resync_requests(mqtt_url, prefix) as resyncs,
        running(settings) as daemon,
        publishing(settings) as publisher,
    ):
        first = daemon.epoch
        assert first is not None and first == publisher.epoch
        await daemon.store.client.flushall()

        async def both_lost() -> bool:
            return "redis" in await daemon.failing() and "redis" in await publisher.failing()

        await until(both_lost, 10)
        await until(lambda: _arrived(resyncs, 1), 10)
        assert daemon.epoch == publisher.epoch
        assert daemon.epoch is not None and daemon.epoch.lost == first.id
        assert 2 == daemon.engine.generation

        done = await asyncio.to_thread(liqmon, "positions", "reloaded", redis_url=server.url)
        assert (0, "") == (done.returncode, done.stderr)
        assert "generation 2 marked reloaded" in done.stdout

        async def both_ready() -> bool:
            return not await daemon.failing() and not await publisher.failing()

        await until(both_ready, 10)
        await asyncio.sleep(0.5)  # a second request would have come by now
    assert 1 == len(resyncs)
    assert Keys("liqmon").epoch == "liqmon:epoch"


async def test_a_monitor_started_on_the_emptied_redis_adopts_the_loss_once(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """Redis emptied, and a second monitor started on it before the first noticed (it writes
    a first epoch of its own): the first declares the loss once, the second adopts it, and
    the generation stays at 2 with one re-sync request."""
    server = fresh_redis()
    settings = settings_for(server.url, mqtt_url, prefix)
    other = replace(settings, mqtt=replace(settings.mqtt, client_id=f"{prefix}-other"))
    async with resync_requests(mqtt_url, prefix) as resyncs, running(settings) as first:
        assert first.epoch is not None
        async with first.store.client.pipeline(transaction=True) as pipe:
            # What the second monitor's start would write on the emptied Redis, at once.
            pipe.flushall()
            pipe.set(first.store.keys.epoch, Epoch.first(0, "stranger").encode())
            await pipe.execute()
        second = Daemon(other)
        async with serving(second, ready=False):

            async def both_lost() -> bool:
                lost = [(await d.failing()).get("redis", "") for d in (first, second)]
                return all("data lost" in line for line in lost)

            await until(both_lost, 10)
            await until(lambda: _arrived(resyncs, 1), 10)
            await asyncio.sleep(2.5)  # two more rounds of both readiness loops
            assert first.epoch == second.epoch
            assert first.epoch is not None and first.epoch.generation == 2
            assert (2, 2) == (first.engine.generation, second.engine.generation)
    assert 1 == len(resyncs)


async def test_a_load_after_a_loss_queues_new_ids_and_marks_the_book_reloaded(
    redis_url: str, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """'liqmon positions load' on a Redis awaiting its reload (generation 2) queues each
    liquidation under a generation-2 id and marks the epoch live; 'positions reloaded' then
    has nothing to do, and on a Redis without an epoch it says so and exits 1."""
    keys = Keys("liqmon")
    client = aioredis.Redis.from_url(redis_url)
    try:
        done = await asyncio.to_thread(liqmon, "positions", "reloaded", redis_url=redis_url)
        assert 1 == done.returncode
        assert done.stderr.startswith("liqmon: error: Redis holds no epoch")
        lost = Epoch.first(0, "before").successor(None, 1, "after")
        await client.set(keys.epoch, lost.encode())
        await client.hset(keys.price(SYMBOL), mapping={"mark": "50000", "mark_ts": 1})
        book = tmp_path / "book.jsonl"
        book.write_text("".join(json.dumps(position) + "\n" for position in BOOK))
        done = await asyncio.to_thread(liqmon, "positions", "load", str(book), redis_url=redis_url)
        assert 0 == done.returncode, done.stderr
        assert done.stderr.endswith(
            "generation 2 marked reloaded; monitors report ready again\n"
        ), done.stderr
        queued = await client.xrange(keys.outbox(SYMBOL))
        stored = Epoch.decode(await client.get(keys.epoch))
    finally:
        await client.aclose()
    ids = {fields[b"event_id"].decode() for _, fields in queued}
    assert {f"p-{n}:1:{2 * GENERATION_STRIDE + 1}" for n in range(10)} == ids
    assert (stored.id, stored.state) == ("after", EpochState.LIVE)
    done = await asyncio.to_thread(liqmon, "positions", "reloaded", redis_url=redis_url)
    assert (0, "") == (done.returncode, done.stderr)
    assert done.stdout.startswith("nothing to do")
