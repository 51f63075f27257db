"""The webhook's signature: HMAC-SHA256 over ``{timestamp}.{body}`` with the route's secret.

Headers sent with every POST::

    Idempotency-Key:     the event_id (or alert_id, or summary key)
    X-Liqmon-Timestamp:  seconds since the epoch, when this attempt was signed
    X-Liqmon-Signature:  sha256=HEX

A receiver recomputes the HMAC over the timestamp, a dot and the raw body,
compares in constant time, and refuses a timestamp older (or newer) than
its tolerance, so a captured request cannot be replayed later
(:func:`verify` is the recipe the README shows).
"""

from __future__ import annotations

import hashlib
import hmac

TOLERANCE_S = 300
"""The default largest age of a signed timestamp a receiver accepts."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=HEX`` of ``{timestamp}.{body}`` keyed with ``secret``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def headers(secret: bytes, key: str, body: bytes, now_s: float) -> dict[str, str]:
    """The headers of one signed attempt at ``now_s``."""
    timestamp = str(int(now_s))
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "X-Liqmon-Timestamp": timestamp,
        "X-Liqmon-Signature": signature(secret, timestamp, body),
    }


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str,
    signed: str,
    now_s: float,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """True when ``signed`` is ``body``'s signature at ``timestamp``, within ``tolerance_s``."""
    try:
        age_s = abs(now_s - int(timestamp))
    except ValueError:
        return False
    expected = signature(secret, timestamp, body)
    return age_s <= tolerance_s and hmac.compare_digest(expected, signed)
