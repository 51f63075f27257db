"""The engine: read from Redis, decide with the pure core, write back once.

Every path has the same shape: read records (with their stored bytes), call
:func:`monitor.core.evaluation.evaluate` or :func:`~monitor.core.evaluation.apply_update`,
and commit the decisions with compare-and-set. Ids whose record changed in
between (another monitor, a newer version) are read and decided again, so a
transition is written, and its event queued, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from feeds.tick import PriceKind, PriceTick
from monitor.core import topics
from monitor.core.evaluation import Decision, Event, Quote, apply_update, evaluate
from monitor.core.margin import Contract
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import RiskLimits
from monitor.state.positions import Candidates, Commit, DecidedAt, PositionStore, Write

log = structlog.get_logger("liqmon.engine")

COMMIT_SLICE = 1000
"""Writes (or position versions) per commit script call: bounds how long one call holds Redis."""

GROUPS_IN_FLIGHT = 3
"""Groups of position versions whose round trips overlap (see Engine._apply_wave)."""

DECIDE_SLICE = 100
"""Positions decided between two turns of the event loop in a burst (~5 ms of work)."""

MAX_ATTEMPTS = 8
"""Compare-and-set rounds before giving up on an id; more means a hot loop, i.e. a bug."""


T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Guards(Protocol):
    """What the engine asks the price guards (:class:`monitor.core.guards.PriceGuards`)."""

    def may_decide(self, symbol: str, now_s: float) -> bool:
        """Whether the symbol's stored mark may be used to judge a new position version."""

    def may_liquidate(self, symbol: str, now_s: float) -> bool:
        """Whether a mark of the symbol may liquidate (no hold is in force)."""

    def ts_ceiling_ms(self, symbol: str, now_ms: int) -> int | None:
        """The latest believable ``ts_ms`` of the symbol's stored mark (None: no ceiling);
        a stored mark stamped later does not hold new ticks back."""


class _NoGuards:
    """Every mark may decide and liquidate; no ceiling (tools and tests without guards)."""

    def may_decide(self, symbol: str, now_s: float) -> bool:
        return True

    def may_liquidate(self, symbol: str, now_s: float) -> bool:
        return True

    def ts_ceiling_ms(self, symbol: str, now_ms: int) -> int | None:
        return None


class Retry(Protocol):
    """Runs ``call(*args)`` until Redis answers it (the daemon's back-off), or just once."""

    def __call__(self, call: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T]:
        """The call's result, once it got one."""


