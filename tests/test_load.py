"""Bulk loading against a mark that another tool wrote in its own spelling."""

from __future__ import annotations

import redis.asyncio as aioredis
from harness import settings_for

from monitor.console import load_positions
from monitor.position import PositionUpdate
from monitor.wire import position_from_object


async def test_load_stores_every_position_whatever_the_mark_spelling(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark stored as "64000.00" does not defeat the compare-and-set: all positions load."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    client = aioredis.Redis.from_url(redis_url)
    await client.hset(f"{prefix}:{{BTCUSDT}}:price", mapping={"mark": "64000.00", "mark_ts": 1})
    items: list[tuple[int, bytes, PositionUpdate]] = [
        (n, b"", position_from_object(
            {"id": f"p-{n}", "account": "a", "symbol": "BTCUSDT", "side": "long", "qty": "1",
             "entry_price": "64000", "margin": "6400", "seq": 1},
            settings.symbols,
        ))
        for n in range(50)
    ]  # fmt: skip
    summary = await load_positions(settings, items, batch_size=20, progress=False)
    stored = await client.hlen(f"{prefix}:{{BTCUSDT}}:positions")
    await client.aclose()
    assert (50, 0, 50) == (summary.applied, summary.failed, stored)
