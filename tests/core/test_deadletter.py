"""The dead-letter entry, pure: one per message, every part capped, its size exact."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config.model import DEAD_LETTER_OVERHEAD_BYTES
from monitor.core.deadletter import DeadLetter, ObjectRejection, batch_letter, entry_of

pytestmark = pytest.mark.unit

texts = st.text(max_size=3000)
objects = st.lists(st.builds(ObjectRejection, st.integers(0, 10_000), texts, texts), max_size=300)


@given(texts, texts, texts, st.binary(max_size=5000), objects, st.integers(0, 4000))
def test_an_entry_never_holds_more_than_its_cap_and_says_its_size(
    source: str,
    reason: str,
    detail: str,
    payload: bytes,
    rejected: list[ObjectRejection],
    cap: int,
) -> None:
    """Whatever a message carries, its entry holds at most the payload cap plus the overhead,
    and its recorded size is what it holds."""
    size, fields = entry_of(DeadLetter(source, reason, detail, payload, rejected), cap)
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    held = sum(len(values[k]) for k in ("source", "reason", "detail", "payload")) + len(
        values.get("reasons", b"")
    )
    assert size == held == int(values["bytes"])
    assert size <= cap + DEAD_LETTER_OVERHEAD_BYTES
    assert values["payload"] == payload[:cap]
    assert values["payload_bytes"] == str(len(payload))
    if "reasons" in values:
        listed = orjson.loads(values["reasons"])
        assert [r["index"] for r in listed] == [o.index for o in rejected[: len(listed)]]


def test_a_batch_letter_names_the_shared_reason_or_says_they_differ() -> None:
    """One reason for all bad objects is the entry's reason; mixed reasons are invalid_objects."""
    same = [ObjectRejection(0, "unknown_field", "a"), ObjectRejection(2, "unknown_field", "b")]
    mixed = [ObjectRejection(0, "unknown_field", "a"), ObjectRejection(1, "bad_seq", "b")]
    assert batch_letter("s", b"[]", same, 3).reason == "unknown_field"
    assert batch_letter("s", b"[]", mixed, 2).reason == "invalid_objects"
    assert batch_letter("s", b"[]", mixed, 2).detail == "2 of 2 objects rejected; first [0]: a"


def test_a_message_of_one_object_is_dead_lettered_as_that_object() -> None:
    """A lone bad object keeps its own reason and detail, with no list of reasons."""
    letter = batch_letter("s", b"{}", [ObjectRejection(0, "bad_seq", "seq must be")], 1)
    assert letter == DeadLetter("s", "bad_seq", "seq must be", b"{}")
