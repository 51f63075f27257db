"""The intake on its own, against a real Redis: what goes to the tick path (stamped with its
receipt), what is stored at once, and what is rejected, counted and dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from harness import btc_long, settings_for

from feeds.tick import PriceKind, PriceTick
from monitor.core.errors import Rejection
from monitor.core.guards import PriceGuards
from monitor.core.position import PositionUpdate
from monitor.service.intake import Intake
from monitor.state.keys import Keys
from monitor.state.outbox import Outbox
from monitor.state.positions import PositionStore
from monitor.state.transport import Client, connect
from monitor.telemetry.metrics import Metrics

NOW_MS = 1_732_400_000_000
RECEIVED_S = 42.0


@dataclass
class TickPath:
    """Stands in for the tick workers behind the intake's ``Marks`` seam: keeps what it was
    offered, and refuses marks while ``refusing``."""

    offered: list[tuple[PriceTick, float]] = field(default_factory=list)
    refusing: bool = False

    def offer(self, tick: PriceTick, received_s: float) -> bool:
        self.offered.append((tick, received_s))
        return not self.refusing


@dataclass
class Setup:
    intake: Intake
    marks: TickPath
    stored: list[list[PositionUpdate]]
    metrics: Metrics
    client: Client
    prefix: str

    def count(self, name: str, **labels: str) -> float:
        """A counter's value (0 before its first increment)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def dead_letters(self) -> list[tuple[str, str, str, bytes]]:
        """(source, reason, detail, payload) of every dead letter, once all are written."""
        async with asyncio.timeout(5):
            while not self.intake.dead_letters.idle:
                await asyncio.sleep(0.005)
        entries = await self.client.xrange(Keys(self.prefix).dead_letter)
        return [
            (f[b"source"].decode(), f[b"reason"].decode(), f[b"detail"].decode(), f[b"payload"])
            for _, f in entries
        ]

    async def outbox(self, symbol: str) -> list[dict[str, Any]]:
        """The payloads queued in ``symbol``'s outbox."""
        entries = await self.client.xrange(Keys(self.prefix).outbox(symbol))
        return [orjson.loads(fields[b"payload"]) for _, fields in entries]


@contextlib.asynccontextmanager
async def intake_on(redis_url: str, mqtt_url: str, prefix: str) -> AsyncIterator[Setup]:
    """An intake on a real Redis, its dead-letter writer running, its clocks stopped."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    transport = connect(settings.redis)
    client = transport.client
    store = PositionStore(transport, Keys(prefix), settings.limits)
    outbox = Outbox(transport, Keys(prefix), settings.limits)
    metrics, marks = Metrics(), TickPath()
    stored: list[list[PositionUpdate]] = []

    async def apply_positions(batch: list[PositionUpdate]) -> None:
        stored.append(batch)

    intake = Intake(
        store,
        outbox,
        settings.symbols,
        settings.limits,
        prefix,
        marks,
        apply_positions,
        metrics,
        PriceGuards(settings.guards),
        clock=lambda: RECEIVED_S,
        wall_clock_ms=lambda: NOW_MS,
    )
    try:
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(intake.dead_letters.run())
            yield Setup(intake, marks, stored, metrics, client, prefix)
            writer.cancel()
    finally:
        await transport.aclose()


def price(value: str, ts_ms: int) -> bytes:
    return orjson.dumps({"price": value, "ts": ts_ms})


async def test_an_accepted_mark_goes_to_the_tick_path_stamped_with_its_receipt(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark over MQTT reaches the tick path parsed, with the moment the intake received it
    (where its latency is timed from), and is counted as received."""
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        await setup.intake.on_message(f"{prefix}/prices/BTCUSDT/mark", price("60000.5", NOW_MS))
    expected = PriceTick("BTCUSDT", PriceKind.MARK, Decimal("60000.5"), NOW_MS, "mqtt")
    assert [(expected, RECEIVED_S)] == setup.marks.offered
    assert 1 == setup.count(
        "liqmon_ticks_received_total", symbol="BTCUSDT", kind="mark", source="mqtt"
    )


