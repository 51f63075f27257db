"""The outbox relay on its own, between a real Redis and a real mosquitto: what it publishes,
in which order, and when it acknowledges."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from harness import Collector, settings_for

from monitor.bus.client import Publisher
from monitor.config.model import Settings
from monitor.service import relay as relay_module
from monitor.service.relay import Relay
from monitor.state.keys import Keys
from monitor.state.outbox import Outbox
from monitor.state.transport import connect
from monitor.telemetry.metrics import Metrics

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def commit(store: Outbox, prefix: str, symbol: str, n: int) -> None:
    """Queue message ``n`` of ``symbol`` in its outbox, as a commit would."""
    payload = orjson.dumps({"event_id": f"{symbol}-{n}", "symbol": symbol, "n": n})
    await store.enqueue(symbol, f"{symbol}-{n}", f"{prefix}/events/acct-1/{symbol}/test", payload)


@contextlib.asynccontextmanager
async def relaying(
    settings: Settings, store: Outbox, owns: Callable[[str], bool], metrics: Metrics
) -> AsyncIterator[Relay]:
    """A relay publishing the outboxes of the symbols it ``owns`` until the block ends."""
    relay = Relay(store, list(SYMBOLS), "relay-1", metrics, owns)
    async with (
        Publisher.connect(settings.mqtt, f"{settings.mqtt.client_id}-out") as publisher,
        asyncio.TaskGroup() as group,
    ):
        task = group.create_task(relay.run(publisher))
        yield relay
        task.cancel()


@contextlib.asynccontextmanager
async def outboxes(redis_url: str, mqtt_url: str, prefix: str) -> AsyncIterator[Any]:
    """Settings and a store whose outboxes have their publishers' group."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    transport = connect(settings.redis)
    store = Outbox(transport, Keys(prefix), settings.limits)
    try:
        await store.ensure_groups(list(SYMBOLS))
        yield settings, store
    finally:
        await transport.aclose()


async def acknowledged(store: Outbox, timeout_s: float = 10.0) -> None:
    """Wait until every outbox is empty of unacknowledged messages."""
    async with asyncio.timeout(timeout_s):
        while await store.length(list(SYMBOLS)):
            await asyncio.sleep(0.01)


