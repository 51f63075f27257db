"""The daemon's liquidation books, kept current from each symbol's change log.

``/api/stress``, ``/api/liquidation-map`` and the liquidation gauges answer from a
:class:`~monitor.core.book.LiquidationBook` per symbol, held in the daemon's memory,
whose cost per answer does not grow with the book. This module keeps each one
equal to what Redis stores:

Filing
    The first time a symbol is asked for (or when its copy can no longer be
    brought up to date), its book is filed from every stored record (``HSCAN``),
    after the change log's position has been noted; a record written during
    the scan is named by an entry after that position, and re-read below.
Catching up
    Every call of ``commit.lua`` and ``funding.lua`` (the only scripts that
    write records) adds one entry naming the ids it wrote to the symbol's
    change log, in the same atomic call (``note_changes`` in ``reindex.lua``).
    Before each answer the entries after the book's position are read and the
    ids they name re-read and re-filed. A re-read record may be newer than the
    entry that named it; its own entry comes later and re-reads it again, so
    the book converges on the stored records, and equals them once the writes
    stop. So an answer costs the records written since the last one.
Falling behind
    The log keeps about the last thousand calls. Its counts (``entries-added``
    and its length, read with the entries in one call, ``lua/changes.lua``) say
    when entries after the book's position were trimmed before it read them,
    or when the log was lost with the rest of Redis's data; the book is then
    filed afresh.

The work runs in tasks of :meth:`Books.run` (in the daemon's task group), with the
loop given back every :data:`~monitor.state.readmodel.TURN` records, so that a
request that stops waiting (:class:`BookPending`) does not abandon a book half
filed, and two requests for a symbol share one catching up. Filing a book of a
million positions takes tens of seconds of the daemon's CPU; the benchmark
(``benchmarks/stress.py``) measures it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field

import structlog

from monitor.core.book import LiquidationBook
from monitor.core.errors import Unavailable
from monitor.core.margin import Contract
from monitor.core.status import RiskLimits
from monitor.state.readmodel import REDIS_DOWN, TURN, WALK_PAGE, ReadModel

log = structlog.get_logger("liqmon.books")

CHANGES_PAGE = 100
"""Change-log entries read per round trip."""


class BookPending(Unavailable):
    """A symbol's book is still being filed (``filed`` positions so far), or brought up to
    date (``filed`` None)."""

    def __init__(self, symbol: str, filed: int | None) -> None:
        doing = "brought up to date" if filed is None else f"filed ({filed:,} positions so far)"
        super().__init__(
            f"the liquidation book of {symbol} is being {doing}: try again in a few seconds"
        )
        self.symbol = symbol
        self.filed = filed


@dataclass(slots=True)
class _Followed:
    """One symbol's book and where it stands in the change log."""

    book: LiquidationBook
    filing: LiquidationBook | None = None
    """A book being filed afresh (it replaces ``book`` when done)."""
    cursor: str = "0-0"
    read: int = -1
    """Entries of the log up to ``cursor`` (entries-added then); -1: never filed."""
    asked: int = 0
    served: int = 0
    task: asyncio.Task[BaseException | None] | None = field(default=None, repr=False)


