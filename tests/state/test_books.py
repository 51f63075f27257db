"""The daemon's liquidation books follow what Redis stores, against a real redis-server.

Two writers (two connections, as two monitors would have) commit new versions,
closes, liquidations and funding payments of one symbol, some of them conflicting;
the book a third connection follows (:class:`~monitor.state.books.Books`) must
answer every stress, map and gauge exactly as the position-by-position
computation over the stored records does (:mod:`monitor.core.stress`), after each
round: through a writer cancelled in the middle of a burst of commits, a reader
further behind than the change log keeps, and a Redis that lost its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from stress_book import CONTRACTS, random_book

from monitor.config.model import Limits, RedisSettings
from monitor.core.evaluation import Triggers
from monitor.core.margin import Contract, Side
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.stress import Within, liquidation_map, stress
from monitor.state.books import BookPending, Books
from monitor.state.keys import Keys
from monitor.state.positions import UNCHECKED, FundingWrite, PositionStore, Write
from monitor.state.readmodel import ReadModel
from monitor.state.transport import connect

RISK = RiskLimits()
LINEAR, INVERSE = CONTRACTS["binance"], CONTRACTS["binance-inverse"]
CENTER = Decimal(60000)


@contextlib.asynccontextmanager
async def following(
    redis_url: str, prefix: str, contracts: list[Contract]
) -> AsyncIterator[tuple[Books, list[PositionStore]]]:
    """A running :class:`Books` on its own connection, and two writers."""
    settings = RedisSettings(redis_url)
    stores = [PositionStore(connect(settings), Keys(prefix), Limits()) for _ in range(2)]
    reads = ReadModel(connect(settings), Keys(prefix))
    books = Books(reads, {contract.symbol: contract for contract in contracts}, RISK)
    try:
        async with asyncio.TaskGroup() as group:
            running = group.create_task(books.run())
            try:
                yield books, stores
            finally:
                running.cancel()
    finally:
        for store in stores:
            await store.transport.aclose()
        await reads.aclose()


async def agrees(books: Books, store: PositionStore, contract: Contract) -> int:
    """The book's stress at many prices, two maps and the gauges equal the computation
    over every stored record; how many open positions the book holds."""
    book = await books.book(contract.symbol, 30)
    records = await store.all_records(contract.symbol)
    # As the API prints them: every digit of a linear figure, 28 of an inverse one (whose
    # Σx/E the book keeps to 60 places, tests/core/test_book.py).
    for factor in ("0.5", "0.8", "0.9", "0.95", "0.99", "1", "1.01", "1.05", "1.1", "1.3"):
        price = CENTER * Decimal(factor)
        expected = stress(contract, records, price, RISK).document(CENTER)
        assert book.stress(price).document(CENTER) == expected
    for low, high, step in ((30000, 90000, 1000), (51234, 68765, "77.7")):
        edges = (Decimal(low), Decimal(high), Decimal(step))
        wanted = [bucket.document() for bucket in liquidation_map(contract, records, *edges)]
        assert [b.document() for b in book.liquidation_map(*edges).buckets()] == wanted
    distances = [Decimal("0.01"), Decimal("0.05"), Decimal("0.1")]
    walked = Within(contract, CENTER, distances)
    for record in records:
        walked.add(record)
    filed = book.within(CENTER, distances)
    for side in Side:
        for distance in distances:
            assert filed.notional(side, distance) == walked.notional(side, distance)
    return len(book)


def versions(
    contract: Contract, stored: dict[str, PositionRecord], seed: int, count: int
) -> list[Write]:
    """New versions of random positions (some new, some over a stored one): new sizes,
    margins and sides, closes and liquidations."""
    rng = random.Random(seed)
    writes = []
    chosen = rng.sample(range(count * 2), count)
    for n, fresh in zip(chosen, random_book(contract, count, seed, CENTER), strict=True):
        position_id = f"p{n}"
        old = stored.get(position_id)
        seq = 1 if old is None else old.seq + 1
        record = PositionRecord(
            position_id,
            fresh.account,
            contract.symbol,
            fresh.side,
            fresh.qty,
            fresh.entry_price,
            fresh.margin,
            seq,
            fresh.status,
        )
        writes.append(Write(record, None if old is None else old.encode(), Triggers()))
        stored[position_id] = record
    return writes


@pytest.mark.parametrize("contract", [LINEAR, INVERSE], ids=["linear", "inverse"])
async def test_the_book_follows_two_writers_and_funding(
    redis_url: str, prefix: str, contract: Contract
) -> None:
    """Rounds of versions from two writers (the second's writes over records the first
    changed are conflicts, and written by neither), then a funding payment that moves
    every liquidation price: after each, every figure matches."""
    symbol = contract.symbol
    async with following(redis_url, prefix, [contract]) as (books, (one, two)):
        assert 0 == await agrees(books, one, contract)
        for round_ in range(6):
            stored = {record.id: record for record in await one.all_records(symbol)}
            first = versions(contract, dict(stored), round_ * 2, 60)
            second = versions(contract, dict(stored), round_ * 2 + 1, 60)
            await one.commit(symbol, first)
            conflicts = await two.commit(symbol, second)
            both = {write.record.id for write in first} & {write.record.id for write in second}
            assert both <= (conflicts or set())
            assert await agrees(books, one, contract) > 0
        open_ = [r for r in await one.all_records(symbol) if r.status is Status.HEALTHY]
        paid = [
            FundingWrite(
                PositionRecord(
                    r.id,
                    r.account,
                    symbol,
                    r.side,
                    r.qty,
                    r.entry_price,
                    r.margin * Decimal("0.9"),
                    r.seq,
                ),
                r.encode(),
                Triggers(),
                [],
            )
            for r in open_
        ]
        (result,) = await two.funding_many(symbol, 1, [paid], UNCHECKED)
        assert result is not None and not result.conflicts
        assert await agrees(books, one, contract) > 0


async def test_a_writer_cancelled_mid_burst_leaves_the_book_on_what_was_stored(
    redis_url: str, prefix: str
) -> None:
    """A burst of commits cancelled part way (as a monitor killed in the middle of one):
    each commit happened whole or not at all, and the book holds what Redis holds."""
    symbol = LINEAR.symbol
    positions = Keys(prefix).positions(symbol)
    async with following(redis_url, prefix, [LINEAR]) as (books, (one, two)):
        await agrees(books, two, LINEAR)
        writes = versions(LINEAR, {}, 7, 400)

        async def burst() -> None:
            for start in range(0, len(writes), 4):
                await one.commit(symbol, writes[start : start + 4])

        writing = asyncio.create_task(burst())
        while await two.client.hlen(positions) < 100:
            await asyncio.sleep(0.001)
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        stored = await two.all_records(symbol)
        assert 100 <= len(stored) < len(writes)
        filed = sum(1 for r in stored if r.status in (Status.HEALTHY, Status.MARGIN_CALL))
        assert filed == await agrees(books, two, LINEAR)


async def test_a_reader_behind_the_log_files_its_book_afresh(redis_url: str, prefix: str) -> None:
    """More commits than the change log keeps between two answers: the entries the book
    did not read are gone, so it is filed again from the stored records, and agrees."""
    symbol = LINEAR.symbol
    keys = Keys(prefix)
    async with following(redis_url, prefix, [LINEAR]) as (books, (one, _)):
        stored: dict[str, PositionRecord] = {}
        await one.commit(symbol, versions(LINEAR, stored, 1, 200))
        await agrees(books, one, LINEAR)
        calls = [(symbol, [write], UNCHECKED) for write in versions(LINEAR, stored, 2, 1500)]
        await one.commit_many(calls)
        assert await one.client.xlen(keys.changes(symbol)) < len(calls)
        assert await agrees(books, one, LINEAR) > 0


async def test_a_book_whose_redis_lost_its_data_is_filed_again(redis_url: str, prefix: str) -> None:
    """Redis loses everything (the change log too) and is written again: the book drops
    the positions it had, and holds the new ones."""
    symbol = LINEAR.symbol
    async with following(redis_url, prefix, [LINEAR]) as (books, (one, _)):
        stored: dict[str, PositionRecord] = {}
        await one.commit(symbol, versions(LINEAR, stored, 1, 100))
        before = await agrees(books, one, LINEAR)
        await one.client.flushdb()
        stored = {}
        for seed in range(3, 6):
            await one.commit(symbol, versions(LINEAR, stored, seed, 30))
        after = await agrees(books, one, LINEAR)
        assert 0 < after < before


async def test_a_request_that_stops_waiting_leaves_the_filing_going(
    redis_url: str, prefix: str
) -> None:
    """A book too large to file in the time a request waits: the request is told how far
    the filing is, and the filing goes on; the next request finds it done."""
    symbol = LINEAR.symbol
    async with following(redis_url, prefix, [LINEAR]) as (books, (one, _)):
        stored: dict[str, PositionRecord] = {}
        for seed in range(20):
            await one.commit(symbol, versions(LINEAR, stored, seed, 500))
        with pytest.raises(BookPending, match=r"being filed \(\d[\d,]* positions so far\)"):
            await books.book(symbol, 0.001)
        assert await agrees(books, one, LINEAR) > 0
