"""The per-route rate limit: past ``max_per_window`` in a window, items fold into one summary.

Rule 1: a window opens with the first item after the last one closed and
lasts ``window_s``. Its first ``max_per_window`` items are delivered one by
one; the rest are *folded*: kept (in Redis, by the shell) and delivered
together as one summary once the window has closed.

Rule 2: a summary says, per (type, symbol), how many items were folded and
their total notional, and names every folded key, so a receiver can tell
what it stands for ("312 liquidations on BTCUSDT in the last 10 s").

Rule 3: a summary's key is ``fold:{window_ms}`` (the epoch ms of the first
fold of its window, stored with the folded items): the same summary sent
again after a crash carries the same key.

The clock is an argument everywhere: nothing here reads the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from monitor.alerts.items import SUMMARY, Item
from monitor.core.wire import decimal_str


@dataclass(slots=True)
class RateWindow:
    """Rule 1's counter; ``admit(now_s)`` says deliver (True) or fold (False)."""

    max_per_window: int
    window_s: float
    opened_s: float | None = None
    admitted: int = 0

    def admit(self, now_s: float) -> bool:
        """True to deliver the item arriving at ``now_s`` now; False to fold it."""
        if self.opened_s is None or now_s >= self.opened_s + self.window_s:
            self.opened_s, self.admitted = now_s, 0
        if self.admitted < self.max_per_window:
            self.admitted += 1
            return True
        return False


def summary_key(window_ms: int) -> str:
    """Rule 3: the key of the summary of the window whose first fold was at ``window_ms``."""
    return f"fold:{window_ms}"


def _plural(kind: str, count: int) -> str:
    return kind if count == 1 else f"{kind}s"


def summarize(route: str, window_ms: int, window_s: float, items: Sequence[Item]) -> Item:
    """The summary item of ``items`` folded on ``route`` (Rules 2 and 3)."""
    groups: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for item in items:
        count, total = groups.get((item.type, item.symbol), (0, Decimal(0)))
        groups[item.type, item.symbol] = (count + 1, total + (item.notional or 0))
    ordered = sorted(groups.items(), key=lambda group: (-group[1][0], group[0]))
    rows = [
        {"type": kind, "symbol": symbol, "count": count, "notional": decimal_str(total)}
        for (kind, symbol), (count, total) in ordered
    ]
    seconds = decimal_str(Decimal(repr(window_s)))
    parts = [
        f"{count} {_plural(kind, count)} on {symbol}"
        + (f" (notional {decimal_str(total)})" if total else "")
        for (kind, symbol), (count, total) in ordered
    ]
    total = sum((total for _, total in groups.values()), Decimal(0))
    text = "; ".join(parts) + f" in the last {seconds} s"
    key = summary_key(window_ms)
    symbols = {item.symbol for item in items}
    doc: dict[str, Any] = {
        "schema": 1,
        "type": SUMMARY,
        "summary_id": key,
        "route": route,
        "symbol": symbols.pop() if len(symbols) == 1 else "",
        "window_start": window_ms,
        "window_s": window_s,
        "count": len(items),
        "notional": decimal_str(total),
        "groups": rows,
        "keys": sorted(item.key for item in items),
        "text": text,
    }
    return Item(
        key=key,
        type=SUMMARY,
        symbol=doc["symbol"],
        account=None,
        topic="",
        payload=orjson.dumps(doc),
        doc=doc,
    )
