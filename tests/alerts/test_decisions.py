"""The forwarder's pure parts: filters, folding, templates, signatures, PagerDuty, policy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from alert_samples import alert, event, message

from monitor.alerts import pagerduty, signing, templates
from monitor.alerts.filters import accepts, topic_filters
from monitor.alerts.folding import RateWindow, summarize
from monitor.alerts.items import Item, item_of
from monitor.alerts.policy import Verdict, backoff_s, retry_after_s, verdict
from monitor.config.model import AlertRoute

pytestmark = pytest.mark.unit


def item(document: dict[str, Any], prefix: str = "liqmon") -> Item:
    found = item_of(*message(prefix, document))
    assert found is not None
    return found


def route(**keys: Any) -> AlertRoute:
    return AlertRoute(name="r", type="pagerduty", routing_key_env="PD", **keys)


def test_an_item_keeps_the_payload_as_published_and_its_key() -> None:
    """The webhook posts the bytes that came off the bus; the key is the event_id."""
    topic, payload = message("liqmon", event(7))
    found = item_of(topic, payload)
    assert found is not None
    assert (payload, "pos-7:1:1", "liquidation") == (found.payload, found.key, found.type)
    assert Decimal("100000") == found.notional
    assert item_of(topic, b"not json") is None
    assert item_of(topic, b'{"type": "liquidation"}') is None


def test_filters_take_types_symbols_accounts_and_minimums() -> None:
    """Each filter leaves out what it names; a list left empty takes everything."""
    big = item(event(1, "margin_call", qty="3", mark="50000"))  # notional 150000
    small = item(event(2, "margin_call", qty="1", mark="50000", account="acct-2"))
    assert accepts(route(), big)
    assert not accepts(route(types=("liquidation",)), big)
    assert not accepts(route(symbols=("ETHUSDT",)), big)
    assert accepts(route(accounts=("acct-2",)), small)
    assert not accepts(route(accounts=("acct-2",)), big)
    assert accepts(route(min_notional=Decimal("100000")), big)
    assert not accepts(route(min_notional=Decimal("100000")), small)
    assert accepts(route(min_margin_ratio=Decimal("1")), big)
    assert not accepts(route(min_margin_ratio=Decimal("1.5")), big)


def test_minimums_keep_price_alerts_but_accounts_do_not() -> None:
    """A price alert has no notional or ratio: minimums let it through; it has no account."""
    stale = item(alert("feed_stale"))
    assert accepts(route(min_notional=Decimal("1"), min_margin_ratio=Decimal("1")), stale)
    assert not accepts(route(accounts=("acct-1",)), stale)


def test_a_route_subscribes_to_its_types_only() -> None:
    """The session asks the broker for the route's types; other filters are dropped."""
    wanted, dropped = topic_filters("p", ("liquidation", "feed_stale"))
    assert ["p/events/+/+/liquidation", "p/alerts/+/feed_stale"] == wanted
    assert "p/events/#" in dropped and "p/events/+/+/liquidation" not in dropped
    assert ["p/events/#", "p/alerts/+/#"] == topic_filters("p", ())[0]


def test_the_rate_window_delivers_its_first_items_and_folds_the_rest() -> None:
    """Rule 1: three per ten seconds; the fourth folds; a new window starts afresh."""
    window = RateWindow(max_per_window=3, window_s=10.0)
    assert [True, True, True, False, False] == [window.admit(100.0 + i) for i in range(5)]
    assert window.admit(110.0)


def test_a_burst_becomes_one_summary_with_totals() -> None:
    """Rule 2: per type and symbol, the count and total notional, every key named."""
    folded = [item(event(n, qty="1", mark="50000")) for n in range(312)]
    folded.append(item(event(999, "margin_call", symbol="ETHUSDT", qty="10", mark="3000")))
    summary = summarize("desk", 1_700_000_000_000, 10.0, folded)
    assert "fold:1700000000000" == summary.key
    doc = orjson.loads(summary.payload)
    expected = (
        "312 liquidations on BTCUSDT (notional 15600000); "
        "1 margin_call on ETHUSDT (notional 30000) in the last 10 s"
    )
    assert expected == doc["text"] == templates.render(None, summary)
    assert (313, "15630000", 313) == (doc["count"], doc["notional"], len(doc["keys"]))
    again = item_of("", summary.payload)
    assert again is not None and summary.key == again.key


def test_the_issue_template_renders_an_event() -> None:
    """The README's Slack template, filled from a margin call; a missing field reads '-'."""
    template = (
        "{type} {symbol} {side} {qty} @ {mark_price} (liq {liquidation_price}) acct {account}"
    )
    text = templates.render(template, item(event(1, "margin_call")))
    assert "margin_call BTCUSDT long 2 @ 50000 (liq 49500) acct acct-1" == text
    assert "feed_stale BTCUSDT - age_s=12.000" == templates.render(
        "{type} {symbol} {side} {detail}", item(alert("feed_stale"))
    )
    assert templates.check("{type.__class__}") is not None
    assert templates.check("{type") is not None
    assert templates.check(template) is None


