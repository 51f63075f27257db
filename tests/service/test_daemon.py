"""The daemon end to end on real Redis and Mosquitto: positions in, prices in, events out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from decimal import Decimal

import pytest
import structlog
import structlog.testing
from harness import Collector, mqtt_client, position_object, publish, running, settings_for

from monitor.core.evaluation import Event
from monitor.core.status import EventType
from monitor.service.engine import Outcome
from monitor.service.workers import EVENT_LOG_LINES, record_events
from monitor.telemetry import stopping
from monitor.telemetry.metrics import Metrics


def position(
    pid: str, side: str = "long", qty: str = "0.5", margin: str = "3000", seq: int = 1
) -> dict[str, object]:
    return position_object(pid, account="acct-42", side=side, qty=qty, margin=margin, seq=seq)


async def test_crash_liquidates_the_long_and_spares_the_short(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark below a long's liquidation price liquidates it (one event) and spares the short."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with (
        running(settings),
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(
            client, f"{prefix}/positions", [position("p-long"), position("p-short", side="short")]
        )
        await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": "53990", "ts": 2})
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 3})
        received = await events.wait_for(1)
        await events.quiet(0.3)
    assert [e["type"] for e in received] == ["liquidation"]
    event = received[0]
    assert event["position_id"] == "p-long"
    assert event["event_id"] == "p-long:1:1"
    assert event["mark_price"] == "54000"
    assert event["index_price"] == "53990"
    assert Decimal(event["liquidation_price"]) == Decimal(27000) / Decimal("0.498")
    assert events.topics == [f"{prefix}/events/acct-42/BTCUSDT/liquidation"]


async def test_a_running_monitor_freezes_its_settled_heap(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Once connected and settled, the long-lived objects leave the collector's full walks."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    try:
        async with running(settings, freeze_heap_after_s=0.0):
            async with asyncio.timeout(5):
                while not gc.get_freeze_count():
                    await asyncio.sleep(0.02)
    finally:
        frozen = gc.get_freeze_count()
        gc.unfreeze()  # this test process is not a monitor
    assert frozen > 1000


@pytest.mark.unit
def test_a_burst_logs_a_line_per_event_up_to_a_bound_then_one_summary() -> None:
    """250 liquidations of one tick: 100 'event' lines and one line counting the other 150."""
    metrics = Metrics()
    events = [
        Event(f"p-{n}:1:1", EventType.LIQUIDATION, "a", "BTCUSDT",
              {"position_id": f"p-{n}", "mark_price": "50000"})
        for n in range(250)
    ]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        record_events(metrics, Outcome(events=events))
    assert 250 == metrics.registry.get_sample_value("liqmon_events_total", {"type": "liquidation"})
    assert [entry["event"] for entry in logs].count("event") == EVENT_LOG_LINES == 100
    assert [(e["count"], e["by_type"]) for e in logs if e["event"] != "event"] == [
        (150, {"liquidation": 250})
    ]


async def test_a_task_that_does_not_stop_is_named_with_where_it_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop that waits on a task which lost its cancellation logs the task and the await
    it sits in, so a hang at shutdown names its culprit."""
    monkeypatch.setattr(stopping, "STOP_REPORTED_AFTER_S", 0.01)
    released = asyncio.Event()

    async def deaf() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await released.wait()

    task = asyncio.create_task(deaf(), name="deaf-worker")
    await asyncio.sleep(0)
    task.cancel()
    with structlog.testing.capture_logs() as logs:
        await stopping.report_stuck_tasks()
    released.set()
    await task
    [entry] = [e for e in logs if e.get("task") == "deaf-worker"]
    assert "stop_waiting_for_task" == entry["event"]
    assert "deaf" in entry["awaiting"] and "Event.wait" in entry["awaiting"]
