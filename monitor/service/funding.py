"""Funding: at each funding time, move each open position's payment through its margin.

Only for symbols with ``apply_funding = true``; everything else ignores funding.
Announcements (a rate and its funding time, from the MQTT topic
``{prefix}/funding/{symbol}`` or a venue feed) wait in a
:class:`~monitor.core.funding.FundingSchedule` until their time; then
:meth:`FundingDesk.apply` reads the symbol's records (HSCAN), their last funding
times (pipelined HMGETs) and its mark, then decides each payment with
:func:`~monitor.core.funding.apply_funding` and commits it with
``lua/funding.lua``, batch after batch of :data:`~monitor.service.engine.COMMIT_SLICE`
positions: record, triggers, the position's last funding time and the events
in one script per batch. The cost is O(positions of the symbol) per funding
time, off the tick path.

A funding time applied twice (a retry after Redis failed, a restart, two
monitors) pays once: the script skips a position whose last funding time is
this one or later, and event ids derive from the stored record, so an event
queued again has the id it had.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import structlog

from feeds.funding import FundingNotice
from feeds.source import FundingSource
from monitor.core.errors import Rejection
from monitor.core.evaluation import Quote
from monitor.core.funding import (
    FundingRate,
    FundingRule,
    FundingSchedule,
    apply_funding,
    funding_rate,
)
from monitor.core.position import PositionRecord
from monitor.core.status import Status
from monitor.service.engine import COMMIT_SLICE, DECIDE_SLICE, MAX_ATTEMPTS, Engine, Outcome
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.positions import UNCHECKED, DecidedAt, FundingWrite

log = structlog.get_logger("liqmon.funding")

POLL_S = 1.0
"""How often due funding times are looked for (a payment lands within this of its time)."""

UNOWNED_GRACE_S = 60.0
"""How long a due funding time of a symbol another monitor holds is kept: if its holder
died before applying it, this monitor applies it once it takes the symbol over (a
position the holder paid already is skipped, so none pays twice)."""

_OPEN = (Status.HEALTHY, Status.MARGIN_CALL)


class FundingDesk:
    """Holds announced funding times and applies them when due, through the engine's store."""

    def __init__(
        self,
        engine: Engine,
        enabled: Collection[str],
        rules: Mapping[str, FundingRule] | None = None,
        owns: Callable[[str], bool] = lambda symbol: True,
        on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    ) -> None:
        """``enabled``: the symbols with ``apply_funding``; ``rules``: each one's venue rule
        (left out: through the margin); ``owns``: whether this monitor holds a symbol's lease
        (another monitor applies the rest; both applying one would still pay once);
        ``on_outcome``: told what each funding time did (metrics, event log lines)."""
        self.engine = engine
        self.enabled = frozenset(enabled)
        self.rules = dict(rules or {})
        self.owns = owns
        self.on_outcome = on_outcome
        self.schedule = FundingSchedule()
        self.waiting: set[tuple[str, int]] = set()
        """Funding times waiting for their symbol's first mark (logged once each)."""
        self.applied = asyncio.Event()
        """Set after each funding time applied (tests and tools wait on it)."""

    def wire(self, sources: Iterable[object]) -> None:
        """Take the funding announcements of the venue feeds among ``sources`` (when some
        symbol applies funding; otherwise they are not even parsed)."""
        if not self.enabled:
            return
        for source in sources:
            if isinstance(source, FundingSource):
                source.on_funding(self.announce_notice)

    def announce_notice(self, notice: FundingNotice) -> None:
        """:meth:`announce` a feed's announcement; one out of bounds is logged and dropped."""
        try:
            funding = funding_rate(notice.symbol, str(notice.rate), notice.funding_ts_ms)
        except Rejection as rejection:
            log.warning("funding_rejected", source=notice.source, detail=rejection.detail)
            return
        self.announce(funding)

    def announce(self, funding: FundingRate) -> bool:
        """Hold ``funding`` until its time; False when it is ignored (the symbol does not
        apply funding, or the funding time was handed over already)."""
        if funding.symbol not in self.enabled:
            return False
        return self.schedule.announce(funding)

    async def run(self) -> None:
        """Apply the funding times that come due, forever; cancelling it is safe (a
        funding time cut short is applied again, and pays once per position)."""
        while True:
            raise_if_cancelling()
            await self.apply_due()
            await asyncio.sleep(POLL_S)

    async def apply_due(self) -> list[Outcome]:
        """Apply every funding time due now of the symbols this monitor holds."""
        outcomes = []
        now_ms = self.engine.clock_ms()
        for funding in self.schedule.due(now_ms):
            if not self.owns(funding.symbol):
                if now_ms - funding.funding_ts_ms < UNOWNED_GRACE_S * 1000:
                    self.schedule.retry(funding)
                continue
            try:
                outcome = await self.engine.retry(self.apply, funding)
                if outcome is None:  # no mark yet: the next poll tries again
                    self.schedule.retry(funding)
                else:
                    self.on_outcome(outcome)
                    outcomes.append(outcome)
            except Exception:
                # A bug, not Redis (retry waits for Redis): logged, and the funding time
                # is handed over again at the next poll.
                log.exception("funding_failed", symbol=funding.symbol, ts=funding.funding_ts_ms)
                self.schedule.retry(funding)
        return outcomes

    async def apply(self, funding: FundingRate) -> Outcome | None:
        """Apply one funding time to every open position of its symbol, once each.

        Payments are priced at the symbol's stored mark; with open positions and
        no mark stored yet there is nothing to price them at: None (nothing written;
        :meth:`apply_due` tries again at its next poll).
        """
        store, symbol = self.engine.store, funding.symbol
        outcome = Outcome()
        found = [pair for pair in await store.raw_records(symbol) if pair[0].status in _OPEN]
        if not found:
            self.applied.set()
            return outcome
        quote = await store.quote(symbol)
        if quote is None:
            if (symbol, funding.funding_ts_ms) not in self.waiting:
                self.waiting.add((symbol, funding.funding_ts_ms))
                log.warning("funding_without_mark", symbol=symbol, ts=funding.funding_ts_ms)
            return None
        self.waiting.discard((symbol, funding.funding_ts_ms))
        paid = await store.funded(symbol, [record.id for record, _ in found])
        pending = [
            pair for pair, last in zip(found, paid, strict=True) if last < funding.funding_ts_ms
        ]
        outcome.ignored = len(found) - len(pending)
        for start in range(0, len(pending), COMMIT_SLICE):
            part = pending[start : start + COMMIT_SLICE]
            quote = await self._apply_slice(funding, part, quote, outcome)
        log.info(
            "funding_applied",
            symbol=symbol,
            ts=funding.funding_ts_ms,
            rate=str(funding.rate),
            mark=str(quote.mark),
            positions=outcome.applied,
            skipped=outcome.ignored,
        )
        self.applied.set()
        return outcome

    async def _apply_slice(
        self,
        funding: FundingRate,
        records: Sequence[tuple[PositionRecord, bytes]],
        quote: Quote,
        outcome: Outcome,
    ) -> Quote:
        """Decide and commit one slice's payments (one script), again for the ids that
        changed meanwhile; the latest quote read. A slice at a time, so a tick has only one
        slice's decision time to land in between."""
        store, symbol = self.engine.store, funding.symbol
        for attempt in range(1, MAX_ATTEMPTS + 1):
            batch = await self._decide(funding, records, quote)
            # Decided at the stored mark, committed only while it is still the stored one,
            # as position versions are; but a symbol ticking through every attempt is paid
            # anyway at the last one: a trigger the tick in between crossed stays crossed
            # in the index, and the next tick takes it (candidates.lua takes every one).
            checked = DecidedAt.quote(quote) if attempt < MAX_ATTEMPTS else UNCHECKED
            [result] = await store.funding_many(symbol, funding.funding_ts_ms, [batch], checked)
            if result is None:  # a tick moved the mark: decide the slice again at it
                quote = await store.quote(symbol) or quote
                continue
            outcome.ignored += len(result.paid)
            skipped = result.conflicts | result.paid
            for write in batch:
                if write.record.id not in skipped:
                    outcome.applied += 1
                    outcome.events += [event for event, _ in write.events]
            if not result.conflicts:
                return quote
            found = await store.records(symbol, sorted(result.conflicts))
            records = [pair for pair in found if pair is not None and pair[0].status in _OPEN]
            if not records:
                return quote
        outcome.failed += len(records)
        log.error("funding_gave_up", symbol=symbol, count=len(records))
        return quote

    async def _decide(
        self,
        funding: FundingRate,
        records: Sequence[tuple[PositionRecord, bytes]],
        quote: Quote,
    ) -> list[FundingWrite]:
        """The payments of ``records`` at ``quote``, giving the loop back every
        :data:`DECIDE_SLICE` positions (ticks go on meanwhile)."""
        engine, symbol = self.engine, funding.symbol
        contract = engine.contracts[symbol]
        rule = self.rules.get(symbol, FundingRule.MARGIN)
        judge = engine.guards.may_decide(symbol, engine.clock_s())
        allow = engine.guards.may_liquidate(symbol, engine.clock_s())
        now = engine.clock_ms()
        batch: list[FundingWrite] = []
        for first in range(0, len(records), DECIDE_SLICE):
            for record, raw in records[first : first + DECIDE_SLICE]:
                decision = apply_funding(
                    contract,
                    record,
                    funding,
                    quote,
                    engine.risk,
                    now,
                    rule=rule,
                    judge=judge,
                    allow_liquidation=allow,
                    generation=engine.generation,
                )
                if decision is not None:
                    events = [(event, engine.topic(event)) for event in decision.events]
                    batch.append(FundingWrite(decision.record, raw, decision.triggers, events))
            await asyncio.sleep(0)
        return batch
