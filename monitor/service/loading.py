"""Loading positions in bulk through the engine, and marking a lost book reloaded.

``liqmon positions load`` and ``reloaded``, the demo and the benchmarks share
these: every position goes through :class:`~monitor.service.engine.Engine`, so
a bulk load decides and queues events exactly as the daemon would.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from monitor.config.model import Settings
from monitor.core.errors import Rejection
from monitor.core.position import PositionUpdate
from monitor.service.engine import Engine
from monitor.state.epoch import Epoch
from monitor.state.keys import Keys
from monitor.state.outbox import Outbox
from monitor.state.positions import PositionStore
from monitor.state.readmodel import ReadModel
from monitor.state.transport import connect


def open_store(settings: Settings) -> PositionStore:
    """A position store on the configured Redis (the caller closes ``store.transport``)."""
    return PositionStore(connect(settings.redis), Keys(settings.redis.key_prefix), settings.limits)


def open_read_model(settings: Settings) -> ReadModel:
    """The read model on the configured Redis (the caller closes it: ``aclose``)."""
    return ReadModel(connect(settings.redis), Keys(settings.redis.key_prefix))


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What ``positions load`` did."""

    applied: int
    ignored: int
    rejected: int
    events: int
    seconds: float
    failed: int = 0
    first_rejections: tuple[tuple[int, str], ...] = ()
    """(line number, message) of the first :data:`REJECTIONS_SHOWN` rejected lines."""

    def report(self) -> str:
        """The closing lines ``positions load`` prints."""
        text = (
            f"loaded {self.applied:,} positions in {self.seconds:.1f} s; {self.ignored:,} "
            f"ignored (not newer), {self.rejected:,} rejected, {self.events:,} events queued\n"
        )
        if self.failed:
            text += f"{self.failed:,} positions could NOT be stored (see the log)\n"
        return text


REJECTIONS_SHOWN = 10


async def load_positions(
    settings: Settings,
    lines: Iterable[tuple[int, bytes, PositionUpdate | Rejection]],
    batch_size: int,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> LoadSummary:
    """Apply a stream of parsed lines in pipelined batches; rejections are dead-lettered.

    With ``progress``, the first rejections, a running count (on a terminal)
    and the summary go to stderr. ``on_batch`` hears the applied count after
    every batch.
    """
    store = open_store(settings)
    outbox = Outbox(store.transport, store.keys, store.limits)
    engine = Engine(store, settings.symbols, settings.risk, settings.mqtt.topic_prefix)
    applied = ignored = rejected = events = failed = 0
    first_rejections: list[tuple[int, str]] = []
    started = time.perf_counter()
    try:
        await outbox.ensure_groups(settings.symbols)
        # Event ids carry Redis's generation; a first load writes the first epoch.
        epoch, _ = await store.create_epoch(Epoch.first(time.time_ns() // 1_000_000))
        engine.generation = epoch.generation
        items = iter(lines)
        chunk = await _read(items, batch_size)
        while chunk:
            updates = []
            for number, raw, item in chunk:
                if isinstance(item, Rejection):
                    rejected += 1
                    if rejected <= REJECTIONS_SHOWN:
                        message = f"line {number}: rejected: {item.reason}: {item.detail}"
                        first_rejections.append((number, message))
                        if progress:
                            sys.stderr.write(message + "\n")
                    await outbox.dead_letter(
                        "load", item.reason, f"line {number}: {item.detail}", raw
                    )
                else:
                    updates.append(item)
            # The next batch is read and parsed while this one's round trips are
            # in flight: a worker that did one and then the other left Redis idle
            # while it parsed, and workers started together parse together.
            try:
                async with asyncio.TaskGroup() as group:
                    reading = group.create_task(_read(items, batch_size))
                    outcome = await engine.apply_updates(updates)
            except ExceptionGroup as failures:
                raise failures.exceptions[0] from failures
            chunk = reading.result()
            applied += outcome.applied
            ignored += outcome.ignored
            failed += outcome.failed
            events += len(outcome.events)
            if on_batch is not None:
                on_batch(applied)
            if progress and sys.stderr.isatty():
                rate = applied / max(time.perf_counter() - started, 1e-9)
                sys.stderr.write(f"\rloaded {applied:,} positions ({rate:,.0f}/s)")
        seconds = time.perf_counter() - started
    finally:
        await store.transport.aclose()
    summary = LoadSummary(
        applied, ignored, rejected, events, seconds, failed, tuple(first_rejections)
    )
    if progress:
        sys.stderr.write(("\r" if sys.stderr.isatty() else "") + summary.report())
    return summary


async def mark_reloaded(settings: Settings) -> tuple[Epoch | None, bool]:
    """Mark Redis's epoch reloaded (the book lost with its data is loaded again): the
    epoch (None: Redis holds none), and whether it was awaiting the reload.

    Monitors read the epoch every second and report ready again once it is.
    """
    store = open_store(settings)
    try:
        while True:
            epoch, raw = await store.epoch()
            if epoch is None or not epoch.awaiting_reload:
                return epoch, False
            after, written = await store.replace_epoch(raw, epoch.reloaded())
            if written:
                return after, True
    finally:
        await store.transport.aclose()


READ_SLICE = 1000
"""Lines parsed between two turns of the event loop while a batch is being applied."""


async def _read(items: Iterator[Any], size: int) -> list[Any]:
    """The next ``size`` items (fewer at the end), taken :data:`READ_SLICE` at a time with
    the event loop given back in between, so the batch being applied meanwhile goes on."""
    chunk: list[Any] = []
    while len(chunk) < size:
        wanted = min(READ_SLICE, size - len(chunk))
        part = list(islice(items, wanted))
        chunk += part
        if len(part) < wanted:
            break
        await asyncio.sleep(0)
    return chunk
