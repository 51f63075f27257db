"""``liqmon replay`` and ``liqmon record``: recorded ticks onto the bus, live ticks into a file."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

import orjson

from feeds.replay import ReplaySource, TickWriter
from feeds.source import PriceSource
from feeds.tick import PriceTick
from monitor.bus.tool_client import make_client
from monitor.config.model import Settings
from monitor.core import topics
from monitor.core.wire import decimal_str


async def replay(settings: Settings, path: Path, speed: float | None) -> int:
    """Publish a recording's ticks to the price topics (QoS 1); returns the number published.

    A running monitor evaluates them exactly as it would live prices: this is
    how back-tests and demos drive it.
    """
    published = 0
    rejected = 0

    async def emit(tick: PriceTick) -> None:
        nonlocal published
        topic = topics.prices(settings.mqtt.topic_prefix, tick.symbol, tick.kind.value)
        payload = orjson.dumps({"price": decimal_str(tick.price), "ts": tick.ts_ms})
        await client.publish(topic, payload, qos=1)
        published += 1

    async def reject(source: str, reason: str, raw: bytes) -> None:
        nonlocal rejected
        rejected += 1
        sys.stderr.write(f"{source}: skipped a line ({reason}): {raw[:120]!r}\n")

    client = make_client(settings.mqtt, f"liqmon-replay-{uuid.uuid4().hex[:8]}", persistent=False)
    async with client:
        await ReplaySource(path, speed=speed).run(emit, reject)
    sys.stderr.write(f"replayed {published:,} ticks from {path} ({rejected:,} lines skipped)\n")
    return published


async def record(sources: list[PriceSource], path: Path, duration_s: float) -> int:
    """Write every tick of ``sources`` to ``path`` until Ctrl-C or ``duration_s`` (0: no limit)."""
    written = 0
    with TickWriter(path, append=True) as writer:

        async def emit(tick: PriceTick) -> None:
            nonlocal written
            await writer(tick)
            written += 1
            if written % 100 == 0:
                writer.flush()

        async def reject(source: str, reason: str, raw: bytes) -> None:
            sys.stderr.write(f"{source}: rejected a frame ({reason})\n")

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s or None), asyncio.TaskGroup() as group:
                for source in sources:
                    group.create_task(source.run(emit, reject), name=f"record-{source.name}")
    sys.stderr.write(f"recorded {written:,} ticks to {path}\n")
    return written