async def test_a_mark_the_tick_path_refuses_is_counted_as_dropped(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark older than the last one the tick path took is dropped and counted, not rejected."""
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        setup.marks.refusing = True
        await setup.intake.on_message(f"{prefix}/prices/BTCUSDT/mark", price("60000", NOW_MS))
        assert [] == await setup.dead_letters()
    assert 1 == setup.count("liqmon_ticks_dropped_total", symbol="BTCUSDT", kind="mark")


async def test_an_index_is_stored_at_once_and_not_evaluated(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """An index tick is written to the symbol's prices in Redis; the tick path never sees it."""
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        await setup.intake.on_message(f"{prefix}/prices/BTCUSDT/index", price("59990", NOW_MS))
        stored = await setup.client.hget(Keys(prefix).price("BTCUSDT"), "index")
    assert b"59990" == stored
    assert [] == setup.marks.offered


BAD_INPUT = [
    ("prices/BTCUSDT/mark", b"not json", "malformed_json",
     "Expecting value: line 1 column 1 (char 0)"),
    ("prices/XRPUSDT/mark", price("1", 1), "unknown_symbol",
     "no contract is configured for symbol XRPUSDT"),
    ("prices/BTCUSDT/mark", price("-5", 1), "non_positive", "price must be positive, got -5"),
    ("prices/BTCUSDT/last", price("5", 1), "unknown_topic",
     "no handler for topic {prefix}/prices/BTCUSDT/last"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "payload", "reason", "detail"), BAD_INPUT)
async def test_bad_input_is_rejected_counted_and_dead_lettered_whole(
    redis_url: str, mqtt_url: str, prefix: str, topic: str, payload: bytes, reason: str, detail: str
) -> None:
    """A message that does not parse never raises: it is counted under its reason and kept
    whole in the dead-letter stream, and nothing reaches the tick path."""
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        await setup.intake.on_message(f"{prefix}/{topic}", payload)
        letters = await setup.dead_letters()
    source = f"mqtt:{prefix}/{topic}"
    assert [(source, reason, detail.format(prefix=prefix), payload)] == letters
    assert 1 == setup.count("liqmon_rejected_messages_total", source="mqtt", reason=reason)
    assert [] == setup.marks.offered


async def test_a_mark_stamped_in_the_future_is_refused_with_the_skew_explained(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A tick an hour ahead of this monitor's clock raises a rejection that says by how much
    and which setting allows for it."""
    tick = PriceTick("BTCUSDT", PriceKind.MARK, Decimal(60000), NOW_MS + 3_600_000, "binance")
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        with pytest.raises(Rejection) as caught:
            await setup.intake.on_tick(tick)
    assert ("future_ts", f"mark 60000 from binance: ts {NOW_MS + 3_600_000} is 3600 s ahead of "
            "this monitor's clock (ts is epoch milliseconds; see max_future_skew_s)") == (
        caught.value.reason, caught.value.detail)  # fmt: skip
    assert [] == setup.marks.offered


async def test_a_positions_message_stores_its_good_versions_and_letters_the_bad_once(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Of a batch with one good and two bad objects, the good version is stored (awaited before
    the message is acknowledged) and one dead letter lists both bad objects."""
    batch = [
        btc_long("p-good"),
        {**btc_long("p-bad"), "side": "buy"},
        {**btc_long("p-worse"), "margin": "-1"},
    ]
    payload = orjson.dumps(batch)
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        await setup.intake.on_message(f"{prefix}/positions", payload)
        letters = await setup.dead_letters()
    assert [["p-good"]] == [[update.id for update in stored] for stored in setup.stored]
    assert [(f"mqtt:{prefix}/positions", "invalid_objects", payload)] == [
        (source, reason, raw) for source, reason, _, raw in letters
    ]
    assert letters[0][2].startswith("2 of 3 objects rejected; first [1]: ")
    assert 1 == setup.count("liqmon_rejected_messages_total", source="mqtt", reason="unknown_side")
    assert 1 == setup.count("liqmon_rejected_messages_total", source="mqtt", reason="non_positive")


async def test_a_cleared_deviation_decides_again_at_the_last_mark(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Mark and index 10 % apart raise a deviation alert; an index that agrees again clears
    it, both alerts are queued for the bus, and the last mark goes to the tick path again so
    the liquidations held meanwhile are decided now rather than at the next mark."""
    mark = f"{prefix}/prices/BTCUSDT/mark"
    index = f"{prefix}/prices/BTCUSDT/index"
    async with intake_on(redis_url, mqtt_url, prefix) as setup:
        # Alerts are raised for the symbols this monitor holds (it watches them).
        assert [] == setup.intake.guards.watch("BTCUSDT", RECEIVED_S, NOW_MS - 3, None)
        await setup.intake.on_message(mark, price("54000", NOW_MS - 2))
        await setup.intake.on_message(index, price("60000", NOW_MS - 1))
        await setup.intake.on_message(index, price("54010", NOW_MS))
        alerts = [(a["type"], a["symbol"]) for a in await setup.outbox("BTCUSDT")]
    assert [("price_deviation", "BTCUSDT"), ("price_deviation_cleared", "BTCUSDT")] == alerts
    assert [(Decimal(54000), NOW_MS - 2)] * 2 == [
        (tick.price, tick.ts_ms) for tick, _ in setup.marks.offered
    ]
