"""Pure helpers the venue parsers share: JSON, decimal prices, epoch milliseconds.

Each helper either returns a checked value or raises :class:`FrameError` with
the reason a dead-letter reader needs. Prices stay strings until they become
``Decimal``: a JSON number is refused, since it has already lost precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import orjson

from feeds.errors import FrameError, RejectReason

MIN_TS_MS = 946_684_800_000
"""2000-01-01 in epoch ms: anything earlier is seconds or garbage, not ms."""
MAX_TS_MS = 4_102_444_800_000
"""2100-01-01 in epoch ms: anything later is micro/nanoseconds or garbage."""


def load_json(frame: str | bytes) -> object:
    """Decode one frame; ``FrameError(not_json)`` if it is not JSON."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(RejectReason.NOT_JSON, _clip(frame)) from exc


def as_object(value: object, what: str) -> Mapping[str, object]:
    """``value`` as a JSON object, or ``FrameError(bad_shape)``."""
    if not isinstance(value, dict):
        raise FrameError(RejectReason.BAD_SHAPE, f"{what} is not an object")
    return value


def field(obj: Mapping[str, object], key: str) -> object:
    """``obj[key]``, or ``FrameError(missing_field)``."""
    try:
        return obj[key]
    except KeyError:
        raise FrameError(RejectReason.MISSING_FIELD, key) from None


def text(obj: Mapping[str, object], key: str) -> str:
    """A string field, or ``FrameError``."""
    value = field(obj, key)
    if not isinstance(value, str):
        raise FrameError(RejectReason.BAD_SHAPE, f"{key} is not a string")
    return value


def price(value: object, key: str) -> Decimal:
    """A venue's decimal string as a finite positive ``Decimal``."""
    if not isinstance(value, str):
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r} is not a decimal string")
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r}") from None
    if not parsed.is_finite() or parsed <= 0:
        raise FrameError(RejectReason.BAD_PRICE, f"{key}={value!r} is not finite and positive")
    return parsed


def epoch_ms(value: object, key: str) -> int:
    """Epoch milliseconds from an integer or a digit string (OKX sends strings)."""
    if isinstance(value, bool):
        raise FrameError(RejectReason.BAD_TIMESTAMP, f"{key}={value!r}")
    if isinstance(value, int):
        parsed = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        parsed = int(value)
    else:
        raise FrameError(RejectReason.BAD_TIMESTAMP, f"{key}={value!r}")
    if not MIN_TS_MS <= parsed < MAX_TS_MS:
        raise FrameError(RejectReason.BAD_TIMESTAMP, f"{key}={value!r} is not epoch ms")
    return parsed


def as_bytes(frame: str | bytes) -> bytes:
    """The raw frame as bytes, for ``reject``."""
    return frame.encode("utf-8", "replace") if isinstance(frame, str) else frame


def _clip(frame: str | bytes, limit: int = 80) -> str:
    shown = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    return shown if len(shown) <= limit else shown[:limit] + "…"
