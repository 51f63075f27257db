"""A position as operators see it: its record, its prices and, given a mark, its margin state.

One view serves ``liqmon positions list | show`` and the HTTP API, so the two
always agree on every field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from monitor.core.evaluation import Quote
from monitor.core.margin import Contract, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.wire import decimal_str


def describe(contract: Contract, record: PositionRecord, quote: Quote | None) -> dict[str, Any]:
    """A record with its prices and, given a mark, its live margin state."""
    position = record.position
    model = model_for(contract)
    liq = model.liquidation_price(position) if record.qty else None
    row: dict[str, Any] = {
        "id": record.id,
        "account": record.account,
        "symbol": record.symbol,
        "side": record.side.value,
        "qty": decimal_str(record.qty),
        "entry_price": decimal_str(record.entry_price),
        "margin": decimal_str(record.margin),
        "seq": record.seq,
        "status": record.status.value,
        "liquidation_price": decimal_str(liq) if liq is not None else None,
        "bankruptcy_price": None,
        "mark_price": None,
        "distance_pct": None,
        "margin_ratio": None,
    }
    if record.qty:
        bankrupt = model.bankruptcy_price(position)
        row["bankruptcy_price"] = decimal_str(bankrupt) if bankrupt is not None else None
    if quote is not None and record.qty:
        row["mark_price"] = decimal_str(quote.mark)
        try:
            row["margin_ratio"] = decimal_str(model.margin_ratio(position, quote.mark))
        except ValueError:
            row["margin_ratio"] = None
        if liq is not None:
            sign = 1 if record.side is Side.LONG else -1
            distance = sign * (quote.mark - liq) / quote.mark * 100
            row["distance_pct"] = decimal_str(distance.quantize(Decimal("0.01")))
    return row
