"""A monitor, or the separate publisher, killed with SIGKILL mid-burst, then started again.

Every transition of the burst must reach the subscriber (none missing), and
none may be committed twice: a re-sent publish carries the same event id and
the same payload, so a subscriber that de-duplicates on ids sees each once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import redis
from harness import http_ready, position_object

from monitor.config.loading import load_settings
from monitor.core.margin import Position, Side, assess
from monitor.core.status import RiskLimits, Status, next_status
from monitor.devtools.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
CONFIG = ROOT / "config" / "liqmon.toml"
COUNT = 20_000
CRASH = Decimal(50000)


def positions() -> list[dict[str, Any]]:
    """Longs of 0.1 BTC at 60,000 with leverage from 2x to 50x: a crash to 50,000 splits them."""
    return [
        position_object(
            f"p-{n}",
            account=f"acct-{n % 100}",
            qty="0.1",
            margin=str((Decimal(6000) / (2 + Decimal(n % 4900) / 100)).quantize(Decimal("0.01"))),
        )
        for n in range(COUNT)
    ]


def expected(items: list[dict[str, Any]]) -> dict[str, str]:
    """event_id → type for every position the crash moves out of healthy."""
    contract = load_settings(CONFIG, environ={}).symbols["BTCUSDT"]
    out = {}
    for p in items:
        position = Position(
            Side.LONG, Decimal(p["qty"]), Decimal(p["entry_price"]), Decimal(p["margin"])
        )
        status = next_status(Status.HEALTHY, assess(contract, position, CRASH), RiskLimits())
        if status is not Status.HEALTHY:
            out[f"{p['id']}:1:1"] = {"liquidated": "liquidation"}.get(status.value, status.value)
    return out


def start(env: dict[str, str], config: Path, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(LIQMON), "--config", str(config), command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("killed", ["monitor", "publisher"])
async def test_sigkill_mid_burst_loses_nothing_and_doubles_nothing(
    redis_url: str, fresh_mosquitto: Any, tmp_path: Path, killed: str
) -> None:
    """Killed after a few hundred of ~10,000 events and restarted: all arrive, none twice.

    ``publisher``: the monitor runs with ``mqtt.publisher = "separate"`` and
    ``liqmon publish`` beside it is the process killed.
    """
    broker = fresh_mosquitto()
    config = CONFIG
    if killed == "publisher":
        config = tmp_path / "liqmon.toml"
        separate = CONFIG.read_text().replace("[mqtt]\n", '[mqtt]\npublisher = "separate"\n')
        config.write_text(separate)
    items = positions()
    want = expected(items)
    assert 5000 < len(want) < COUNT
    data = tmp_path / "positions.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(p) for p in items))
    env = dict(
        os.environ,
        LIQMON_REDIS_URL=redis_url,
        LIQMON_MQTT_URL=broker.url,
        LIQMON_HTTP_PORT=str(free_port()),
    )
    with redis.Redis.from_url(redis_url) as client:
        client.hset("liqmon:{BTCUSDT}:price", mapping={"mark": "60000", "mark_ts": 1})
    subprocess.run(
        [str(LIQMON), "--config", str(CONFIG), "positions", "load", str(data)], env=env, check=True
    )
    # The feed is alive: the mark is fresh when the monitor starts (a stale one with open
    # positions keeps it not ready), and the crash tick comes after it.
    marked_ms = time.time_ns() // 1_000_000
    with redis.Redis.from_url(redis_url) as client:
        client.hset("liqmon:{BTCUSDT}:price", mapping={"mark_ts": marked_ms})

    received: list[dict[str, Any]] = []
    seen: set[str] = set()
    subscriber = aiomqtt.Client(
        broker.host, broker.port, identifier="crash-sub", clean_session=False
    )
    monitor = start(env, config, "run")
    publishing = start(env, config, "publish") if killed == "publisher" else None
    victim = publishing or monitor
    restarted = None
    try:
        async with subscriber:
            await subscriber.subscribe("liqmon/events/#", qos=1)
            async with aiomqtt.Client(broker.host, broker.port) as publisher:
                await http_ready(int(env["LIQMON_HTTP_PORT"]))
                await publisher.publish(
                    "liqmon/prices/BTCUSDT/mark",
                    orjson.dumps({"price": str(CRASH), "ts": marked_ms + 1}),
                    qos=1,
                )
            async with asyncio.timeout(60):
                async for message in subscriber.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(orjson.loads(message.payload))
                    seen.add(received[-1]["event_id"])
                    if len(received) == 300 and restarted is None:
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                        killed_at = len(received)
                        restarted = start(env, config, "run" if victim is monitor else "publish")
                    if len(seen) == len(want):
                        break
    finally:
        for process in (monitor, publishing, restarted):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
    assert restarted is not None and killed_at < len(want), "the kill must land mid-burst"
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in received:
        by_id.setdefault(event["event_id"], []).append(event)
    assert {i: events[0]["type"] for i, events in by_id.items()} == want
    # Re-sent: at most what was in flight when the kill landed (one publish batch).
    assert len(received) - len(want) <= 1000
    for copies in by_id.values():
        # A re-sent event is the same transition: same payload except the send time.
        assert len({orjson.dumps({**e, "emitted_at": 0}) for e in copies}) == 1