def test_a_signature_verifies_and_a_stale_or_altered_one_does_not() -> None:
    """HMAC-SHA256 over '{timestamp}.{body}', compared in constant time, within 300 s."""
    body = b'{"event_id":"pos-1:1:1"}'
    headers = signing.headers(b"s3cret", "pos-1:1:1", body, 1_700_000_000.5)
    assert "1700000000" == headers["X-Liqmon-Timestamp"]
    signed = headers["X-Liqmon-Signature"]
    assert signing.verify(b"s3cret", body, "1700000000", signed, 1_700_000_100)
    assert not signing.verify(b"s3cret", body, "1700000000", signed, 1_700_000_400)
    assert not signing.verify(b"s3cret", body + b" ", "1700000000", signed, 1_700_000_100)
    assert not signing.verify(b"other", body, "1700000000", signed, 1_700_000_100)


def test_pagerduty_opens_and_closes_an_episode_by_one_dedup_key() -> None:
    """Rule 1: feed_stale triggers and feed_resumed resolves '{symbol}:feed_stale'."""
    stale = pagerduty.document("KEY", item(alert("feed_stale")), "stale", "liqmon")
    resumed = pagerduty.document("KEY", item(alert("feed_resumed")), "back", "liqmon")
    assert ("trigger", "BTCUSDT:feed_stale", "critical") == (
        stale["event_action"],
        stale["dedup_key"],
        stale["payload"]["severity"],
    )
    expected = {"routing_key": "KEY", "event_action": "resolve", "dedup_key": "BTCUSDT:feed_stale"}
    assert expected == resumed
    call = pagerduty.document("KEY", item(event(4, "margin_call")), "m", "liqmon")
    cleared = pagerduty.document("KEY", item(event(4, "margin_call_cleared")), "c", "liqmon")
    assert "pos-4:margin_call" == call["dedup_key"] == cleared["dedup_key"]


def test_pagerduty_keeps_one_cluster_incident_per_side() -> None:
    """liquidation_cluster triggers and its clear resolves '{symbol}:liquidation_cluster:{side}'."""
    raised = {**alert("liquidation_cluster"), "side": "long"}
    cleared = {**alert("liquidation_cluster_cleared"), "side": "long"}
    short = {**alert("liquidation_cluster"), "side": "short"}
    opened = pagerduty.document("KEY", item(raised), "cluster", "liqmon")
    closed = pagerduty.document("KEY", item(cleared), "gone", "liqmon")
    other = pagerduty.document("KEY", item(short), "cluster", "liqmon")
    assert ("trigger", "BTCUSDT:liquidation_cluster:long") == (
        opened["event_action"],
        opened["dedup_key"],
    )
    assert ("resolve", "BTCUSDT:liquidation_cluster:long") == (
        closed["event_action"],
        closed["dedup_key"],
    )
    assert "BTCUSDT:liquidation_cluster:short" == other["dedup_key"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.ACCEPTED),
        (202, Verdict.ACCEPTED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (301, Verdict.REFUSED),
        (400, Verdict.REFUSED),
        (401, Verdict.REFUSED),
        (404, Verdict.REFUSED),
    ],
)
def test_what_an_answer_means(status: int, expected: Verdict) -> None:
    """2xx accepted; 408, 429 and 5xx retried; any other status refused."""
    assert expected == verdict(status)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """Both forms of Retry-After; nonsense is ignored."""
    assert 3.0 == retry_after_s("3", 0.0)
    assert 30.0 == retry_after_s("Tue, 14 Nov 2023 22:13:50 GMT", 1_700_000_000.0)
    assert retry_after_s("soon", 0.0) is None
    assert retry_after_s(None, 0.0) is None


def test_backoff_doubles_with_equal_jitter_up_to_the_cap() -> None:
    """Half the delay is fixed, half drawn; it stops growing at the cap."""
    assert [0.25, 0.5, 1.0] == [backoff_s(n, 0.5, 30.0, 0.0) for n in (1, 2, 3)]
    assert 0.5 <= backoff_s(2, 0.5, 30.0, 0.99) < 1.0
    assert 30.0 == backoff_s(40, 0.5, 30.0, 1.0)


def test_a_format_spec_that_does_not_fit_falls_back_to_the_default() -> None:
    """'{qty:.2f}' on a decimal string cannot format: the default line is sent instead."""
    text = templates.render("{qty:.2f}", item(event(1, "margin_call")))
    assert text.startswith("margin_call BTCUSDT long 2 @ 50000")
