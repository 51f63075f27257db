"""What a sink's answer means, and how long to wait before the next attempt.

==========================================  =========================================
answer                                      verdict
==========================================  =========================================
2xx                                         accepted: recorded as delivered
408, 429, 5xx; a timeout; no connection     retry, after the backoff (or Retry-After,
                                            whichever is longer), until the retention
any other status (4xx, a 3xx not followed)  refused: to the route's dead letters now
==========================================  =========================================

Backoff: exponential from ``first_s``, doubling to ``cap_s``, with equal
jitter (half the delay fixed, half drawn), so many routes or forwarders
retrying one sink do not knock in step.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from enum import Enum


class Verdict(Enum):
    """What to do after an answer."""

    ACCEPTED = "accepted"
    RETRY = "retry"
    REFUSED = "refused"


RETRYABLE = frozenset({408, 429})


def verdict(status: int) -> Verdict:
    """The table above, for an HTTP status."""
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if status in RETRYABLE or status >= 500:
        return Verdict.RETRY
    return Verdict.REFUSED


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


def backoff_s(attempt: int, first_s: float, cap_s: float, draw: float) -> float:
    """The wait after failed attempt number ``attempt`` (1 = the first); ``draw`` in [0, 1)."""
    delay = min(cap_s, first_s * float(1 << min(attempt - 1, 32)))
    return delay / 2 + draw * delay / 2
