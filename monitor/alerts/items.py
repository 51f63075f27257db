"""What a route delivers: one event or price alert as published, or a folded summary.

An :class:`Item` keeps the payload exactly as it came off the bus (a webhook
posts those bytes) and its decoded document (filters and templates read it).
Its :attr:`Item.key` is the ``event_id`` or ``alert_id`` the monitor gave it:
deterministic, so a repeat of one event carries the same key (the webhook's
``Idempotency-Key``, and what each route records as delivered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

SUMMARY = "summary"
"""The type of an item that stands for a folded burst (see :mod:`monitor.alerts.folding`)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to deliver: ``topic`` and ``payload`` as published, ``doc`` decoded."""

    key: str
    type: str
    symbol: str
    account: str | None
    topic: str
    payload: bytes
    doc: Mapping[str, Any]

    @property
    def emitted_ms(self) -> int | None:
        """When the monitor emitted it (epoch ms), if the payload says."""
        value = self.doc.get("emitted_at")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def is_alert(self) -> bool:
        """A price guard's alert (``alert_id``), not a position event."""
        return "alert_id" in self.doc

    def decimal(self, field: str) -> Decimal | None:
        """A decimal field of the document (``qty``, ``margin_ratio``...), None if absent."""
        value = self.doc.get(field)
        if not isinstance(value, str | int) or isinstance(value, bool):
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None

    @property
    def notional(self) -> Decimal | None:
        """``qty × mark_price`` of an event (None for an alert)."""
        qty, mark = self.decimal("qty"), self.decimal("mark_price")
        return None if qty is None or mark is None else qty * mark


def item_of(topic: str, payload: bytes) -> Item | None:
    """The item a bus message carries, or None when it is not an event or alert of liqmon."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    key = doc.get("event_id", doc.get("alert_id", doc.get("summary_id")))
    kind, symbol, account = doc.get("type"), doc.get("symbol"), doc.get("account")
    if not (isinstance(key, str) and key and isinstance(kind, str) and isinstance(symbol, str)):
        return None
    return Item(
        key=key,
        type=kind,
        symbol=symbol,
        account=account if isinstance(account, str) else None,
        topic=topic,
        payload=payload,
        doc=doc,
    )