async def test_queued_messages_go_out_in_commit_order_and_are_then_acknowledged(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Messages of two symbols arrive, each symbol's in the order committed; once the broker
    acknowledged them they leave the outbox and are counted as published."""
    metrics = Metrics()
    async with outboxes(redis_url, mqtt_url, prefix) as (settings, store):
        for n in range(5):
            for symbol in SYMBOLS:
                await commit(store, prefix, symbol, n)
        async with (
            Collector(mqtt_url, prefix) as collector,
            relaying(settings, store, lambda symbol: True, metrics),
        ):
            received = await collector.wait_for(10)
            await acknowledged(store)
            await collector.quiet(0.3)
    for symbol in SYMBOLS:
        assert list(range(5)) == [e["n"] for e in received if e["symbol"] == symbol]
    assert 10 == len(received)
    assert 10 == metrics.registry.get_sample_value("liqmon_events_published_total")


async def test_a_relay_publishes_only_the_symbols_it_holds(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A symbol whose lease another process holds stays in its outbox; once this relay holds
    it too, its messages go out."""
    held = {"BTCUSDT"}
    async with outboxes(redis_url, mqtt_url, prefix) as (settings, store):
        for symbol in SYMBOLS:
            await commit(store, prefix, symbol, 0)
        async with (
            Collector(mqtt_url, prefix) as collector,
            relaying(settings, store, held.__contains__, Metrics()),
        ):
            first = list(await collector.wait_for(1))
            await collector.quiet(0.3)
            waiting = await store.length(["ETHUSDT"])
            held.add("ETHUSDT")
            everything = await collector.wait_for(2)
            await acknowledged(store)
    assert ["BTCUSDT"] == [e["symbol"] for e in first]
    assert 1 == waiting
    assert ["BTCUSDT", "ETHUSDT"] == [e["symbol"] for e in everything]


async def test_a_restarted_relay_first_sends_what_it_had_read_and_never_saw_acknowledged(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The relay's previous life read two messages and died before the broker acknowledged
    them; started again under the same name, it sends them before the newer third."""
    async with outboxes(redis_url, mqtt_url, prefix) as (settings, store):
        await commit(store, prefix, "BTCUSDT", 0)
        await commit(store, prefix, "BTCUSDT", 1)
        read = await store.read(["BTCUSDT"], "relay-1", 10, 1, pending=False)
        await commit(store, prefix, "BTCUSDT", 2)
        async with (
            Collector(mqtt_url, prefix) as collector,
            relaying(settings, store, "BTCUSDT".__eq__, Metrics()),
        ):
            received = await collector.wait_for(3)
            await acknowledged(store)
            await collector.quiet(0.3)
    assert 2 == len(read)
    assert [0, 1, 2] == [e["n"] for e in received]


async def test_a_relay_never_claims_back_what_it_is_still_publishing(
    redis_url: str, fresh_mosquitto: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUBACKs slower than the abandonment age (a broker paused for a moment) do not make the
    relay claim its own entries in flight as abandoned: each event reaches subscribers once."""
    monkeypatch.setattr(relay_module, "CLAIM_EVERY_S", 0.05)
    monkeypatch.setattr(relay_module, "ABANDONED_AFTER_MS", 100)
    broker = fresh_mosquitto()
    assert broker.pid is not None
    async with (
        outboxes(redis_url, broker.url, prefix) as (settings, store),
        Collector(broker.url, prefix) as collector,
        relaying(settings, store, lambda symbol: True, Metrics()),
    ):
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            for n in range(5):
                await commit(store, prefix, "BTCUSDT", n)
            # The pause is the thing under test: several claim rounds run past the
            # abandonment age while the relay still waits for its PUBACKs.
            await asyncio.sleep(0.6)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        received = await collector.wait_for(5)
        await acknowledged(store)
        await collector.quiet(0.5)
    assert [0, 1, 2, 3, 4] == [e["n"] for e in received]


async def test_outboxes_read_in_shards_each_wake_for_their_own_events(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """With more symbols than one read takes, every shard's blocking read wakes for its
    own symbols' commits, also after their connections were cut: each message goes out
    once, each symbol's in commit order."""
    symbols = [f"S{n:03d}USDT" for n in range(3 * relay_module.SYMBOLS_PER_READ_SHARD + 5)]
    settings = settings_for(redis_url, mqtt_url, prefix)
    transport = connect(settings.redis)
    store = Outbox(transport, Keys(prefix), settings.limits)
    relay = Relay(store, symbols, "relay-1", Metrics(), lambda symbol: True)
    try:
        await store.ensure_groups(symbols)
        for symbol in symbols:
            await commit(store, prefix, symbol, 0)
        async with (
            Collector(mqtt_url, prefix) as collector,
            Publisher.connect(settings.mqtt, f"{settings.mqtt.client_id}-out") as publisher,
            asyncio.TaskGroup() as group,
        ):
            task = group.create_task(relay.run(publisher))
            await collector.wait_for(len(symbols))
            # Every shard's read connection cut: the relay starts its reads over.
            for client in await transport.client.client_list():
                if client.get("cmd") == "xreadgroup":
                    await transport.client.client_kill_filter(_id=client["id"])
            # Every shard blocks on its outboxes again: commits wake each of them.
            for n in (1, 2):
                for symbol in reversed(symbols):
                    await commit(store, prefix, symbol, n)
            received = await collector.wait_for(3 * len(symbols))
            await collector.quiet(0.3)
            task.cancel()
        assert 0 == await store.length(symbols)
    finally:
        await transport.aclose()
    assert 3 * len(symbols) == len(received)
    for symbol in symbols:
        assert [0, 1, 2] == [e["n"] for e in received if e["symbol"] == symbol]
