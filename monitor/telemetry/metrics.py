"""Prometheus metrics, one registry per daemon (so tests can run several)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.bus import client as mqtt

TICK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
"""Upper bounds, in seconds, of the tick latency histograms' buckets."""


class Metrics:
    """Every counter a tired operator wants, named with Prometheus' conventions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ticks_received = Counter(
            "liqmon_ticks_received_total",
            "Price ticks received",
            ["symbol", "kind", "source"],
            registry=r,
        )
        self.ticks_evaluated = Counter(
            "liqmon_ticks_evaluated_total", "Mark ticks evaluated", ["symbol"], registry=r
        )
        self.ticks_dropped = Counter(
            "liqmon_ticks_dropped_total",
            "Ticks dropped (older than the last accepted)",
            ["symbol", "kind"],
            registry=r,
        )
        self.candidates = Counter(
            "liqmon_candidates_evaluated_total",
            "Positions evaluated exactly after a trigger crossing",
            ["symbol"],
            registry=r,
        )
        self.events = Counter(
            "liqmon_events_total", "Events queued in the outbox", ["type"], registry=r
        )
        self.published = Counter(
            "liqmon_events_published_total", "Events acknowledged by the broker", registry=r
        )
        self.rejected = Counter(
            "liqmon_rejected_messages_total",
            "Input rejected and dead-lettered",
            ["source", "reason"],
            registry=r,
        )
        self.dead_letters_lost = Counter(
            "liqmon_dead_letters_lost_total",
            "Rejected messages counted but not kept (the writer's queue full, or Redis failing)",
            registry=r,
        )
        self.tombstones_expired = Counter(
            "liqmon_tombstones_expired_total",
            "Closed or liquidated position records forgotten after limits.tombstone_retention_s",
            registry=r,
        )
        self.positions = Counter(
            "liqmon_position_updates_total", "Position versions by result", ["result"], registry=r
        )
        self.alerts = Counter(
            "liqmon_alerts_total",
            "Alerts queued: the price guards' and the liquidation-cluster alert's",
            ["symbol", "type"],
            registry=r,
        )
        self.liquidation_within = Gauge(
            "liqmon_liquidation_notional_within",
            "Notional of the side's open positions that would liquidate if the mark moved"
            " the distance (a fraction of it) against the side, as GET /api/stress counts it"
            " (quote currency linear, coin inverse); symbols in liquidation_watch, reported"
            " by their lease holder",
            ["symbol", "side", "distance"],
            registry=r,
        )
        self.liquidation_refresh_seconds = Gauge(
            "liqmon_liquidation_refresh_seconds",
            "Wall time of the symbol's last liquidation-gauge computation (reads included)",
            ["symbol"],
            registry=r,
        )
        self.liquidation_refreshes = Counter(
            "liqmon_liquidation_refreshes_total",
            "Liquidation-gauge computations finished (gauges set, cluster alert judged)",
            ["symbol"],
            registry=r,
        )
        self.liquidation_book_positions = Gauge(
            "liqmon_liquidation_book_positions",
            "Open positions in the symbol's liquidation book at its last gauge computation",
            ["symbol"],
            registry=r,
        )
        self.feed_age = Gauge(
            "liqmon_feed_age_seconds",
            "Seconds since the last accepted mark",
            ["symbol"],
            registry=r,
        )
        self.feed_stale = Gauge(
            "liqmon_feed_stale", "1 while the symbol's mark is stale", ["symbol"], registry=r
        )
        self.liquidation_hold = Gauge(
            "liqmon_liquidation_hold",
            "1 while liquidations wait for mark and index to agree",
            ["symbol"],
            registry=r,
        )
        self.evaluation_errors = Counter(
            "liqmon_evaluation_errors_total",
            "Unexpected errors while evaluating",
            ["stage"],
            registry=r,
        )
        self.outbox_length = Gauge(
            "liqmon_outbox_length", "Events waiting for the broker", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "liqmon_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for the broker",
            registry=r,
        )
        self.mqtt_takeovers = Counter(
            "liqmon_mqtt_takeovers_total",
            "MQTT connections the broker closed within 5 s of accepting them "
            "(another client with the same client id takes them over)",
            registry=r,
        )
        self.ready = Gauge("liqmon_ready", "1 when Redis and MQTT are connected", registry=r)
        self.redis_outage = Gauge(
            "liqmon_redis_outage",
            "1 while Redis is in this outage: unreachable, no_reply (silent), out_of_memory,"
            " data_lost (restarted empty or flushed; until the book is reloaded)",
            ["reason"],
            registry=r,
        )
        # The name says "evaluation" for the users' dashboards and alerts that
        # query it; what it measures starts at the tick's receipt.
        self.tick_seconds = Histogram(
            "liqmon_tick_evaluation_seconds",
            "Seconds from a mark tick's receipt by the intake (so its wait in the tick queue"
            " counts) to its state and events being committed to Redis and the outbox;"
            " publishing to MQTT is not included",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.tick_worker_seconds = Histogram(
            "liqmon_tick_worker_seconds",
            "Seconds from a tick worker taking a mark tick's batch (after its wait in the"
            " tick queue) to the tick's state and events being committed to Redis and the outbox",
            buckets=TICK_BUCKETS,
            registry=r,
        )

        r.register(_MqttCounters())

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


async def render_in_turns(registry: CollectorRegistry) -> bytes:
    """``registry`` in the text exposition format, one metric family at a time, giving the
    event loop back between families.

    Hundreds of symbols' series take tens of milliseconds to render. In a
    thread that time holds the GIL against the event loop, which then waits up
    to a switch interval each time it wakes; in turns, a tick waits for one
    family at most.
    """
    parts = []
    for family in registry.collect():
        parts.append(generate_latest(_Family(family)))
        await asyncio.sleep(0)
    return b"".join(parts)


class _Family:
    """One collected metric family, as something :func:`generate_latest` can render."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterator[Metric]:
        yield self._family


class _MqttCounters(Collector):
    """What the MQTT clients of this process noticed and survived (`bus.client.counters`)."""

    def collect(self) -> Iterator[Metric]:
        counters = mqtt.counters
        yield CounterMetricFamily(
            "liqmon_mqtt_sessions_lost",
            "Reconnects on which the broker had lost this persistent session (its queue gone)",
            value=counters.sessions_lost,
        )
        yield CounterMetricFamily(
            "liqmon_mqtt_qos0_dropped",
            "QoS 0 messages dropped because the intake was read_ahead messages behind",
            value=counters.qos0_dropped,
        )
        yield CounterMetricFamily(
            "liqmon_mqtt_subscriptions_downgraded",
            "Subscriptions the broker granted at QoS 0 only",
            value=counters.subscriptions_downgraded,
        )
