"""Every MQTT topic liqmon publishes or subscribes to, built in this one module.

All live under the configured prefix (``[mqtt] topic_prefix``, ``liqmon`` by
default); ``+`` matches any one level in a filter, ``#`` any rest::

    {prefix}/prices/{symbol}/{kind}            in   a mark or index price tick
    {prefix}/positions                         in   position versions (one object or an array)
    {prefix}/funding/{symbol}                  in   a funding rate and its funding time
                                                    (symbols with apply_funding)
    {prefix}/events/{account}/{symbol}/{type}  out  margin_call, margin_call_cleared, liquidation,
                                                    funding_applied
    {prefix}/alerts/{symbol}/{type}            out  the price guards' alerts; liquidation_cluster
                                                    and liquidation_cluster_cleared, the
                                                    cluster alert (monitor.core.clusters)
    {prefix}/resync                            out  after Redis lost its data: send every open
                                                    position again

Names (prefix, account, symbol) are checked elsewhere (``monitor.core.wire.check_name``)
to hold no ``/``, ``+`` or ``#``; these functions only assemble them.
"""

from __future__ import annotations

ANY = "+"
"""The one-level wildcard of a topic filter."""


def prices(prefix: str, symbol: str, kind: str) -> str:
    """Where a ``kind`` (``mark`` or ``index``) price tick of ``symbol`` is published."""
    return f"{prefix}/prices/{symbol}/{kind}"


def price_filter(prefix: str, kind: str) -> str:
    """The filter of every symbol's ``kind`` price ticks."""
    return prices(prefix, ANY, kind)


def price_parts(topic: str) -> tuple[str, str] | None:
    """``(symbol, kind)`` of a price topic (whatever its prefix), or None for any other topic."""
    levels = topic.split("/")
    if len(levels) == 4 and levels[1] == "prices" and levels[3] in ("mark", "index"):
        return levels[2], levels[3]
    return None


def positions(prefix: str) -> str:
    """Where position versions are published."""
    return f"{prefix}/positions"


def funding(prefix: str, symbol: str) -> str:
    """Where ``symbol``'s funding rate and funding time are published."""
    return f"{prefix}/funding/{symbol}"


def funding_filter(prefix: str) -> str:
    """The filter of every symbol's funding messages."""
    return funding(prefix, ANY)


def funding_symbol(topic: str) -> str | None:
    """The symbol of a funding topic (whatever its prefix), or None for any other topic."""
    levels = topic.split("/")
    if len(levels) == 3 and levels[1] == "funding":
        return levels[2]
    return None


def events(prefix: str, account: str, symbol: str, event_type: str) -> str:
    """Where a position event of ``account`` on ``symbol`` is published."""
    return f"{prefix}/events/{account}/{symbol}/{event_type}"


def events_filter(prefix: str, account: str = ANY, symbol: str = ANY, event_type: str = ANY) -> str:
    """The topic filter for events of one account / symbol / type (``+`` = any)."""
    return events(prefix, account, symbol, event_type)


def all_events(prefix: str) -> str:
    """The filter of every event, whatever the depth of the levels below ``events``."""
    return f"{prefix}/events/#"


def alerts(prefix: str, symbol: str, alert_type: str) -> str:
    """Where an alert on ``symbol`` is published: a price guard's
    (:class:`~monitor.core.guards.AlertType`) or the liquidation-cluster alert
    (:class:`~monitor.core.clusters.ClusterAlert`)."""
    return f"{prefix}/alerts/{symbol}/{alert_type}"


def resync(prefix: str) -> str:
    """Where a re-sync of every open position is requested after Redis lost its data."""
    return f"{prefix}/resync"
