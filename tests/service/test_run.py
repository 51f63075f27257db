"""The daemon as an operator runs it, and as it behaves when the broker goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from harness import (
    Collector,
    btc_long,
    http_ready,
    nodes_holding,
    publish,
    publishing,
    redis_url_of,
    running,
    settings_for,
    stored_positions,
)
from prometheus_client.parser import text_string_to_metric_families

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import RedisSettings
from monitor.devtools.embedded import free_port
from monitor.state.keys import Keys
from monitor.state.transport import connect

ROOT = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"


@contextlib.contextmanager
def spawned(
    args: list[str], env: dict[str, str], **options: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """``liqmon --config <the shipped file> ARGS`` as a child, killed on the way out if alive."""
    config = str(ROOT / "config" / "liqmon.toml")
    process = subprocess.Popen([str(LIQMON), "--config", config, *args], env=env, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET, without raising on 503."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_liqmon_run_is_ready_serves_metrics_and_stops_cleanly_on_sigterm(
    redis_url: str, mqtt_url: str
) -> None:
    """`liqmon run` gets ready, serves valid Prometheus metrics, and exits 0 on SIGTERM."""
    port = free_port()
    env = dict(
        os.environ,
        LIQMON_REDIS_URL=redis_url,
        LIQMON_MQTT_URL=mqtt_url,
        LIQMON_HTTP_PORT=str(port),
        LIQMON_LOG_FORMAT="json",
    )
    with spawned(["run"], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            try:
                status, body = get(f"http://127.0.0.1:{port}/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, "the daemon should become ready"
        assert orjson.loads(body) == {"status": "ready"}
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, metrics = get(f"http://127.0.0.1:{port}/metrics")
        names = {family.name for family in text_string_to_metric_families(metrics.decode())}
        assert {"liqmon_ready", "liqmon_outbox_length", "liqmon_events"} <= names
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    _, stderr = process.communicate()
    lines = [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    assert "stopped" in [line["event"] for line in lines]


async def test_events_wait_in_redis_while_the_broker_is_down(
    redis_url: str, fresh_mosquitto, tmp_path: Path, prefix: str
) -> None:
    """With the broker stopped, liquidations wait in the outbox; when it is back, all arrive."""
    broker = fresh_mosquitto()
    settings = settings_for(redis_url, broker.url, prefix)
    host, port = broker.host, broker.port
    positions = [btc_long(f"p-{n}", str(6000 - 10 * n)) for n in range(50)]
    subscriber = aiomqtt.Client(host, port, identifier=f"{prefix}-sub", clean_session=False)
    async with running(settings) as daemon:
        async with subscriber:
            await subscriber.subscribe(f"{prefix}/events/#", qos=1)
        async with aiomqtt.Client(host, port) as client:
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
            await publish(client, f"{prefix}/positions", positions)
        await stored_positions(daemon, "BTCUSDT", len(positions))

        broker.stop()
        async with asyncio.timeout(10):
            while "mqtt" not in await daemon.failing():
                await asyncio.sleep(0.05)
        # Prices from a venue feed keep flowing while the broker is down.
        await daemon.intake.on_tick(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(50000), 2, "test"))
        async with asyncio.timeout(10):
            while await daemon.outbox.length(["BTCUSDT"]) < len(positions):
                await asyncio.sleep(0.05)

        # The backlog shows in the metrics an operator alerts on.
        def gauge(name: str) -> float:
            text = daemon.metrics.render().decode()
            family = {f.name: f for f in text_string_to_metric_families(text)}[name]
            return float(family.samples[0].value)

        async with asyncio.timeout(5):
            while gauge("liqmon_outbox_oldest_age_seconds") <= 0:
                await asyncio.sleep(0.1)
        assert len(positions) == gauge("liqmon_outbox_length")

        broker.restart()
        received: list[dict[str, object]] = []
        async with aiomqtt.Client(
            host, port, identifier=f"{prefix}-sub", clean_session=False
        ) as again:
            async with asyncio.timeout(20):
                async for message in again.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(orjson.loads(message.payload))
                    if len(received) == len(positions):
                        break
        async with asyncio.timeout(10):
            while await daemon.outbox.length(["BTCUSDT"]):
                await asyncio.sleep(0.05)

    assert sorted(e["event_id"] for e in received) == sorted(f"p-{n}:1:1" for n in range(50))
    assert {e["type"] for e in received} == {"liquidation"}


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_liqmon_publish_delivers_the_outbox_serves_metrics_and_stops_on_sigterm(
    request: pytest.FixtureRequest, mqtt_url: str, cluster: bool
) -> None:
    """`liqmon publish` gets ready, delivers committed events once, counts them, exits 0.

    The events are queued in two symbols' outboxes, which on a Redis Cluster
    live on different nodes; written there by hand, unannounced, they go out
    with the relay's sweep.
    """
    redis_url = redis_url_of(request, cluster)
    outboxes = [Keys("liqmon").outbox(symbol) for symbol in ("BTCUSDT", "BTCUSD")]
    if cluster:
        assert len(nodes_holding(redis_url, outboxes)) == 2
    port = free_port()
    env = dict(
        os.environ,
        LIQMON_REDIS_URL=redis_url,
        LIQMON_REDIS_CLUSTER=str(cluster).lower(),
        LIQMON_MQTT_URL=mqtt_url,
    )
    command = ["publish", "--name", "p1", "--http-port", str(port)]
    with spawned(command, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        host, mqtt_port = mqtt_url.removeprefix("mqtt://").split(":")
        await http_ready(port, timeout=15)
        async with aiomqtt.Client(host, int(mqtt_port), identifier="publish-sub") as subscriber:
            await subscriber.subscribe("liqmon/events/#", qos=1)
            client = connect(RedisSettings(redis_url, cluster=cluster)).client
            payloads = {}
            for n, (outbox, symbol) in enumerate(zip(outboxes, ("BTCUSDT", "BTCUSD"), strict=True)):
                payload = b'{"event_id": "p-%d:1:1", "type": "liquidation"}' % n
                payloads[f"liqmon/events/acct-1/{symbol}/liquidation"] = payload
                await client.xadd(
                    outbox,
                    {
                        "event_id": f"p-{n}:1:1",
                        "topic": f"liqmon/events/acct-1/{symbol}/liquidation",
                        "payload": payload,
                    },
                )
            received = {}
            async with asyncio.timeout(10):
                async for message in subscriber.messages:
                    received[message.topic.value] = message.payload
                    if len(received) == len(payloads):
                        break
            assert received == payloads
            async with asyncio.timeout(5):
                while any([await client.xlen(outbox) for outbox in outboxes]):
                    await asyncio.sleep(0.05)
            await client.aclose()
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        published = {
            sample.name: sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
        }
        assert published["liqmon_events_published_total"] == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


async def test_a_monitor_with_a_separate_publisher_leaves_events_to_it(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """With no publisher running, a liquidation waits in the outbox; one starts and it arrives."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    settings = replace(settings, mqtt=replace(settings.mqtt, publisher="separate"))
    position = btc_long("p-1")
    async with Collector(mqtt_url, prefix) as events, running(settings) as daemon:
        host, port = mqtt_url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port)) as client:
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
            await publish(client, f"{prefix}/positions", [position])
            await stored_positions(daemon, "BTCUSDT", 1)
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "50000", "ts": 2})
        async with asyncio.timeout(10):
            while not await daemon.outbox.length(["BTCUSDT"]):
                await asyncio.sleep(0.05)
        assert await events.quiet(0.5) == [], "the monitor itself publishes nothing"
        async with publishing(settings):
            received = await events.wait_for(1)
            await events.quiet(0.3)
        assert [(e["event_id"], e["type"]) for e in received] == [("p-1:1:1", "liquidation")]
        assert await daemon.outbox.length(["BTCUSDT"]) == 0


async def test_two_publishers_share_the_outboxes_by_lease(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Two `liqmon publish` processes read disjoint sets of outboxes that cover every symbol."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with publishing(settings, "p1") as first, publishing(settings, "p2") as second:
        async with asyncio.timeout(10):
            while len(first.leases.held) + len(second.leases.held) != len(settings.symbols) or (
                not first.leases.held or not second.leases.held
            ):
                await asyncio.sleep(0.05)
        assert first.leases.held.isdisjoint(second.leases.held)
        assert first.bus.relay is not None and second.bus.relay is not None
        assert set(first.bus.relay.symbols) == first.leases.held
        assert set(second.bus.relay.symbols) == second.leases.held
