"""Bad input over MQTT against a real daemon, Redis and Mosquitto: rejected, kept, counted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from harness import Collector, half_btc_long, mqtt_client, publish, running, settings_for
from prometheus_client.parser import text_string_to_metric_families

from monitor.config.model import Limits
from monitor.core.status import Status
from monitor.service.daemon import Daemon

MAX_PAYLOAD = 2048


def position(pid: str, seq: int = 1, **changes: Any) -> dict[str, Any]:
    """A long of 0.5 BTCUSDT at 60,000 with margin 3,000 (liquidation price 54,216.87)."""
    return half_btc_long(pid, seq=seq) | changes


def raw(document: Any) -> bytes:
    return orjson.dumps(document)


def counters(daemon: Daemon, name: str, label: str) -> dict[str, float]:
    """The samples of one counter from the daemon's metrics, by the value of one label."""
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(daemon.metrics.render().decode())
        for sample in family.samples
        if sample.name == name
    }


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def dead_letters(url: str, prefix: str) -> list[tuple[str, str, str, bytes]]:
    """(source, reason, detail, payload) of every entry of the dead-letter stream, oldest first."""
    async with redis_client(url) as client:
        entries = await client.xrange(f"{prefix}:deadletter")
    return [
        (f[b"source"].decode(), f[b"reason"].decode(), f[b"detail"].decode(), f[b"payload"])
        for _, f in entries
    ]


def only(events: list[dict[str, Any]], fields: Collection[str]) -> list[dict[str, Any]]:
    return [{key: event[key] for key in fields} for event in events]


async def test_garbage_is_dead_lettered_and_changes_nothing(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Sixteen bad messages are each dead-lettered whole and counted; the crash still liquidates."""
    settings = settings_for(
        redis_url, mqtt_url, prefix, limits=Limits(max_payload_bytes=MAX_PAYLOAD)
    )
    positions = f"{prefix}/positions"
    mark = f"{prefix}/prices/BTCUSDT/mark"
    unknown_mark = f"{prefix}/prices/XRPUSDT/mark"
    mixed = raw([position("p-mixed", side="buy"), position("p-good")])
    big_position = raw(position("p-long", 2, account="a" * 3000))
    big_price = raw({"price": "1" + "0" * 3000, "ts": 2})
    assert (len(big_position), len(big_price)) == (3119, 3020)
    garbage: list[tuple[str, bytes, str, str]] = [
        # (topic, payload, reason, detail)
        (
            positions,
            b'{"id": "p-long", "account"',
            "malformed_json",
            "Expecting ':' delimiter: line 1 column 27 (char 26)",
        ),
        (
            positions,
            raw(position("p-long", 2, leverage="20")),
            "unknown_field",
            "unexpected field(s) leverage",
        ),
        (
            positions,
            raw(position("p-long", 2)).replace(b'"3000"', b"NaN"),
            "malformed_json",
            "NaN is not valid JSON",
        ),
        (
            positions,
            raw(position("p-long", 2, margin="-3000")),
            "non_positive",
            "margin must be positive, got -3000",
        ),
        (
            positions,
            raw(position("p-x", symbol="XRPUSDT")),
            "unknown_symbol",
            "no contract is configured for symbol XRPUSDT",
        ),
        (
            positions,
            big_position,
            "payload_too_large",
            f"{len(big_position)} bytes exceeds the limit of {MAX_PAYLOAD}",
        ),
        (
            positions,
            mixed,
            "unknown_side",
            "1 of 2 objects rejected; first [0]: side must be long or short, got 'buy'",
        ),
        (
            positions,
            raw(position("p-long", 2, qty="1e999999999")),
            "bad_decimal",
            "qty '1e999999999' is out of range (at most 40 digits before or after the point)",
        ),
        (
            positions,
            raw(position("p-long", 2)).replace(b'"seq":2', b'"seq":18446744073709551616'),
            "bad_seq",
            "seq must be an integer from 0 to 9223372036854775807, got 18446744073709551616",
        ),
        (mark, b"not json", "malformed_json", "Expecting value: line 1 column 1 (char 0)"),
        (
            mark,
            raw({"price": "1", "ts": 2, "venue": "x"}),
            "unknown_field",
            "unexpected field(s) venue",
        ),
        (mark, raw({"price": "NaN", "ts": 2}), "non_finite", "price must be finite, got NaN"),
        (
            mark,
            raw({"price": "-54000", "ts": 2}),
            "non_positive",
            "price must be positive, got -54000",
        ),
        (
            unknown_mark,
            raw({"price": "1", "ts": 2}),
            "unknown_symbol",
            "no contract is configured for symbol XRPUSDT",
        ),
        (
            mark,
            big_price,
            "payload_too_large",
            f"{len(big_price)} bytes exceeds the limit of {MAX_PAYLOAD}",
        ),
        (
            mark,
            b'{"price": 1e99999999999999999999, "ts": 2}',
            "malformed_json",
            "number 1e99999999999999999999 is out of range",
        ),
    ]
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, mark, {"price": "60000", "ts": 1})
        await publish(client, positions, position("p-long"))
        for topic, payload, _, _ in garbage:
            await client.publish(topic, payload, qos=1)
        await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": "53990", "ts": 3})
        await publish(client, mark, {"price": "54000", "ts": 3})
        received = await events.wait_for(2)
        assert await daemon.failing() == {}
        rejected = counters(daemon, "liqmon_rejected_messages_total", "reason")
        async with redis_client(redis_url) as redis:
            stored = await redis.hget(f"{prefix}:{{BTCUSDT}}:price", "mark")
        await events.quiet(0.3)

    assert sorted(
        only(received, ["event_id", "type", "margin", "position_seq", "mark_price"]),
        key=lambda e: e["event_id"],
    ) == [
        {
            "event_id": "p-good:1:1",
            "type": "liquidation",
            "margin": "3000",
            "position_seq": 1,
            "mark_price": "54000",
        },
        {
            "event_id": "p-long:1:1",
            "type": "liquidation",
            "margin": "3000",
            "position_seq": 1,
            "mark_price": "54000",
        },
    ]
    long_event = next(e for e in received if e["position_id"] == "p-long")
    assert long_event["index_price"] == "53990"
    assert Decimal(long_event["liquidation_price"]) == Decimal(27000) / Decimal("0.498")
    assert stored == b"54000"
    # Positions and prices arrive on two MQTT sessions, so their dead letters keep each
    # session's order but may interleave either way.
    expected = [
        (f"mqtt:{topic}", reason, detail, payload) for topic, payload, reason, detail in garbage
    ]
    assert by_session(await dead_letters(redis_url, prefix)) == by_session(expected)
    assert rejected == {
        "malformed_json": 4,
        "unknown_field": 2,
        "non_positive": 2,
        "unknown_symbol": 2,
        "payload_too_large": 2,
        "unknown_side": 1,
        "bad_decimal": 1,
        "bad_seq": 1,
        "non_finite": 1,
    }


def by_session(letters: list[Any]) -> tuple[list[Any], list[Any]]:
    """Dead letters split by the session that read them: positions, then prices."""
    positions = [letter for letter in letters if letter[0].endswith("/positions")]
    return positions, [letter for letter in letters if not letter[0].endswith("/positions")]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"price": 1e99999999999999999999, "ts": 2}',
        raw({"price": "1e999999999", "ts": 2}),
        raw({"price": "-1e999999999", "ts": 2}),
    ],
)
async def test_an_absurd_price_does_not_stop_the_daemon(
    redis_url: str, mqtt_url: str, prefix: str, payload: bytes
) -> None:
    """A mark no decimal can hold, or one with a billion digits, is rejected; ticks go on."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/positions", position("p-1"))
        await client.publish(f"{prefix}/prices/BTCUSDT/mark", payload, qos=1)
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 3})
        (event,) = await events.wait_for(1)
        assert await daemon.failing() == {}
        # Stopping right after an event is published must not hang the shutdown.
    assert event["event_id"] == "p-1:1:1"
    ((source, reason, _, kept),) = await dead_letters(redis_url, prefix)
    assert (source, kept) == (f"mqtt:{prefix}/prices/BTCUSDT/mark", payload)
    assert reason in {"malformed_json", "bad_decimal"}


