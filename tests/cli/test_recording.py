"""`liqmon replay` drives a running monitor from a recording; `liqmon record` writes one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from harness import (
    Collector,
    mqtt_client,
    position_object,
    publish,
    running,
    settings_for,
    stored_positions,
)

from feeds.replay import read_ticks
from feeds.synthetic import SyntheticSource
from monitor.cli.recording import record, replay


async def test_a_replayed_crash_liquidates(
    redis_url: str, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """A recording of a fall below a long's liquidation price, replayed, yields its liquidation."""
    recording = tmp_path / "crash.jsonl"
    lines = [(1, "mark", "60000"), (2, "index", "54010"), (3, "mark", "54000")]
    recording.write_text(
        "".join(
            orjson.dumps(
                {
                    "ts_ms": 1732400000000 + n,
                    "symbol": "BTCUSDT",
                    "kind": k,
                    "price": p,
                    "source": "x",
                }
            ).decode()
            + "\n"
            for n, k, p in lines
        )
    )
    settings = settings_for(redis_url, mqtt_url, prefix)
    position = position_object("p-1", account="a-1", qty="0.5")
    async with running(settings) as daemon, Collector(mqtt_url, prefix) as events:
        async with mqtt_client(mqtt_url) as client:
            await publish(client, f"{prefix}/positions", position)
        await stored_positions(daemon, "BTCUSDT", 1)
        assert await replay(settings, recording, speed=None) == 3
        received = await events.wait_for(1)
    assert [(e["event_id"], e["type"], e["index_price"]) for e in received] == [
        ("p-1:1:1", "liquidation", "54010")
    ]


async def test_record_writes_every_tick_of_a_source(tmp_path: Path) -> None:
    """Recording a synthetic market writes its ticks, readable back as the same ticks."""
    source = SyntheticSource(
        {"BTCUSDT": "64000"}, seed=3, interval_s=0.01, speed=None, max_steps=20
    )
    path = tmp_path / "out.jsonl"
    written = await asyncio.wait_for(record([source], path, duration_s=5), timeout=10)
    ticks = [tick for _, tick in read_ticks(path)]
    assert written == len(ticks) > 0
    assert {tick.symbol for tick in ticks} == {"BTCUSDT"}
