"""A dead letter: one rejected input message, as the dead-letter stream keeps it.

Pure: what an entry holds and what it costs. A message is one entry however
many of its objects were rejected (a batch of positions lists each bad
object's reason in ``reasons``), and every part of an entry is capped, so a
flood of large or many-times-bad messages costs the stream a bounded number
of bytes (the stream itself drops its oldest entries past
``limits.dead_letter_max_bytes``, see ``lua/deadletter.lua``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

TEXT_BYTES = 1000
"""A source, reason or detail is kept up to this many bytes."""

REASONS_BYTES = 32_768
"""The rejected objects of one message are listed up to this many bytes; the rest are counted
in the detail. With the texts, what an entry holds beyond its payload stays under
:data:`~monitor.config.model.DEAD_LETTER_OVERHEAD_BYTES`."""

OBJECT_DETAIL_BYTES = 200
"""Each listed object's detail is kept up to this many bytes."""


@dataclass(frozen=True, slots=True)
class ObjectRejection:
    """One bad object of a batch message: its position in the array and why."""

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message: where it came from, why, and the message itself."""

    source: str
    reason: str
    detail: str
    payload: bytes
    objects: Sequence[ObjectRejection] = ()
    """The rejected objects of a batch whose other objects may have been accepted."""


def batch_letter(
    source: str, payload: bytes, objects: Sequence[ObjectRejection], total: int
) -> DeadLetter:
    """The one dead letter of a batch message ``total`` objects long with ``objects`` rejected.

    Its reason is the first object's when they all agree, else ``invalid_objects``. A
    message of one object is dead-lettered with that object's reason and detail alone.
    """
    if total == 1:
        (only,) = objects
        return DeadLetter(source, only.reason, only.detail, payload)
    reasons = {rejection.reason for rejection in objects}
    reason = objects[0].reason if len(reasons) == 1 else "invalid_objects"
    first = objects[0]
    detail = f"{len(objects)} of {total} objects rejected; first [{first.index}]: {first.detail}"
    return DeadLetter(source, reason, detail, payload, objects)


def entry_of(letter: DeadLetter, payload_cap: int) -> tuple[int, list[str | bytes]]:
    """The stream entry of ``letter`` (field, value, ...) and its size in bytes.

    The size counts what the entry holds (the kept payload, source, reason,
    detail and reasons): at most ``payload_cap`` + ``DEAD_LETTER_OVERHEAD_BYTES``.
    """
    source = _cut(letter.source, TEXT_BYTES)
    reason = _cut(letter.reason, TEXT_BYTES)
    detail = _cut(letter.detail, TEXT_BYTES)
    payload = letter.payload[:payload_cap]
    reasons = _reasons(letter.objects)
    size = len(source) + len(reason) + len(detail) + len(payload) + len(reasons)
    fields: list[str | bytes] = [
        "source", source,
        "reason", reason,
        "detail", detail,
        "payload", payload,
        "payload_bytes", str(len(letter.payload)),
        "bytes", str(size),
    ]  # fmt: skip
    if reasons:
        fields += ["reasons", reasons]
    return size, fields


def _cut(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to ``limit`` bytes on a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode()


def _reasons(objects: Sequence[ObjectRejection]) -> bytes:
    """A JSON array of the objects' index, reason and detail, cut to whole items."""
    parts: list[bytes] = []
    used = 2
    for rejection in objects:
        item = orjson.dumps(
            {
                "index": rejection.index,
                "reason": _cut(rejection.reason, 100).decode(),
                "detail": _cut(rejection.detail, OBJECT_DETAIL_BYTES).decode(),
            }
        )
        if used + len(item) + 1 > REASONS_BYTES:
            break
        parts.append(item)
        used += len(item) + 1
    return b"[" + b",".join(parts) + b"]" if parts else b""
