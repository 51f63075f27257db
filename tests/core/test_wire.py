"""The input parsers of monitor.core.wire: every rejection, exact decimals, and a fuzz test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.tick import PriceKind, PriceTick
from monitor.config.loading import load_settings
from monitor.core.errors import Rejection
from monitor.core.evaluation import Quote, apply_update
from monitor.core.margin import Side
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import RiskLimits
from monitor.core.wire import (
    MAX_INTEGER,
    decimal_str,
    positions_from_payload,
    price_from_payload,
)

pytestmark = pytest.mark.unit

SYMBOLS = frozenset({"BTCUSDT", "BTCUSD"})
MAX_BYTES = 1024
MAX_BATCH = 3
NAME_RULE = "characters of letters, digits and ._:@=- (no '+', '#', '/', spaces)"


def position(**changes: Any) -> dict[str, Any]:
    """A valid position object, with some fields changed (a value of ... drops the field)."""
    document: dict[str, Any] = {
        "id": "p-1001",
        "account": "acct-42",
        "symbol": "BTCUSDT",
        "side": "long",
        "qty": "0.5",
        "entry_price": "60000",
        "margin": "3000",
        "seq": 17,
    }
    document |= changes
    return {key: value for key, value in document.items() if value is not ...}


def parse_positions(raw: bytes) -> list[PositionUpdate | Rejection]:
    return list(positions_from_payload(raw, SYMBOLS, MAX_BYTES, MAX_BATCH))


def parse_price(raw: bytes) -> PriceTick:
    return price_from_payload(raw, "BTCUSDT", PriceKind.MARK, "mqtt", MAX_BYTES)


def rejected(raw: bytes) -> tuple[str, str]:
    """The (reason, detail) of a one-position payload that must be rejected."""
    (item,) = parse_positions(raw)
    assert isinstance(item, Rejection), item
    return item.reason, item.detail


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


# --- accepted input -------------------------------------------------------------------------


def test_a_valid_position_parses_to_exact_values() -> None:
    """A well-formed position arrives as a PositionUpdate with exact Decimal fields."""
    assert parse_positions(dumps(position())) == [
        PositionUpdate(
            "p-1001",
            "acct-42",
            "BTCUSDT",
            Side.LONG,
            Decimal("0.5"),
            Decimal("60000"),
            Decimal("3000"),
            17,
        )
    ]


def test_json_numbers_parse_to_exact_decimals() -> None:
    """Numbers written as JSON numbers are read from their text, never through a binary float."""
    raw = b'{"id": "p-1", "account": "a", "symbol": "BTCUSDT", "side": "short", "qty": 0.1,'
    raw += b' "entry_price": 64000.1, "margin": 3000, "seq": 0}'
    (update,) = parse_positions(raw)
    assert isinstance(update, PositionUpdate)
    assert (update.qty, update.entry_price, update.margin) == (
        Decimal("0.1"),
        Decimal("64000.1"),
        Decimal(3000),
    )
    assert str(update.entry_price) == "64000.1"
    tick = parse_price(b'{"price": 64000.1, "ts": 1732400000123}')
    assert tick == PriceTick("BTCUSDT", PriceKind.MARK, Decimal("64000.1"), 1732400000123, "mqtt")


def test_a_price_may_be_a_padded_decimal_string() -> None:
    """A price string with surrounding spaces is read as the decimal it spells."""
    assert parse_price(b'{"price": " 64000.50 ", "ts": 0}').price == Decimal("64000.50")


def test_a_close_with_qty_zero_is_accepted() -> None:
    """A version with qty "0" is a close: accepted, even with a zero margin."""
    (update,) = parse_positions(dumps(position(qty="0", margin="0", seq=18)))
    assert isinstance(update, PositionUpdate)
    assert update.closes
    assert (update.qty, update.margin, update.seq) == (Decimal(0), Decimal(0), 18)


def test_an_array_yields_each_position_and_each_rejection_in_order() -> None:
    """In an array, a bad position is rejected alone and the good ones still parse."""
    items = parse_positions(dumps([position(id="a"), position(id="b", margin="-1"), position()]))
    assert [type(item).__name__ for item in items] == [
        "PositionUpdate",
        "Rejection",
        "PositionUpdate",
    ]
    bad = items[1]
    assert isinstance(bad, Rejection)
    assert (bad.reason, bad.detail) == ("non_positive", "margin must be positive, got -1")


# --- every rejection reason ------------------------------------------------------------------


def test_payload_too_large() -> None:
    """A payload one byte over the limit is rejected whole, naming its size and the limit."""
    raw = dumps(position(id="p-" + "x" * 2000))[: MAX_BYTES + 1]
    with pytest.raises(Rejection) as caught:
        parse_positions(raw)
    assert (caught.value.reason, caught.value.detail) == (
        "payload_too_large",
        f"{MAX_BYTES + 1} bytes exceeds the limit of {MAX_BYTES}",
    )
    with pytest.raises(Rejection, match=r"^payload_too_large: 1025 bytes"):
        parse_price(b" " * 1025)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"id": ', "Expecting value: line 1 column 8 (char 7)"),
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b'{"price": 1} trailing', "Extra data: line 1 column 14 (char 13)"),
        (b'{"price": NaN, "ts": 1}', "NaN is not valid JSON"),
        (b'{"price": Infinity, "ts": 1}', "Infinity is not valid JSON"),
        (b'{"price": -Infinity, "ts": 1}', "-Infinity is not valid JSON"),
        (b'{"price": 1e999999999999999999999, "ts": 1}', "number 1e999999999999999999999 is "),
        (b'{"id": "\xc3\x28"}', "'utf-8' codec can't decode byte 0xc3 in position 8"),
        (b"[" * 1000, "maximum recursion depth exceeded"),
    ],
)
def test_malformed_json(raw: bytes, detail: str) -> None:
    """Text that is not strict JSON (or a number no decimal can hold) is malformed_json."""
    for parse in (parse_positions, parse_price):
        with pytest.raises(Rejection) as caught:
            parse(raw)
        assert caught.value.reason == "malformed_json"
        assert caught.value.detail.startswith(detail), caught.value.detail


def test_not_an_object() -> None:
    """A price that is not an object, or an array element that is not one, is not_an_object."""
    assert rejected(b"[42]") == ("not_an_object", "a position must be a JSON object")
    assert rejected(b'"p-1"') == ("not_an_object", "a position must be a JSON object")
    with pytest.raises(Rejection) as caught:
        parse_price(b"[64000, 1]")
    assert (caught.value.reason, caught.value.detail) == (
        "not_an_object",
        "a price must be a JSON object",
    )


def test_batch_too_large() -> None:
    """An array longer than the batch limit is rejected whole, before any position is read."""
    with pytest.raises(Rejection) as caught:
        parse_positions(dumps([position(seq=n) for n in range(MAX_BATCH + 1)]))
    assert (caught.value.reason, caught.value.detail) == (
        "batch_too_large",
        f"{MAX_BATCH + 1} positions exceeds the limit of {MAX_BATCH}",
    )
    assert len(parse_positions(dumps([position(seq=n) for n in range(MAX_BATCH)]))) == MAX_BATCH


def test_missing_field() -> None:
    """A position or price without a required field names every missing field."""
    assert rejected(dumps(position(seq=...))) == ("missing_field", "missing field(s) seq")
    assert rejected(dumps(position(margin=..., side=...))) == (
        "missing_field",
        "missing field(s) margin, side",
    )
    with pytest.raises(Rejection) as caught:
        parse_price(b'{"price": "1"}')
    assert (caught.value.reason, caught.value.detail) == ("missing_field", "missing field(s) ts")


def test_unknown_field() -> None:
    """A field outside the schema (a typo, say) is named rather than silently ignored."""
    assert rejected(dumps(position(leverage="10"))) == (
        "unknown_field",
        "unexpected field(s) leverage",
    )
    with pytest.raises(Rejection) as caught:
        parse_price(b'{"price": "1", "ts": 1, "symbol": "BTCUSDT"}')
    assert (caught.value.reason, caught.value.detail) == (
        "unknown_field",
        "unexpected field(s) symbol",
    )


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"qty": True}, "qty must be a decimal string or a number"),
        ({"margin": None}, "margin must be a decimal string or a number"),
        ({"entry_price": ["60000"]}, "entry_price must be a decimal string or a number"),
        ({"id": 1001}, "id must be a string"),
        ({"account": None}, "account must be a string"),
        ({"symbol": ["BTCUSDT"]}, "symbol must be a string"),
    ],
)
def test_bad_type(changes: dict[str, Any], detail: str) -> None:
    """A field of the wrong JSON type is bad_type, naming the field."""
    assert rejected(dumps(position(**changes))) == ("bad_type", detail)


def test_bad_decimal() -> None:
    """A decimal field that spells no number, or one far out of range, is bad_decimal."""
    assert rejected(dumps(position(qty="abc"))) == ("bad_decimal", "qty 'abc' is not a decimal")
    assert rejected(dumps(position(margin="1,5"))) == (
        "bad_decimal",
        "margin '1,5' is not a decimal",
    )
    assert rejected(dumps(position(qty="1e999999999"))) == (
        "bad_decimal",
        "qty '1e999999999' is out of range (at most 40 digits before or after the point)",
    )
    assert rejected(dumps(position(entry_price="1e-999999999")))[0] == "bad_decimal"
    assert (
        rejected(
            b'{"id": "p", "account": "a", "symbol": "BTCUSDT", "side": "long", "qty": 1,'
            b' "entry_price": 1e60, "margin": 1, "seq": 1}'
        )[0]
        == "bad_decimal"
    )
    with pytest.raises(Rejection) as caught:
        parse_price(b'{"price": "64k", "ts": 1}')
    assert (caught.value.reason, caught.value.detail) == (
        "bad_decimal",
        "price '64k' is not a decimal",
    )


@pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf"])
def test_non_finite(text: str) -> None:
    """NaN or infinity spelled as a string is non_finite, for margins, quantities and prices."""
    assert rejected(dumps(position(margin=text))) == (
        "non_finite",
        f"margin must be finite, got {text}",
    )
    assert rejected(dumps(position(qty=text)))[0] == "non_finite"
    with pytest.raises(Rejection) as caught:
        parse_price(dumps({"price": text, "ts": 1}))
    assert (caught.value.reason, caught.value.detail) == (
        "non_finite",
        f"price must be finite, got {text}",
    )


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"margin": "-100"}, "margin must be positive, got -100"),
        ({"margin": "0"}, "margin must be positive, got 0"),
        ({"margin": 0}, "margin must be positive, got 0"),
        ({"entry_price": "-60000.5"}, "entry_price must be positive, got -60000.5"),
        ({"entry_price": "0.000"}, "entry_price must be positive, got 0"),
        ({"qty": "-0.5"}, "qty must not be negative, got -0.5"),
    ],
)
def test_non_positive(changes: dict[str, Any], detail: str) -> None:
    """A negative or zero price or margin, or a negative quantity, is non_positive."""
    assert rejected(dumps(position(**changes))) == ("non_positive", detail)


@pytest.mark.parametrize("price", ["-64000", "0", 0, -1])
def test_non_positive_price(price: object) -> None:
    """A mark or index price of zero or below is non_positive."""
    with pytest.raises(Rejection) as caught:
        parse_price(dumps({"price": price, "ts": 1}))
    assert caught.value.reason == "non_positive"
    assert caught.value.detail == f"price must be positive, got {decimal_str(Decimal(price))}"


@pytest.mark.parametrize(
    ("raw_seq", "shown"),
    [
        (b"1.5", "1.5"),
        (b"true", "True"),
        (b"-1", "-1"),
        (b'"7"', "'7'"),
        (b"null", "None"),
        (b"9223372036854775808", "9223372036854775808"),
    ],
)
def test_bad_seq(raw_seq: bytes, shown: str) -> None:
    """A seq that is not a non-negative 64-bit integer (float, bool, string, too big) is bad_seq."""
    raw = dumps(position(seq="SEQ")).replace(b'"SEQ"', raw_seq)
    assert rejected(raw) == (
        "bad_seq",
        f"seq must be an integer from 0 to {MAX_INTEGER}, got {shown}",
    )


def test_the_largest_seq_is_accepted() -> None:
    """seq may go up to 2**63 - 1, the largest integer Redis and the event JSON can carry."""
    (update,) = parse_positions(dumps(position(seq=MAX_INTEGER)))
    assert isinstance(update, PositionUpdate)
    assert update.seq == 2**63 - 1


@pytest.mark.parametrize(
    ("raw_ts", "shown"),
    [(b'"now"', "'now'"), (b"-1", "-1"), (b"1.5", "1.5"), (b"false", "False")],
)
def test_bad_ts(raw_ts: bytes, shown: str) -> None:
    """A price timestamp that is not a non-negative integer of epoch milliseconds is bad_ts."""
    with pytest.raises(Rejection) as caught:
        parse_price(b'{"price": "1", "ts": ' + raw_ts + b"}")
    assert (caught.value.reason, caught.value.detail) == (
        "bad_ts",
        f"ts must be an integer from 0 to {MAX_INTEGER}, got {shown}",
    )


@pytest.mark.parametrize(("side", "shown"), [("buy", "'buy'"), ("LONG", "'LONG'"), (1, "1")])
def test_unknown_side(side: object, shown: str) -> None:
    """A side other than "long" or "short" is unknown_side, showing what was sent."""
    assert rejected(dumps(position(side=side))) == (
        "unknown_side",
        f"side must be long or short, got {shown}",
    )


def test_unknown_side_of_an_unhashable_type() -> None:
    """A side that is a JSON object is unknown_side too, not a crash."""
    assert rejected(dumps(position(side={"long": True})))[0] == "unknown_side"


def test_unknown_symbol() -> None:
    """A symbol with no configured tier table is unknown_symbol."""
    assert rejected(dumps(position(symbol="DOGEUSDT"))) == (
        "unknown_symbol",
        "no contract is configured for symbol DOGEUSDT",
    )


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("account", "acct+42", 64),
        ("account", "acct#", 64),
        ("account", "desk/acct", 64),
        ("account", "", 64),
        ("account", "a" * 65, 64),
        ("account", "acct 42", 64),
        ("symbol", "BTC/USDT", 64),
        ("symbol", "+", 64),
        ("symbol", "#", 64),
        ("symbol", "", 64),
        ("symbol", "S" * 65, 64),
        ("id", "p#1", 128),
        ("id", "p" * 129, 128),
    ],
)
def test_bad_name(field: str, value: str, limit: int) -> None:
    """An id, account or symbol unsafe as an MQTT topic level is bad_name, with the rule."""
    assert rejected(dumps(position(**{field: value}))) == (
        "bad_name",
        f"{field} {value[:80]!r} must be 1-{limit} {NAME_RULE}",
    )


def test_longest_names_are_accepted() -> None:
    """An account of 64 characters and an id of 128 are still topic-safe and accepted."""
    (update,) = parse_positions(dumps(position(account="a" * 64, id="p" * 128)))
    assert isinstance(update, PositionUpdate)
    assert (len(update.account), len(update.id)) == (64, 128)


# --- decimal_str -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+5"), "100000"),
        (Decimal("1.50"), "1.5"),
        (Decimal("54216.86746987951807228915663"), "54216.86746987951807228915663"),
        (Decimal("1E-10"), "0.0000000001"),
        (Decimal("0E-8"), "0"),
        (Decimal("-0.000"), "0"),
        (Decimal("-2.5E+3"), "-2500"),
        (Decimal("100"), "100"),
        (Decimal("Infinity"), "Infinity"),
        (Decimal("-Infinity"), "-Infinity"),
        (Decimal("NaN"), "NaN"),
        (Decimal("0.000001234"), "0.000001234"),
        (Decimal("1.0E-7"), "0.0000001"),
        (Decimal("-0.00000010"), "-0.0000001"),
    ],
)
def test_decimal_str_examples(value: Decimal, text: str) -> None:
    """Decimals go on the wire in plain notation, without trailing zeros or a negative zero."""
    assert decimal_str(value) == text


@given(st.integers(-(10**40), 10**40), st.integers(-40, 40))
def test_decimal_str_never_prints_an_exponent(digits: int, exponent: int) -> None:
    """Any finite Decimal prints as plain digits that read back as the same number."""
    value = Decimal(f"{digits}E{exponent}")
    text = decimal_str(value)
    assert "E" not in text.upper()
    assert Decimal(text) == value
    assert text == "0" or not text.endswith("0") or "." not in text
    assert text != "-0"


# --- fuzzing ---------------------------------------------------------------------------------

_number_text = st.from_regex(
    r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,12})?", fullmatch=True
)
_scalar_text = st.one_of(
    _number_text,
    _number_text.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "true", "false", "null", "1e999999999"]),
    st.sampled_from(['"long"', '"short"', '"BTCUSDT"', '"BTCUSD"', '"NaN"', '"-0"', '"0"']),
    st.text(max_size=12).map(json.dumps),
    st.integers().map(str),
)
_json_text = st.recursive(
    _scalar_text,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(st.text(max_size=8), inner, max_size=4).map(
            lambda obj: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in obj.items()) + "}"
        ),
    ),
    max_leaves=12,
)
# Magnitudes from ordinary to absurd, as JSON numbers and as decimal strings.
_scientific = st.builds(
    "{}e{}".format,
    st.integers(1, 10**6),
    st.one_of(st.integers(-60, 60), st.integers(-(10**12), 10**12)),
)
_field_number = st.one_of(
    _number_text,
    _scientific,
    st.one_of(_number_text, _scientific).map(json.dumps),
    st.integers(0, 2**70).map(str),
)
_FIELDS = ["id", "account", "symbol", "side", "qty", "entry_price", "margin", "seq"]


@st.composite
def _position_text(draw: st.DrawFn) -> str:
    """A position-shaped object whose fields are each valid, garbage or absent."""
    valid = json.loads(json.dumps(position(symbol=draw(st.sampled_from(sorted(SYMBOLS))))))
    parts = []
    extra = draw(st.sampled_from([[], [], [], ["extra"], ["ts"]]))
    for field in _FIELDS + extra:
        choice = draw(st.sampled_from(["valid"] * 5 + ["number", "number", "garbage", "absent"]))
        if choice == "absent":
            continue
        if choice == "valid":
            text = json.dumps(valid.get(field, 1))
        elif choice == "number":
            text = draw(_field_number)
        else:
            text = draw(_json_text)
        parts.append(f"{json.dumps(field)}:{text}")
    return "{" + ",".join(parts) + "}"


@st.composite
def _sized_position_text(draw: st.DrawFn) -> str:
    """A well-formed position whose quantity, prices and seq range from ordinary to absurd."""
    document = position(
        symbol=draw(st.sampled_from(sorted(SYMBOLS))), side=draw(st.sampled_from(["long", "short"]))
    )
    parts = []
    for field, value in document.items():
        numeric = field in {"qty", "entry_price", "margin", "seq"} and draw(st.booleans())
        parts.append(f"{json.dumps(field)}:{draw(_field_number) if numeric else json.dumps(value)}")
    return "{" + ",".join(parts) + "}"


_payloads = st.one_of(
    st.binary(max_size=300),
    _json_text.map(str.encode),
    _position_text().map(str.encode),
    st.lists(_position_text(), max_size=5).map(
        lambda items: ("[" + ",".join(items) + "]").encode()
    ),
)


def _outcomes(raw: bytes) -> Iterator[PositionUpdate | Rejection]:
    try:
        yield from positions_from_payload(raw, SYMBOLS, 4096, MAX_BATCH)
    except Rejection as rejection:
        yield rejection


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_payloads)
def test_positions_parser_only_ever_rejects(raw: bytes) -> None:
    """Any bytes at all either parse into positions or come back as Rejections, never a crash."""
    for item in _outcomes(raw):
        assert isinstance(item, PositionUpdate | Rejection)
        if isinstance(item, Rejection):
            assert item.reason and item.detail


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=100),
        _json_text.map(str.encode),
        st.builds(
            lambda price, ts: f'{{"price":{price},"ts":{ts}}}'.encode(), _scalar_text, _scalar_text
        ),
    )
)
def test_price_parser_only_ever_rejects(raw: bytes) -> None:
    """Any bytes at all either parse into a positive finite price or raise a Rejection."""
    try:
        tick = parse_price(raw)
    except Rejection as rejection:
        assert rejection.reason and rejection.detail
    else:
        assert tick.price.is_finite()
        assert tick.price > 0
        assert 0 <= tick.ts_ms <= MAX_INTEGER


_CONFIG = load_settings(Path(__file__).resolve().parents[2] / "config" / "liqmon.toml", environ={})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_sized_position_text(), min_size=1, max_size=3), _number_text)
def test_every_accepted_position_can_be_evaluated_and_stored(items: list[str], mark: str) -> None:
    """Whatever the parser accepts, the margin math can evaluate and the store can encode."""
    raw = ("[" + ",".join(items) + "]").encode()
    price = Decimal(mark)
    quote = Quote(abs(price) if price and abs(price.adjusted()) < 30 else Decimal(60000), 1)
    for item in _outcomes(raw):
        if isinstance(item, Rejection):
            continue
        decision = apply_update(
            _CONFIG.symbols[item.symbol], None, item, quote, RiskLimits(), 1_700_000_000_000
        )
        assert decision is not None
        encoded = decision.record.encode()
        assert PositionRecord.decode(item.id, item.symbol, encoded) == decision.record
        if decision.event is not None:
            json.dumps(decision.event.payload)