class Books:
    """A liquidation book per symbol asked for, kept current (module doc)."""

    def __init__(
        self,
        reads: ReadModel,
        contracts: Mapping[str, Contract],
        risk: RiskLimits,
        on_unreadable: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_unreadable``: called for each stored record a book leaves out because it
        cannot be read (the daemon counts them)."""
        self.reads = reads
        self.contracts = dict(contracts)
        self.risk = risk
        self.on_unreadable = on_unreadable
        self._followed: dict[str, _Followed] = {}
        self._group: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()

    async def run(self) -> None:
        """Hold the task group the books are filed and caught up in, until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._running.set()
            try:
                await asyncio.Event().wait()
            finally:
                self._running.clear()
                self._group = None

    async def book(self, symbol: str, wait_s: float) -> LiquidationBook:
        """``symbol``'s book, up to date with every write made before this call. Waits up
        to ``wait_s`` (:class:`BookPending` after), and raises what stopped it (Redis
        down, say)."""
        followed = self._followed.get(symbol)
        if followed is None:
            contract = self.contracts[symbol]
            followed = self._followed[symbol] = _Followed(LiquidationBook(contract, self.risk))
        followed.asked += 1
        ticket = followed.asked
        try:
            async with asyncio.timeout(wait_s):
                await self._running.wait()
                while followed.served < ticket:
                    task = followed.task
                    if task is None or task.done():
                        task = followed.task = self._start(self._update(symbol, followed))
                    failure = await asyncio.shield(task)
                    if failure is not None:
                        raise failure
        except TimeoutError:
            filing = followed.filing
            if filing is not None or followed.read < 0:
                raise BookPending(symbol, 0 if filing is None else len(filing)) from None
            raise BookPending(symbol, None) from None
        return followed.book

    def _start(
        self, work: Coroutine[object, object, BaseException | None]
    ) -> asyncio.Task[BaseException | None]:
        assert self._group is not None  # run() is running
        return self._group.create_task(work)

    async def _update(self, symbol: str, followed: _Followed) -> BaseException | None:
        """Bring ``followed`` up to date; what stopped it, if anything (the waiting
        requests raise it; the task group must not end for it)."""
        serving = followed.asked
        try:
            await self._catch_up(symbol, followed)
        except REDIS_DOWN as error:
            return error
        except Exception as error:
            # A bug (a record the book cannot file, say): logged; the daemon goes on.
            log.exception("liquidation_book_failed", symbol=symbol)
            return error
        followed.served = serving
        return None

    async def _catch_up(self, symbol: str, followed: _Followed) -> None:
        while True:
            page = await self.reads.changes_after(symbol, followed.cursor, CHANGES_PAGE)
            missed = followed.read < 0 or page.added < followed.read + len(page.entries)
            if missed or followed.read < page.added - page.kept:
                await self._file(symbol, followed)
                continue
            if not page.entries:
                if page.added != followed.read:
                    # The log was lost and written again since: its ids are not ours.
                    followed.read = -1
                    continue
                return
            ids = list(dict.fromkeys(i for _, named in page.entries for i in named))
            for start in range(0, len(ids), WALK_PAGE):
                chunk = ids[start : start + WALK_PAGE]
                raws = await self.reads.raw_records(symbol, chunk)
                for n, (position_id, raw) in enumerate(zip(chunk, raws, strict=True), 1):
                    self._apply(symbol, followed.book, position_id, raw)
                    if n % TURN == 0:
                        await asyncio.sleep(0)
            followed.cursor = page.entries[-1][0]
            followed.read += len(page.entries)

    def _apply(
        self, symbol: str, book: LiquidationBook, position_id: str, raw: bytes | None
    ) -> None:
        """File one stored record; one that cannot be read is left out, logged and counted
        (the monitor's own evaluation rejects it too), and the book goes on."""
        try:
            book.apply(position_id, raw)
        except (ValueError, ArithmeticError) as error:
            log.error(
                "liquidation_book_unreadable", symbol=symbol, id=position_id, error=str(error)
            )
            self.on_unreadable()

    async def _file(self, symbol: str, followed: _Followed) -> None:
        """File the book afresh from every stored record; its log position first."""
        log.info("liquidation_book_filing", symbol=symbol, previous=len(followed.book))
        start = await self.reads.changes_after(symbol, "0-0", 0)
        book = followed.filing = LiquidationBook(self.contracts[symbol], self.risk)
        try:
            handed = 0
            async for position_id, raw in self.reads.scan_records(symbol):
                self._apply(symbol, book, position_id, raw)
                handed += 1
                if handed % TURN == 0:
                    await asyncio.sleep(0)
        finally:
            followed.filing = None
        followed.book, followed.cursor, followed.read = book, start.last, start.added
        log.info("liquidation_book_filed", symbol=symbol, positions=len(book))
