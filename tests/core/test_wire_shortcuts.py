"""The parser's shortcuts decide what the long way decides.

``position_from_object`` skips the digit count of a short decimal text without
an exponent and looks a side up in a table; these properties hold it to what
``in_range`` and ``Side(...)`` say, for any text.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.errors import Rejection
from monitor.core.margin import Side
from monitor.core.wire import in_range, position_from_object

pytestmark = pytest.mark.unit

SYMBOLS = {"BTCUSDT"}
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=45)

# Plain decimals of every length around the 40-digit limit, with exponents,
# signs, underscores, spaces and non-ASCII digits now and then.
TEXTS = st.one_of(
    st.builds(lambda w, f: f"{w}.{f}", DIGITS, DIGITS),
    DIGITS,
    st.builds(lambda m, e: f"{m}e{e}", DIGITS, st.integers(-60, 60)),
    st.builds(lambda m, e: f"{m}E+{e}", DIGITS, st.integers(0, 60)),
    st.builds(lambda d: f" -{d} ", DIGITS),
    st.builds(lambda d: f"1_{d}", DIGITS),
    st.text(alphabet="0123456789.eE+-_ ٣", max_size=44),
)


def _position(**changes: Any) -> dict[str, Any]:
    base = {
        "id": "p-1",
        "account": "a",
        "symbol": "BTCUSDT",
        "side": "long",
        "qty": "1",
        "entry_price": "64000",
        "margin": "6400",
        "seq": 1,
    }
    return base | changes


@settings(max_examples=1000, deadline=None)
@given(TEXTS)
def test_a_price_text_is_accepted_exactly_when_it_is_in_range(text: str) -> None:
    """Accepted ⇔ a positive finite decimal within 40 digits either side of the point."""
    try:
        number = Decimal(text.strip())
        expected = number.is_finite() and number > 0 and in_range(number)
    except InvalidOperation:
        expected = False
    try:
        update = position_from_object(_position(entry_price=text), SYMBOLS)
    except Rejection:
        accepted = False
    else:
        accepted = True
        assert number == update.entry_price
    assert expected == accepted


@given(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.sampled_from(list(Side))))
def test_a_side_is_accepted_exactly_when_side_accepts_it(value: Any) -> None:
    """The side table answers as the enum does, members and strange values included."""
    try:
        expected: Side | None = Side(value)
    except ValueError:
        expected = None
    try:
        actual: Side | None = position_from_object(_position(side=value), SYMBOLS).side
    except Rejection as rejection:
        assert "unknown_side" == rejection.reason
        actual = None
    assert expected is actual
