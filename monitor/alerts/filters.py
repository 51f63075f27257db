"""Which items a route takes: its types, symbols, accounts, minimum notional and margin ratio.

A list left empty takes everything. The minimums apply to position events:
an event without the field is left out by a minimum; a price alert (which
has no notional and no ratio) is not. A folded summary has passed the
filters already, item by item.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts.items import SUMMARY, Item
from monitor.config.model import AlertRoute
from monitor.core import topics
from monitor.core.clusters import ClusterAlert
from monitor.core.guards import AlertType
from monitor.core.status import EventType


def accepts(route: AlertRoute, item: Item) -> bool:
    """True when ``route`` delivers ``item``."""
    if item.type == SUMMARY:
        return True
    if route.types and item.type not in route.types:
        return False
    if route.symbols and item.symbol not in route.symbols:
        return False
    if item.is_alert:
        return not route.accounts
    if route.accounts and item.account not in route.accounts:
        return False
    if route.min_notional is not None:
        notional = item.notional
        if notional is None or notional < route.min_notional:
            return False
    if route.min_margin_ratio is not None:
        ratio = item.decimal("margin_ratio")
        if ratio is None or ratio < route.min_margin_ratio:
            return False
    return True


def topic_filters(prefix: str, types: Sequence[str]) -> tuple[list[str], list[str]]:
    """The MQTT filters a route's session subscribes to, and those it drops.

    Only the types the route takes (every event and alert when it names none),
    so the broker queues nothing else for it while it is away. The second
    list is every other filter a route's session may hold from an older
    configuration: unsubscribing one that is not held is harmless.
    """
    events = [t.value for t in EventType]
    alerts = [*(t.value for t in AlertType), *(t.value for t in ClusterAlert)]
    every = [
        topics.all_events(prefix),
        topics.alerts(prefix, topics.ANY, "#"),
        *(topics.events_filter(prefix, event_type=kind) for kind in events),
        *(topics.alerts(prefix, topics.ANY, kind) for kind in alerts),
    ]
    if not types:
        wanted = every[:2]
    else:
        wanted = [
            topics.events_filter(prefix, event_type=kind)
            if kind in events
            else topics.alerts(prefix, topics.ANY, kind)
            for kind in types
        ]
    return wanted, [found for found in every if found not in wanted]
