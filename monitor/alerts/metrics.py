"""The forwarder's Prometheus metrics, one registry per forwarder (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds, in seconds, of the delivery latency histogram's buckets."""


class AlertMetrics:
    """Per route: delivered, retried, folded, dead-lettered; latency; the oldest undelivered."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivered = Counter(
            "liqmon_alerts_delivered_total",
            "Items the route's sink accepted (a folded summary counts once)",
            ["route"],
            registry=r,
        )
        self.retried = Counter(
            "liqmon_alerts_retried_total",
            "Attempts that failed and were retried (timeout, no connection, 408, 429, 5xx)",
            ["route"],
            registry=r,
        )
        self.folded = Counter(
            "liqmon_alerts_folded_total",
            "Items folded into a summary by the route's rate limit",
            ["route"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "liqmon_alerts_dead_lettered_total",
            "Items put in the route's dead letters (refused, or past the retention)",
            ["route"],
            registry=r,
        )
        self.repeats = Counter(
            "liqmon_alerts_repeats_skipped_total",
            "Items received again after they were delivered (not sent again)",
            ["route"],
            registry=r,
        )
        self.filtered = Counter(
            "liqmon_alerts_filtered_total",
            "Items the route's filters left out",
            ["route"],
            registry=r,
        )
        self.latency = Histogram(
            "liqmon_alerts_delivery_seconds",
            "From receipt off the bus to the sink's acceptance, retries included",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.oldest = Gauge(
            "liqmon_alerts_oldest_undelivered_seconds",
            "Age of the oldest item received and not yet delivered or dead-lettered (0: none)",
            ["route"],
            registry=r,
        )
        self.last_delivered = Gauge(
            "liqmon_alerts_last_delivered_timestamp_seconds",
            "When the route's sink last accepted an item (epoch seconds)",
            ["route"],
            registry=r,
        )
        self.connected = Gauge(
            "liqmon_alerts_connected",
            "1 while the route's MQTT session is connected",
            ["route"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
