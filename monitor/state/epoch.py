"""Redis's epoch: how a process tells that Redis lost its data under it. Pure.

Redis restarted without persistence, or flushed, comes back empty and
answers as if nothing happened: positions, trigger sets, marks and outbox
are gone, and the daemon's consumer groups are simply made again. So the
first process to start writes an epoch into Redis (``{prefix}:epoch``,
absent only if Redis is new or emptied), and every running process
remembers the one it started with and reads it again every second:

* the same id: nothing happened (its state may have moved to ``live``,
  which a reload does);
* absent, or another id that does not name ours as the one it replaced:
  Redis lost its data. The process writes the successor (next generation,
  state ``awaiting_reload``) by compare-and-set; the one whose write wins
  requests a re-sync of every position, and every process reports not
  ready until the book is reloaded (``liqmon positions load`` or
  ``liqmon positions reloaded``, which mark the epoch ``live``);
* another id that replaced ours, or of a higher generation: another process
  noticed the loss first; adopt its successor.

The generation reaches the event ids (:func:`monitor.core.evaluation.event_id`):
a version re-sent after a loss makes its transitions again, and they must
not repeat ids that subscribers have already seen and would drop.

A process that *starts* on an empty Redis cannot tell a first start from a
loss by Redis alone; it writes generation 1 and warns when the book is empty.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from enum import Enum

import orjson


class EpochState(Enum):
    """Whether Redis holds the book (``live``) or lost it and waits for a reload."""

    LIVE = "live"
    AWAITING_RELOAD = "awaiting_reload"


@dataclass(frozen=True, slots=True)
class Epoch:
    """One life of Redis's data, as stored in the epoch key (a JSON object)."""

    id: str
    generation: int
    created_ms: int
    state: EpochState = EpochState.LIVE
    lost: str | None = None
    """The id of the epoch whose data this one lost (None for a first start)."""

    @classmethod
    def first(cls, now_ms: int, epoch_id: str | None = None) -> Epoch:
        """The epoch of a first start (or of a start on a Redis that lost its data unseen)."""
        return cls(epoch_id or new_id(), 1, now_ms)

    def successor(self, stored: Epoch | None, now_ms: int, epoch_id: str | None = None) -> Epoch:
        """The epoch to write once this one's data is found lost (``stored``: what Redis
        holds instead, if anything): a generation above both, awaiting a reload."""
        generation = max(self.generation, stored.generation if stored else 0) + 1
        return Epoch(
            epoch_id or new_id(), generation, now_ms, EpochState.AWAITING_RELOAD, lost=self.id
        )

    def reloaded(self) -> Epoch:
        """This epoch once the book is loaded again."""
        return replace(self, state=EpochState.LIVE)

    @property
    def awaiting_reload(self) -> bool:
        """True while the book lost with the previous epoch is not yet loaded again."""
        return self.state is EpochState.AWAITING_RELOAD

    def encode(self) -> bytes:
        """The stored JSON object."""
        return orjson.dumps(
            {
                "id": self.id,
                "generation": self.generation,
                "created_ms": self.created_ms,
                "state": self.state.value,
                "lost": self.lost,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Epoch:
        """An epoch as :meth:`encode` stored it."""
        fields = orjson.loads(raw)
        return cls(
            str(fields["id"]),
            int(fields["generation"]),
            int(fields["created_ms"]),
            EpochState(fields["state"]),
            fields.get("lost"),
        )


def new_id() -> str:
    """A random epoch id."""
    return secrets.token_hex(8)


class Verdict(Enum):
    """What a process learns from reading the epoch again."""

    SAME = "same"
    """Its epoch is still there (its state may have changed)."""
    ADOPT = "adopt"
    """Another process noticed the loss first and wrote the successor."""
    LOST = "lost"
    """Redis lost its data: write the successor."""


def check(known: Epoch, stored: Epoch | None) -> Verdict:
    """What reading ``stored`` means to a process that knows ``known``."""
    if stored is None:
        return Verdict.LOST
    if stored.id == known.id:
        return Verdict.SAME
    # Generations only grow by successors: a higher one declared a loss already
    # (of ours, or of an epoch written on the emptied Redis before it was seen,
    # whose writer must not declare the loss again: the two would take turns).
    if stored.lost == known.id or stored.generation > known.generation:
        return Verdict.ADOPT
    return Verdict.LOST


RELOAD_HINT = (
    "load every open position again: 'liqmon positions load FILE' from the system of "
    "record, or have the position source answer the re-sync request on {topic} and then "
    "run 'liqmon positions reloaded'"
)
"""What an operator does after a loss (``{topic}``: the re-sync topic)."""
