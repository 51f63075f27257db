"""Parsers for everything that arrives from outside, and the wire format of Decimals.

Each parser either returns validated values or raises
:class:`monitor.core.errors.Rejection` with a stable ``reason`` token:

=====================  ====================================================
reason                 meaning
=====================  ====================================================
payload_too_large      the message exceeds ``limits.max_payload_bytes``
malformed_json         not JSON (or JSON with NaN/Infinity literals)
not_an_object          a position or price that is not a JSON object
batch_too_large        a position array longer than ``limits.max_batch``
missing_field          a required field is absent
unknown_field          a field that is not part of the schema
bad_type               a field of the wrong JSON type
bad_decimal            a price, quantity or margin that is not a decimal, or
                       has more than 40 digits before or after the point
non_finite             NaN or infinite
non_positive           a price or margin ≤ 0, or a negative quantity
bad_seq                ``seq`` is not an integer from 0 to 2**63 - 1
bad_ts                 ``ts`` is not an integer from 0 to 2**63 - 1 (epoch ms)
unknown_side           ``side`` is neither ``long`` nor ``short``
unknown_symbol         no contract (tier table) is configured for the symbol
bad_name               id, account or symbol unsafe as a topic level
=====================  ====================================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from feeds.tick import PriceKind, PriceTick
from monitor.core.errors import Rejection
from monitor.core.margin import Side
from monitor.core.position import PositionUpdate

MAX_NAME_LENGTH = 64
MAX_ID_LENGTH = 128
MAX_DIGITS = 40
"""Digits a decimal may have before and after the point: far beyond any real price,
size or margin, and small enough that the margin math can never overflow."""
MAX_INTEGER = 2**63 - 1
"""The largest ``seq`` or ``ts``: what Redis and the event JSON can carry."""

_POSITION_FIELDS = frozenset(
    {"id", "account", "symbol", "side", "qty", "entry_price", "margin", "seq"}
)
_PRICE_FIELDS = frozenset({"price", "ts"})
_SIDES = {side.value: side for side in Side}
# Topic levels may not hold MQTT wildcards or separators; control characters
# and spaces have no business in identifiers either.
_NAME = re.compile(r"[A-Za-z0-9._:@=-]+")


def decimal_str(value: Decimal) -> str:
    """A Decimal as a plain decimal string (never exponent notation)."""
    # str() is the fast path (every event carries a dozen of these); it
    # writes an exponent only for large exponents or tiny magnitudes, and
    # the special values, which go the slow way.
    text = str(value)
    if "E" in text or "n" in text or "N" in text:
        return _plain(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _plain(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def check_name(kind: str, value: object, max_length: int = MAX_NAME_LENGTH) -> str:
    """``value`` if it is a topic-safe identifier, else a ``bad_name`` rejection."""
    if not isinstance(value, str):
        raise Rejection("bad_type", f"{kind} must be a string")
    if not value or len(value) > max_length or not _NAME.fullmatch(value):
        raise Rejection(
            "bad_name",
            f"{kind} {value[:80]!r} must be 1-{max_length} characters of "
            "letters, digits and ._:@=- (no '+', '#', '/', spaces)",
        )
    return value


def in_range(number: Decimal) -> bool:
    """True when a finite ``number`` has at most :data:`MAX_DIGITS` digits before and after
    the point (so it prints, and takes part in the margin math, at bounded cost)."""
    exponent = number.as_tuple().exponent
    return isinstance(exponent, int) and -MAX_DIGITS <= exponent and number.adjusted() < MAX_DIGITS


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        # An exponent beyond what any Decimal can hold.
        raise ValueError(f"number {text[:40]} is out of range") from None


def load_json(raw: bytes, max_bytes: int) -> Any:
    """Decode a JSON document with exact Decimals, enforcing the size limit."""
    if len(raw) > max_bytes:
        raise Rejection("payload_too_large", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return json.loads(raw, parse_float=_json_number, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise Rejection("malformed_json", str(error)[:200]) from None


def _decimal(field: str, value: object) -> Decimal:
    # A text first: what nearly every line holds.
    text: str | None = None
    if isinstance(value, str):
        text = value.strip()
    # A tuple, not ``int | Decimal``: the union is built anew on every call.
    elif isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise Rejection("bad_type", f"{field} must be a decimal string or a number")
    try:
        number = Decimal(value if text is None else text)
    except InvalidOperation:
        raise Rejection("bad_decimal", f"{field} {str(value)[:40]!r} is not a decimal") from None
    if not number.is_finite():
        raise Rejection("non_finite", f"{field} must be finite, got {value}")
    # A text of at most MAX_DIGITS characters without an exponent cannot hold
    # more digits than that on either side of the point: no need to ask.
    short = text is not None and len(text) <= MAX_DIGITS and "e" not in text and "E" not in text
    if not short and not in_range(number):
        raise Rejection(
            "bad_decimal",
            f"{field} {str(value)[:40]!r} is out of range "
            f"(at most {MAX_DIGITS} digits before or after the point)",
        )
    return number


def _positive(field: str, value: object) -> Decimal:
    number = _decimal(field, value)
    if number <= 0:
        raise Rejection("non_positive", f"{field} must be positive, got {decimal_str(number)}")
    return number


def _integer(field: str, value: object, reason: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INTEGER:
        shown = str(value) if isinstance(value, int | Decimal) else repr(value)
        raise Rejection(
            reason, f"{field} must be an integer from 0 to {MAX_INTEGER}, got {shown[:40]}"
        )
    return value


def _check_fields(obj: dict[str, Any], allowed: frozenset[str], required: frozenset[str]) -> None:
    keys = obj.keys()
    if keys == allowed and (required is allowed or keys >= required):
        return
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Rejection("unknown_field", f"unexpected field(s) {', '.join(extra)[:200]}")
    missing = sorted(required - set(obj))
    if missing:
        raise Rejection("missing_field", f"missing field(s) {', '.join(missing)}")


def position_from_object(obj: object, symbols: Container[str]) -> PositionUpdate:
    """Validate one position object (already decoded JSON)."""
    if not isinstance(obj, dict):
        raise Rejection("not_an_object", "a position must be a JSON object")
    _check_fields(obj, _POSITION_FIELDS, _POSITION_FIELDS)
    position_id = check_name("id", obj["id"], MAX_ID_LENGTH)
    account = check_name("account", obj["account"])
    symbol = check_name("symbol", obj["symbol"])
    if symbol not in symbols:
        raise Rejection("unknown_symbol", f"no contract is configured for symbol {symbol}")
    try:
        side = _SIDES[obj["side"]]
    except (KeyError, TypeError):
        raise Rejection(
            "unknown_side", f"side must be long or short, got {obj['side']!r}"
        ) from None
    qty = _decimal("qty", obj["qty"])
    if qty < 0:
        raise Rejection("non_positive", f"qty must not be negative, got {decimal_str(qty)}")
    seq = _integer("seq", obj["seq"], "bad_seq")
    if qty == 0:
        # A close carries no margin to check; keep whatever was sent if it is a decimal.
        entry = _decimal("entry_price", obj["entry_price"])
        margin = _decimal("margin", obj["margin"])
    else:
        entry = _positive("entry_price", obj["entry_price"])
        margin = _positive("margin", obj["margin"])
    return PositionUpdate(position_id, account, symbol, side, qty, entry, margin, seq)


def positions_from_payload(
    raw: bytes, symbols: Container[str], max_bytes: int, max_batch: int
) -> Iterator[PositionUpdate | Rejection]:
    """Each position of a payload (one object or an array), or the Rejection for it.

    A malformed payload as a whole raises; within an array, one bad object is
    yielded as its Rejection and does not spoil the others.
    """
    document = load_json(raw, max_bytes)
    items = document if isinstance(document, list) else [document]
    if len(items) > max_batch:
        raise Rejection(
            "batch_too_large", f"{len(items)} positions exceeds the limit of {max_batch}"
        )
    for item in items:
        try:
            yield position_from_object(item, symbols)
        except Rejection as rejection:
            yield rejection


def price_from_payload(
    raw: bytes, symbol: str, kind: PriceKind, source: str, max_bytes: int
) -> PriceTick:
    """Validate a ``{"price": ..., "ts": ...}`` payload for ``symbol``."""
    document = load_json(raw, max_bytes)
    if not isinstance(document, dict):
        raise Rejection("not_an_object", "a price must be a JSON object")
    _check_fields(document, _PRICE_FIELDS, _PRICE_FIELDS)
    price = _positive("price", document["price"])
    ts_ms = _integer("ts", document["ts"], "bad_ts")
    return PriceTick(symbol=symbol, kind=kind, price=price, ts_ms=ts_ms, source=source)
