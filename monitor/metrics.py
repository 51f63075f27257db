"""Prometheus metrics, one registry per daemon (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.positions = Counter(
            "liqmon_position_updates_total", "Position versions by result", ["result"], registry=r
        )
        self.alerts = Counter(
            "liqmon_alerts_total", "Price-guard alerts raised", ["symbol", "type"], registry=r
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
        self.ready = Gauge("liqmon_ready", "1 when Redis and MQTT are connected", registry=r)
        self.redis_outage = Gauge(
            "liqmon_redis_outage",
            "1 while Redis is in this outage: unreachable, no_reply (silent), out_of_memory",
            ["reason"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            "liqmon_tick_evaluation_seconds",
            "Time from receiving a mark tick to its events being in the outbox",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
