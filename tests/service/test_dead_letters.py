"""Dead letters against a real daemon, Redis and Mosquitto: one per message, bounded in bytes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import redis.asyncio as aioredis
from harness import btc_long, mqtt_client, running, settings_for, stored_positions

from monitor.config.model import DEAD_LETTER_OVERHEAD_BYTES, Limits
from monitor.service.daemon import Daemon

PADDING = 4_700
"""Bytes of an unknown field added to each drifted object (about 1 MB for 200 of them)."""


async def entries(daemon: Daemon) -> list[dict[bytes, bytes]]:
    """Every dead-letter entry's fields, oldest first."""
    return [fields for _, fields in await daemon.store.client.xrange(daemon.store.keys.dead_letter)]


async def idle_writer(daemon: Daemon) -> None:
    """Wait until every dead letter offered is written."""
    async with asyncio.timeout(10):
        while not daemon.intake.dead_letters.idle:
            await asyncio.sleep(0.01)


async def used_memory(client: aioredis.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


async def test_a_batch_with_200_drifted_objects_is_one_entry_listing_each(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A 1 MB message whose 200 objects carry a new field is kept once, with 200 reasons; the
    good object beside them is stored, and Redis grows by about the message, not 200 copies."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    drifted = [btc_long(f"p-{n}") | {"new_field": "x" * PADDING} for n in range(200)]
    message = orjson.dumps([btc_long("p-good"), *drifted])
    assert 900_000 < len(message) < settings.limits.max_payload_bytes
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        before = await used_memory(daemon.store.client)
        await client.publish(f"{prefix}/positions", message, qos=1)
        await stored_positions(daemon, "BTCUSDT", 1)
        await idle_writer(daemon)
        grown = await used_memory(daemon.store.client) - before
        (entry,) = await entries(daemon)
        rejected = daemon.metrics.registry.get_sample_value(
            "liqmon_rejected_messages_total", {"source": "mqtt", "reason": "unknown_field"}
        )
    reasons = orjson.loads(entry[b"reasons"])
    assert (entry[b"source"], entry[b"reason"]) == (
        f"mqtt:{prefix}/positions".encode(),
        b"unknown_field",
    )
    assert entry[b"detail"].startswith(b"200 of 201 objects rejected; first [1]: ")
    assert entry[b"payload"] == message
    assert [r["index"] for r in reasons] == list(range(1, 201))
    assert {r["reason"] for r in reasons} == {"unknown_field"}
    assert 200 == rejected
    assert grown < 3 * len(message)


async def test_the_dead_letter_stream_is_bounded_in_bytes(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Twenty oversized 600 kB messages: each kept cut to the payload cap with its full size,
    the stream never holds more than its byte budget, and the newest is the one kept last."""
    limits = replace(
        Limits(),
        max_payload_bytes=65_536,
        dead_letter_payload_bytes=131_072,
        dead_letter_max_bytes=131_072 + DEAD_LETTER_OVERHEAD_BYTES + 300_000,
    )
    settings = settings_for(redis_url, mqtt_url, prefix, limits=limits)
    messages = [bytes([65 + n]) * 600_000 for n in range(20)]
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        for message in messages:
            await client.publish(f"{prefix}/positions", message, qos=1)

        async def all_rejected() -> bool:
            total = daemon.metrics.registry.get_sample_value(
                "liqmon_rejected_messages_total", {"source": "mqtt", "reason": "payload_too_large"}
            )
            return total == len(messages) and daemon.intake.dead_letters.idle

        async with asyncio.timeout(20):
            while not await all_rejected():
                await asyncio.sleep(0.02)
        kept = await entries(daemon)
    sizes = [int(fields[b"bytes"]) for fields in kept]
    assert 1 <= len(kept) < len(messages)
    assert sum(sizes) <= limits.dead_letter_max_bytes
    assert int(kept[-1][b"total"]) == sum(sizes)
    assert kept[-1][b"payload"] == messages[-1][: limits.dead_letter_payload_bytes]
    assert {fields[b"payload_bytes"] for fields in kept} == {b"600000"}


async def test_a_stream_deleted_by_hand_is_counted_again_from_its_next_entry(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """An operator who deletes the dead-letter stream leaves no stale byte count behind that
    would make every later entry evict the one before it: the count starts again."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with running(settings) as daemon:
        store = daemon.outbox
        await store.dead_letter("test", "malformed_json", "first", b"{" * 1000)
        await store.client.delete(store.keys.dead_letter)
        await store.dead_letter("test", "malformed_json", "second", b"{" * 10)
        await store.dead_letter("test", "malformed_json", "third", b"{" * 10)
        kept = await entries(daemon)
    assert [fields[b"detail"] for fields in kept] == [b"second", b"third"]
    assert int(kept[-1][b"total"]) == sum(int(fields[b"bytes"]) for fields in kept)