async def test_old_and_replayed_versions_are_ignored(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A lower seq is ignored, and replaying a position or a tick emits no second event."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    positions = f"{prefix}/positions"
    mark = f"{prefix}/prices/BTCUSDT/mark"
    current = position("p-1", 5)
    crash = {"price": "54000", "ts": 2}
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, mark, {"price": "60000", "ts": 1})
        await publish(client, positions, current)
        # An older version with almost no margin: liquidatable at once, were it applied.
        await publish(client, positions, position("p-1", 4, margin="100"))
        await publish(client, mark, crash)
        first = await events.wait_for(1)
        assert only(first, ["event_id", "position_seq", "margin"]) == [
            {"event_id": "p-1:5:1", "position_seq": 5, "margin": "3000"}
        ]
        # The same messages again, then a sentinel position that a later tick liquidates:
        # its event arrives only after everything before it was handled.
        await publish(client, positions, current)
        await publish(client, mark, crash)
        await publish(client, positions, position("p-2", margin="4000"))
        await publish(client, mark, {"price": "52000", "ts": 3})
        received = await events.wait_for(2)
        await events.quiet(0.3)
        ignored = counters(daemon, "liqmon_position_updates_total", "result")
        stored = await daemon.store.records("BTCUSDT", ["p-1"])
    assert [e["event_id"] for e in received] == ["p-1:5:1", "p-2:1:1"]
    assert ignored["ignored_stale_seq"] == 2
    found = stored[0]
    assert found is not None
    record = found[0]
    assert (record.seq, record.margin, record.status) == (5, Decimal(3000), Status.LIQUIDATED)
