"""The MQTT topics: each spelled as subscribers and publishers see it on the wire."""

from __future__ import annotations

import pytest

from monitor.core import topics
from monitor.core.clusters import ClusterAlert

pytestmark = pytest.mark.unit


def test_price_topics_and_their_filters() -> None:
    """A tick goes to {prefix}/prices/{symbol}/{kind}; the filters match every symbol."""
    assert "liqmon/prices/BTCUSDT/mark" == topics.prices("liqmon", "BTCUSDT", "mark")
    assert "liqmon/prices/+/index" == topics.price_filter("liqmon", "index")


@pytest.mark.parametrize(
    ("topic", "parts"),
    [
        ("liqmon/prices/BTCUSDT/mark", ("BTCUSDT", "mark")),
        ("other/prices/ETHUSDT/index", ("ETHUSDT", "index")),
        ("liqmon/prices/BTCUSDT/last", None),
        ("liqmon/prices/BTCUSDT", None),
        ("liqmon/prices/BTCUSDT/mark/extra", None),
        ("liqmon/positions", None),
        ("liqmon/events/acct-1/BTCUSDT/mark", None),
    ],
)
def test_price_parts_reads_symbol_and_kind(topic: str, parts: tuple[str, str] | None) -> None:
    """Only a four-level price topic of a mark or index tick yields (symbol, kind)."""
    assert parts == topics.price_parts(topic)


def test_price_parts_reads_what_prices_builds() -> None:
    """Building a price topic and reading it back gives the symbol and kind again."""
    assert ("SOLUSDT", "index") == topics.price_parts(topics.prices("p", "SOLUSDT", "index"))


def test_positions_resync_and_alerts() -> None:
    """Positions come in on one topic; re-sync requests and alerts go out on theirs."""
    assert "liqmon/positions" == topics.positions("liqmon")
    assert "liqmon/resync" == topics.resync("liqmon")
    assert "liqmon/alerts/BTCUSDT/price_deviation" == topics.alerts(
        "liqmon", "BTCUSDT", "price_deviation"
    )
    assert "liqmon/alerts/BTCUSDT/liquidation_cluster" == topics.alerts(
        "liqmon", "BTCUSDT", ClusterAlert.RAISED
    )


def test_event_topic_and_filters() -> None:
    """An event's topic names account, symbol and type; a filter leaves any of them open."""
    assert "liqmon/events/acct-1/BTCUSDT/liquidation" == topics.events(
        "liqmon", "acct-1", "BTCUSDT", "liquidation"
    )
    assert "liqmon/events/+/+/+" == topics.events_filter("liqmon")
    assert "liqmon/events/acct-1/+/margin_call" == topics.events_filter(
        "liqmon", account="acct-1", event_type="margin_call"
    )
    assert "liqmon/events/#" == topics.all_events("liqmon")