async def _once(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await call(*args)


@dataclass(slots=True)
class Outcome:
    """What one tick or batch of updates did."""

    events: list[Event] = field(default_factory=list)
    applied: int = 0
    ignored: int = 0
    evaluated: int = 0
    failed: int = 0
    """Versions not stored after every compare-and-set round (contention; should be 0)."""


@dataclass(frozen=True, slots=True)
class Marked:
    """What one mark tick of a batch did (see :meth:`Engine.on_marks`)."""

    tick: PriceTick
    outcome: Outcome | None
    """None when the tick was stale (older than the stored mark) or its evaluation failed."""
    error: Exception | None = None
    """The bug that failed its evaluation (logged already)."""


class Engine:
    """Turns ticks and position versions into committed decisions and queued events."""

    def __init__(
        self,
        store: PositionStore,
        contracts: Mapping[str, Contract],
        risk: RiskLimits,
        topic_prefix: str,
        clock_ms: Callable[[], int] = _now_ms,
        *,
        guards: Guards | None = None,
        retry: Retry = _once,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        """``guards``: asked before a mark decides (none: every mark may); ``retry``: how
        :meth:`on_marks` runs each Redis step (the daemon's waits for Redis to answer);
        ``clock_ms``: wall clock for event times; ``clock_s``: the guards' monotonic clock."""
        self.store = store
        self.contracts = contracts
        self.risk = risk
        self.topic_prefix = topic_prefix
        self.clock_ms = clock_ms
        self.clock_s = clock_s
        self.guards: Guards = guards if guards is not None else _NoGuards()
        self.retry = retry
        self.generation = 1
        """Redis's generation (:mod:`monitor.state.epoch`), which event ids carry: set by whoever
        reads the epoch, never read from Redis per event."""

    def topic(self, event: Event) -> str:
        """The MQTT topic of an event."""
        return topics.events(self.topic_prefix, event.account, event.symbol, event.type.value)

    async def on_marks(self, ticks: Sequence[PriceTick]) -> AsyncIterator[Marked]:
        """The tick path: store marks of distinct symbols and decide what each one crossed.

        One round trip stores every mark and brings back the positions whose
        trigger it crossed (:meth:`accept_marks`); then each symbol's are
        decided and committed (:meth:`on_candidates`), liquidating only where
        the guards allow it at that moment. Each step runs through ``retry``;
        a retried commit is decided again with the same candidates, and
        compare-and-set keeps what went through from going through twice.
        Yields one :class:`Marked` per tick, in order, as soon as its commits
        are done. A bug in one symbol's evaluation is logged and yielded as an
        error, so it cannot take the other symbols down with it (nothing was
        committed for the failed part and its trigger stays crossed, so the
        next tick decides it again). Cancelling it is safe: what was committed
        stays committed, and what was not is decided again at the next tick.
        """
        found = await self.retry(self.accept_marks, ticks)
        for tick, candidates in zip(ticks, found, strict=True):
            if candidates is None:
                yield Marked(tick, None)
                continue
            outcome = Outcome()
            if candidates.records:
                allow = self.guards.may_liquidate(tick.symbol, self.clock_s())
                try:
                    outcome = await self.retry(self.on_candidates, tick, candidates, allow)
                except Exception as error:
                    log.exception(
                        "tick_evaluation_failed", symbol=tick.symbol, price=str(tick.price)
                    )
                    yield Marked(tick, None, error)
                    continue
            yield Marked(tick, outcome)

    async def on_mark(self, tick: PriceTick, allow_liquidation: bool = True) -> Outcome | None:
        """One mark, without guards or retries (recovery); None if the tick was stale."""
        candidates = (await self.accept_marks([tick]))[0]
        if candidates is None:
            return None
        return await self.on_candidates(tick, candidates, allow_liquidation)

    async def accept_marks(self, ticks: Sequence[PriceTick]) -> list[Candidates | None]:
        """:meth:`on_marks`' first step: store marks of distinct symbols in one round trip;
        each one's candidates (None for a stale tick)."""
        now_ms = self.clock_ms()
        return await self.store.accept_marks(
            [(t.symbol, t.price, t.ts_ms) for t in ticks],
            [self.guards.ts_ceiling_ms(t.symbol, now_ms) for t in ticks],
        )

    async def on_candidates(
        self, tick: PriceTick, candidates: Candidates, allow_liquidation: bool = True
    ) -> Outcome:
        """:meth:`on_marks`' second step: decide and commit the candidates a mark brought back."""
        quote = candidates.quote
        records = candidates.records
        outcome = Outcome(evaluated=len(records))
        if len(records) <= DECIDE_SLICE:
            # The common crossing tick: decided and committed at once, with no task
            # and no turn of the loop in between (each would add to its latency).
            decided = self._transitions(tick.symbol, records, quote, allow_liquidation)
            await self._commit(tick.symbol, decided, quote, outcome, allow_liquidation)
            return outcome
        # Decide and commit slice by slice, so that the first events of a large
        # burst (most underwater first) reach the publisher while the rest are
        # still being evaluated. A slice is decided while Redis commits the
        # one before (a 1,000-write commit takes Redis 10-20 ms), in parts
        # that give the loop back every DECIDE_SLICE positions: the commit in
        # flight, the publisher and other symbols' ticks run in between.
        # Commits still go one after another, so the outbox keeps the order.
        # The first slices are small (see commit_slices): the first event goes
        # out after a hundred positions are decided, not a thousand.
        try:
            async with asyncio.TaskGroup() as group:
                committing: asyncio.Task[None] | None = None
                for start, end in commit_slices(len(records)):
                    writes: list[Write] = []
                    for first in range(start, end, DECIDE_SLICE):
                        part = records[first : first + DECIDE_SLICE]
                        writes += self._transitions(tick.symbol, part, quote, allow_liquidation)
                        await asyncio.sleep(0)
                    if committing is not None:
                        await committing
                    committing = group.create_task(
                        self._commit(tick.symbol, writes, quote, outcome, allow_liquidation)
                    )
                if committing is not None:
                    # Awaited here, not left to the group's exit: on Python 3.11 a
                    # task failing while the group waits at its exit leaves the
                    # caller cancelled for good (the worker's raise_if_cancelling).
                    await committing
        except ExceptionGroup as failures:
            # Callers retry on the one error (Redis down): the tick is decided
            # again, and compare-and-set keeps what was committed from being
            # committed twice.
            raise failures.exceptions[0] from failures
        return outcome

    async def on_index(self, tick: PriceTick) -> bool:
        """Keep an index price for reporting; False if it was older than the stored one."""
        ceiling = self.guards.ts_ceiling_ms(tick.symbol, self.clock_ms())
        return await self.store.accept_index(tick.symbol, tick.price, tick.ts_ms, ceiling)

    async def apply_updates(self, updates: Iterable[PositionUpdate]) -> Outcome:
        """Store new position versions, evaluating each against its symbol's latest mark.

        Versions of one position are applied in the order given; each version
        that causes a transition queues its own event. However many symbols
        they span, every :data:`COMMIT_SLICE` versions cost two round trips:
        their symbols' marks and stored records in one, the commits in the other.
        """
        waves: list[dict[str, list[PositionUpdate]]] = []
        seen: dict[str, int] = {}
        for update in updates:
            # The n-th version of an id in this batch goes to wave n, so a
            # wave holds each id at most once and waves apply in order.
            n = seen.get(update.id, 0)
            seen[update.id] = n + 1
            if n == len(waves):
                waves.append({})
            waves[n].setdefault(update.symbol, []).append(update)
        outcome = Outcome()
        for wave in waves:
            pending = wave
            for _ in range(MAX_ATTEMPTS):
                pending = await self._apply_wave(pending, outcome)
                if not pending:
                    break
            else:
                for symbol, left in pending.items():
                    outcome.failed += len(left)
                    log.error("position_update_gave_up", symbol=symbol, count=len(left))
        return outcome

    async def recover(self) -> int:
        """Re-evaluate every symbol at its last known mark (at start, before new ticks)."""
        total = 0
        for symbol in self.contracts:
            quote = await self.store.quote(symbol)
            if quote is None:
                continue
            tick = PriceTick(symbol, PriceKind.MARK, quote.mark, quote.mark_ts_ms, "recovery")
            outcome = await self.on_mark(tick)
            if outcome is not None:
                total += len(outcome.events)
        return total

    async def _apply_wave(
        self, wave: Mapping[str, Sequence[PositionUpdate]], outcome: Outcome
    ) -> dict[str, list[PositionUpdate]]:
        """One compare-and-set round over distinct ids; returns the updates to retry.

        The wave goes in groups of about :data:`COMMIT_SLICE` versions (small
        symbols share a group, a large one spans several), a few in flight: one
        group is decided while Redis runs the commits of another.
        """
        retry: dict[str, list[PositionUpdate]] = {}
        limit = asyncio.Semaphore(GROUPS_IN_FLIGHT)

        async def apply(group: dict[str, Sequence[PositionUpdate]]) -> None:
            async with limit:
                for symbol, updates in (await self._apply_group(group, outcome)).items():
                    retry.setdefault(symbol, []).extend(updates)

        try:
            async with asyncio.TaskGroup() as tasks:
                # Waited for here, not left to the group's exit (see on_candidates).
                await asyncio.wait(
                    [tasks.create_task(apply(g)) for g in _groups(wave, COMMIT_SLICE)]
                )
        except ExceptionGroup as failures:
            # Callers retry on the one error (Redis down); a version applied
            # before it is ignored on the retry (its seq is no longer newer).
            raise failures.exceptions[0] from failures
        return retry

    async def _apply_group(
        self, group: Mapping[str, Sequence[PositionUpdate]], outcome: Outcome
    ) -> dict[str, list[PositionUpdate]]:
        """Read, decide and commit a group: two round trips, whatever its symbols."""
        stored = await self.store.versions(
            {symbol: [update.id for update in updates] for symbol, updates in group.items()}
        )
        now = self.clock_ms()
        risk, generation, write = self.risk, self.generation, self._write
        calls: list[Commit] = []
        for symbol, updates in group.items():
            contract = self.contracts[symbol]
            quote, found = stored[symbol]
            # On a stale mark (price guard) a version is stored but not judged;
            # the first fresh tick evaluates it through the trigger index.
            usable = (
                quote
                if quote is not None and self.guards.may_decide(symbol, self.clock_s())
                else None
            )
            writes = []
            for update, pair in zip(updates, found, strict=True):
                previous, raw = pair if pair is not None else (None, None)
                decision = apply_update(contract, previous, update, usable, risk, now, generation)
                if decision is not None:
                    writes.append(write(decision, raw))
            outcome.ignored += len(updates) - len(writes)
            calls.append((symbol, writes, DecidedAt.quote(quote)))
        retry: dict[str, list[PositionUpdate]] = {}
        results = await self.store.commit_many(calls)
        for (symbol, decided, _), conflicts in zip(calls, results, strict=True):
            updates = group[symbol]
            if conflicts is None:  # a tick moved the mark meanwhile: decide again
                outcome.ignored -= len(updates) - len(decided)
                retry[symbol] = list(updates)
                continue
            for done in decided:
                if done.record.id not in conflicts:
                    outcome.applied += 1
                    if done.event is not None:
                        outcome.events.append(done.event)
            if conflicts:
                retry[symbol] = [update for update in updates if update.id in conflicts]
        return retry

    async def _reevaluate(
        self, symbol: str, ids: list[str], quote: Quote, allow_liquidation: bool
    ) -> list[Write]:
        found = [pair for pair in await self.store.records(symbol, ids) if pair is not None]
        return self._transitions(symbol, found, quote, allow_liquidation)

    def _transitions(
        self,
        symbol: str,
        records: Sequence[tuple[PositionRecord, bytes]],
        quote: Quote,
        allow_liquidation: bool,
    ) -> list[Write]:
        """The writes for the records that change status at ``quote`` (pure: no I/O)."""
        contract = self.contracts[symbol]
        now = self.clock_ms()
        writes = []
        for record, raw in records:
            decision = evaluate(
                contract, record, quote, self.risk, now, allow_liquidation, self.generation
            )
            if decision.event is not None:
                writes.append(self._write(decision, raw))
        return writes

    async def _commit(
        self,
        symbol: str,
        writes: list[Write],
        quote: Quote,
        outcome: Outcome,
        allow_liquidation: bool,
    ) -> None:
        for _ in range(MAX_ATTEMPTS):
            if not writes:
                return
            conflicts = await self.store.commit(symbol, writes)
            assert conflicts is not None  # no quote check on the tick path
            outcome.events += [w.event for w in writes if w.event and w.record.id not in conflicts]
            if not conflicts:
                return
            writes = await self._reevaluate(symbol, sorted(conflicts), quote, allow_liquidation)
        log.error("tick_commit_gave_up", symbol=symbol, count=len(writes))

    def _write(self, decision: Decision, expected: bytes | None) -> Write:
        event = decision.event
        topic = self.topic(event) if event else ""
        return Write(decision.record, expected, decision.triggers, event, topic)


def commit_slices(count: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of each commit of a tick's ``count`` candidates: from
    :data:`DECIDE_SLICE` positions, doubling up to :data:`COMMIT_SLICE`."""
    start, size = 0, DECIDE_SLICE
    while start < count:
        end = min(start + size, count)
        yield start, end
        start, size = end, min(size * 2, COMMIT_SLICE)


def _groups(
    wave: Mapping[str, Sequence[PositionUpdate]], size: int
) -> Iterator[dict[str, Sequence[PositionUpdate]]]:
    """The wave in groups of at most ``size`` versions; a symbol at most once per group."""
    group: dict[str, Sequence[PositionUpdate]] = {}
    count = 0
    for symbol, updates in wave.items():
        for start in range(0, len(updates), size):
            part = updates[start : start + size]
            if group and count + len(part) > size:
                yield group
                group, count = {}, 0
            group[symbol] = part
            count += len(part)
    if group:
        yield group
