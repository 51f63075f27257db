"""``positions load`` judges a line once decoded, and a line with a JSON number again with
exact decimals: the same verdict as reading every such line exactly from the start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cli.main import _jsonl
from monitor.config.loading import load_settings
from monitor.core.errors import Rejection
from monitor.core.position import PositionUpdate
from monitor.core.wire import load_json, position_from_object

pytestmark = pytest.mark.unit

CONFIG = Path(__file__).resolve().parents[2] / "config" / "liqmon.toml"
FIELDS = ("id", "account", "symbol", "side", "qty", "entry_price", "margin", "seq")

# What a field may hold: its proper value, or a JSON number of any kind (orjson reads
# those with a fraction or an exponent as floats), or something else wrong.
NUMBERS = st.sampled_from(["1.5", "2", "0", "-1.25", "1e3", "1E-2", "0.0", "60000.10", "1e400"])
GOOD = {
    "id": '"p-1"',
    "account": '"a"',
    "symbol": '"BTCUSDT"',
    "side": '"long"',
    "qty": '"0.5"',
    "entry_price": '"60000"',
    "margin": '"3000"',
    "seq": "3",
}


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A position line whose fields are each its proper text, a JSON number or a string,
    sometimes with an extra field or one left out."""
    parts = []
    for name in FIELDS:
        if draw(st.integers(0, 12)) == 0:
            continue
        value = draw(st.one_of(st.just(GOOD[name]), NUMBERS, st.just('"x"')))
        parts.append(f"{json.dumps(name)}: {value}")
    if draw(st.integers(0, 8)) == 0:
        parts.append(f'"extra": {draw(NUMBERS)}')
    return ("{" + ", ".join(parts) + "}").encode()


def _read_exactly(line: bytes, symbols: Any) -> PositionUpdate | Rejection:
    """The verdict when every line holding a float is decoded exactly before it is judged."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return Rejection("malformed_json", str(error))
    try:
        if isinstance(obj, dict) and float in map(type, obj.values()):
            obj = load_json(line, len(line))
        return position_from_object(obj, symbols)
    except Rejection as rejection:
        return rejection


@settings(max_examples=300, deadline=None)
@given(st.lists(lines(), min_size=1, max_size=20))
def test_a_line_is_judged_as_if_read_exactly(
    tmp_path_factory: pytest.TempPathFactory, batch: list[bytes]
) -> None:
    """Every line gets the verdict exact reading gives it: the same position, or a
    rejection with the same reason and detail."""
    config = load_settings(CONFIG)
    path = tmp_path_factory.mktemp("lines") / "positions.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in batch))
    got = [item for _, _, item in _jsonl(path, config)]
    expected = [_read_exactly(line, config.symbols) for line in batch]
    assert [_verdict(item) for item in expected] == [_verdict(item) for item in got]


def _verdict(item: PositionUpdate | Rejection) -> Any:
    if isinstance(item, Rejection):
        return ("rejected", item.reason, item.detail)
    return item


def test_a_number_in_a_decimal_field_is_read_exactly() -> None:
    """``"qty": 0.1`` is the decimal 0.1, not the float nearest it."""
    config = load_settings(CONFIG)
    line = b'{"id": "p-1", "account": "a", "symbol": "BTCUSDT", "side": "long", '
    line += b'"qty": 0.1, "entry_price": 60000.5, "margin": "3000", "seq": 1}'
    update = _read_exactly(line, config.symbols)
    assert isinstance(update, PositionUpdate)
    assert "0.1" == str(update.qty)
    assert "60000.5" == str(update.entry_price)


# Ids, and lines around them, that a reading of the raw bytes could get wrong: escapes,
# an "id" nested or repeated or as a value, whitespace, non-ASCII, an id that is no string.
IDS = st.sampled_from(['"p-1"', '"p-2"', '"p\\u002d1"', '"é-3"', '"a\\"b"', "7", '""', '"id"'])
AROUND = st.sampled_from(
    [
        "{{{id_}}}",
        "{{{id_}, {rest}}}",
        "{{{rest}, {id_}}}",
        '{{"meta": {{"id": "z"}}, {id_}}}',
        '{{{id_}, "account": "id"}}',
        '{{"account": "id", {rest}}}',
        '{{{id_}, "id": "p-9"}}',
        "{{{id_}, {rest}",
        '{{"note": "\\"id\\": \\"q\\"", {id_}}}',
    ]
)
REST = '"account": "a", "symbol": "BTCUSDT", "side": "long", "qty": "1", "seq": 1'


@st.composite
def id_lines(draw: st.DrawFn) -> bytes:
    """A line around an id, with the key spaced as JSON allows."""
    key = draw(st.sampled_from(['"id": ', '"id":', '"id" :\t', '"id"\r\n:']))
    id_ = key + draw(IDS)
    return draw(AROUND).format(id_=id_, rest=REST).encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(id_lines(), min_size=1, max_size=12), st.integers(2, 4))
def test_the_workers_of_a_load_share_its_lines(
    tmp_path_factory: pytest.TempPathFactory, batch: list[bytes], shares: int
) -> None:
    """Split among workers, every line is judged by exactly one, as one process judges it,
    and every line of one position id by the same one (its versions keep their order)."""
    config = load_settings(CONFIG)
    path = tmp_path_factory.mktemp("shares") / "positions.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in batch))
    alone = {number: _verdict(item) for number, _, item in _jsonl(path, config)}
    judged: dict[int, Any] = {}
    share_of_id: dict[Any, int] = {}
    for share in range(shares):
        for number, line, item in _jsonl(path, config, share, shares):
            assert number not in judged
            judged[number] = _verdict(item)
            try:
                position_id = orjson.loads(line).get("id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(position_id, str):
                assert share_of_id.setdefault(position_id, share) == share
    assert alone == judged
