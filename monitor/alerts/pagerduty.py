"""PagerDuty Events API v2 documents: an episode's incident opens and closes by itself.

Rule 1: the ``dedup_key`` names the episode, not the message:

=========================  =======================  ===========================
type                       action                   dedup_key
=========================  =======================  ===========================
feed_stale                 trigger                  ``{symbol}:feed_stale``
feed_resumed               resolve                  ``{symbol}:feed_stale``
price_deviation            trigger                  ``{symbol}:price_deviation``
price_deviation_cleared    resolve                  ``{symbol}:price_deviation``
liquidation_cluster        trigger                  ``{symbol}:liquidation_cluster:{side}``
liquidation_cluster_       resolve                  ``{symbol}:liquidation_cluster:{side}``
cleared
margin_call                trigger                  ``{position_id}:margin_call``
margin_call_cleared        resolve                  ``{position_id}:margin_call``
liquidation                trigger                  ``{position_id}:liquidation``
summary                    trigger                  the summary's key
=========================  =======================  ===========================

Rule 2: PagerDuty merges a trigger into the open incident of its dedup_key
and ignores a resolve of one already resolved, so a repeat (the same event
sent twice after a crash) changes nothing.

Reference: https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.alerts.items import SUMMARY, Item

RESOLVES = {
    "feed_resumed": "feed_stale",
    "price_deviation_cleared": "price_deviation",
    "margin_call_cleared": "margin_call",
    "liquidation_cluster_cleared": "liquidation_cluster",
}
"""A type that closes an episode, and the type that opened it."""

SEVERITY = {
    "feed_stale": "critical",
    "liquidation": "critical",
    "margin_call": "warning",
    "price_deviation": "warning",
    "liquidation_cluster": "warning",
    SUMMARY: "warning",
}


def dedup_key(item: Item) -> str:
    """Rule 1: the episode ``item`` opens or closes."""
    if item.type == SUMMARY:
        return item.key
    opened = RESOLVES.get(item.type, item.type)
    if item.is_alert:
        # The cluster alert has one episode per side; the price guards' have no side.
        side = item.doc.get("side")
        return f"{item.symbol}:{opened}" + (f":{side}" if isinstance(side, str) else "")
    return f"{item.doc.get('position_id', item.key)}:{opened}"


def action(item: Item) -> str:
    """``resolve`` for a type that closes an episode, else ``trigger``."""
    return "resolve" if item.type in RESOLVES else "trigger"


def document(routing_key: str, item: Item, summary: str, source: str) -> dict[str, Any]:
    """The Events API v2 request body for ``item`` (``summary`` is its one-line text)."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action(item),
        "dedup_key": dedup_key(item),
    }
    if event["event_action"] == "resolve":
        return event
    emitted = item.emitted_ms
    payload: dict[str, Any] = {
        "summary": summary[:1024],
        "source": source,
        "severity": SEVERITY.get(item.type, "warning"),
        "component": item.symbol or "liqmon",
        "group": item.account or "liqmon",
        "class": item.type,
        "custom_details": dict(item.doc),
    }
    if emitted is not None:
        payload["timestamp"] = datetime.fromtimestamp(emitted / 1000, UTC).isoformat()
    event["payload"] = payload
    return event
