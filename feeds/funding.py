"""The funding announcement every feed's funding parser normalizes to.

Venues publish, again and again until it passes, the *next* funding time of a
perpetual and the rate that will apply then (Binance's ``markPrice`` frames,
Bybit's tickers, OKX's ``funding-rate`` channel). The monitor holds the last
rate announced for each funding time and applies it when the time comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from feeds.errors import FrameError, RejectReason


@dataclass(frozen=True, slots=True)
class FundingNotice:
    """A funding time of a configured symbol and the rate announced for it.

    ``rate`` is a finite Decimal (positive: longs pay shorts); ``funding_ts_ms``
    the funding time in epoch milliseconds; ``source`` names the feed.
    """

    symbol: str
    rate: Decimal
    funding_ts_ms: int
    source: str


def rate(value: object, key: str) -> Decimal:
    """A venue's funding rate string as a finite ``Decimal`` (it may be zero or negative)."""
    if not isinstance(value, str):
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r} is not a decimal string")
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r}") from None
    if not parsed.is_finite():
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r} is not finite")
    return parsed
