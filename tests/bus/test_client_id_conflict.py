"""Two MQTT clients with one client id: the monitor says so once, and counts the takeovers."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiomqtt
import structlog
from harness import publishing, running, settings_for
from prometheus_client.parser import text_string_to_metric_families

from monitor.service.broker import TakeoverWatch

CONFLICT = "mqtt_client_id_conflict"


async def take_over_again_and_again(url: str, client_id: str) -> None:
    """Connect as ``client_id`` and, each time the broker hands the id back, reconnect at once."""
    host, port = url.removeprefix("mqtt://").split(":")
    while True:
        try:
            async with aiomqtt.Client(
                host, int(port), identifier=client_id, clean_session=False
            ) as client:
                async for _ in client.messages:
                    pass
        except aiomqtt.MqttError:
            await asyncio.sleep(0.05)  # a rival's pause between takeovers, not a wait


async def test_a_duplicate_client_id_is_logged_once_and_counted(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Another client with the monitor's client_id: one error line naming it; takeovers counted."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    client_id = settings.mqtt.client_id
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as daemon, asyncio.TaskGroup() as group:
            rival = group.create_task(take_over_again_and_again(mqtt_url, client_id))
            started = time.monotonic()
            takeovers = daemon.metrics.mqtt_takeovers
            async with asyncio.timeout(30):
                # Past the three that reveal the conflict.
                while takeovers._value.get() < 5:
                    await asyncio.sleep(0.05)
            fighting_s = time.monotonic() - started
            rival.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rival
            rendered = daemon.metrics.render().decode()
    conflicts = [line for line in logs if line["event"] == CONFLICT]
    assert [(line["log_level"], line["message"]) for line in conflicts] == [
        (
            "error",
            f"another MQTT client is using client_id {client_id}: "
            "give each monitor/publisher its own mqtt.client_id",
        )
    ]
    counted = next(
        sample.value
        for family in text_string_to_metric_families(rendered)
        for sample in family.samples
        if sample.name == "liqmon_mqtt_takeovers_total"
    )
    assert counted >= 5
    # It backs off while taken over again and again (0.1, 0.2, 0.4, 0.8 s ... with
    # jitter), instead of reconnecting at once each time (154 takeovers in 12 s before).
    assert fighting_s > 0.6
    reconnects = [line for line in logs if line["event"] == "mqtt_connected"]
    assert len(reconnects) >= 5


async def test_a_publisher_whose_id_is_taken_names_its_own_id(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """`liqmon publish --name publisher` taken over names {client_id}-publisher, once."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    client_id = f"{settings.mqtt.client_id}-publisher"
    with structlog.testing.capture_logs() as logs:
        async with publishing(settings) as publisher, asyncio.TaskGroup() as group:
            rival = group.create_task(take_over_again_and_again(mqtt_url, client_id))
            async with asyncio.timeout(30):
                while publisher.metrics.mqtt_takeovers._value.get() < 4:
                    await asyncio.sleep(0.05)
            rival.cancel()
    conflicts = [line["client_id"] for line in logs if line["event"] == CONFLICT]
    assert conflicts == [client_id]


async def test_one_monitor_alone_reports_no_conflict(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A monitor with a client id of its own neither logs a conflict nor counts a takeover."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as daemon:
            await asyncio.sleep(1.0)  # a second of normal life: nothing to wait for
            assert daemon.metrics.mqtt_takeovers._value.get() == 0
    assert CONFLICT not in [line["event"] for line in logs]


def test_the_watch_reports_once_at_the_third_quick_close() -> None:
    """Three closes within a minute, each soon after connecting, report once; later ones do not."""
    watch = TakeoverWatch()
    assert [watch.closed(0.2, at) for at in (0.0, 0.4, 0.8, 1.2, 1.6)] == [
        False,
        False,
        True,
        False,
        False,
    ]


def test_closes_of_long_lived_or_spread_out_connections_are_not_a_conflict() -> None:
    """A broker restarting now and then closes connections too: that is not a duplicate id."""
    long_lived = TakeoverWatch()
    assert not any(long_lived.closed(600.0, at) for at in (0.0, 1.0, 2.0, 3.0))
    spread_out = TakeoverWatch()
    assert not any(spread_out.closed(0.5, at) for at in (0.0, 45.0, 90.0, 135.0))
