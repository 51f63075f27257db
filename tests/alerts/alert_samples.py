"""Events and alerts shaped as liqmon publishes them, for the alert forwarder's tests."""

from __future__ import annotations

import time
from typing import Any

import orjson

from monitor.core import topics


def event(
    number: int,
    kind: str = "liquidation",
    *,
    symbol: str = "BTCUSDT",
    account: str = "acct-1",
    qty: str = "2",
    mark: str = "50000",
    ratio: str = "1.02",
    emitted_ms: int | None = None,
) -> dict[str, Any]:
    """A position event as :func:`monitor.core.evaluation._event` writes it (emitted now
    unless told)."""
    emitted_ms = int(time.time() * 1000) if emitted_ms is None else emitted_ms
    return {
        "schema": 1,
        "event_id": f"pos-{number}:1:1",
        "type": kind,
        "position_id": f"pos-{number}",
        "account": account,
        "symbol": symbol,
        "side": "long",
        "qty": qty,
        "entry_price": "52000",
        "margin": "3000",
        "position_seq": 1,
        "mark_price": mark,
        "index_price": mark,
        "price_ts": emitted_ms,
        "margin_balance": "100",
        "maintenance_margin": "102",
        "margin_ratio": ratio,
        "liquidation_price": "49500",
        "bankruptcy_price": "49000",
        "emitted_at": emitted_ms,
    }


def alert(kind: str, symbol: str = "BTCUSDT", episode_ms: int | None = None) -> dict[str, Any]:
    """A price guard's alert as :meth:`monitor.service.intake.Intake.alerts` writes it (its
    episode began a moment ago unless told)."""
    episode_ms = int(time.time() * 1000) - 10 if episode_ms is None else episode_ms
    return {
        "schema": 1,
        "alert_id": f"{symbol}:{kind}:{episode_ms}",
        "type": kind,
        "symbol": symbol,
        "detail": {"age_s": "12.000"},
        "emitted_at": episode_ms + 5,
    }


def message(prefix: str, document: dict[str, Any]) -> tuple[str, bytes]:
    """(topic, payload) of ``document`` on the bus under ``prefix``."""
    if "alert_id" in document:
        topic = topics.alerts(prefix, document["symbol"], document["type"])
    else:
        topic = topics.events(prefix, document["account"], document["symbol"], document["type"])
    return topic, orjson.dumps(document)
