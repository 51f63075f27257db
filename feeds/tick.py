"""The one price-tick type every feed normalizes to."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class PriceKind(StrEnum):
    """Which price a tick carries: decisions use the mark, the index is reported."""

    MARK = "mark"
    INDEX = "index"


@dataclass(frozen=True, slots=True)
class PriceTick:
    """A normalized price observation from any source.

    ``symbol`` is the configured symbol (not the venue's spelling), ``price`` is
    a finite positive Decimal, ``ts_ms`` is the source's own timestamp in epoch
    milliseconds, and ``source`` names the feed (``"mqtt"``, ``"binance"``, ...).
    """

    symbol: str
    kind: PriceKind
    price: Decimal
    ts_ms: int
    source: str
