"""The metrics registry: what the MQTT clients counted reaches /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.bus import client as mqtt
from monitor.telemetry.metrics import Metrics

pytestmark = pytest.mark.unit


def test_the_mqtt_clients_counters_are_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost session, dropped QoS 0 ticks and a downgraded subscription show in /metrics."""
    monkeypatch.setattr(mqtt, "counters", mqtt.Counters(2, 40, 1))
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(Metrics().render().decode())
        for sample in family.samples
    }
    assert {
        "liqmon_mqtt_sessions_lost_total": 2,
        "liqmon_mqtt_qos0_dropped_total": 40,
        "liqmon_mqtt_subscriptions_downgraded_total": 1,
    }.items() <= samples.items()
