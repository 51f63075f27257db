"""Funding commits against a real Redis: batches, a mark moved meanwhile, a record changed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import orjson
import pytest
import redis.asyncio as aioredis
from harness import settings_for

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import Limits
from monitor.core.funding import FundingRate
from monitor.core.margin import Side
from monitor.core.position import PositionUpdate
from monitor.service.engine import COMMIT_SLICE, Engine
from monitor.service.funding import FundingDesk
from monitor.state.keys import Keys
from monitor.state.positions import DecidedAt, FundingResult, FundingWrite, PositionStore
from monitor.state.transport import Transport

NOW_MS = 1_732_406_400_500
FUNDING = FundingRate("BTCUSDT", Decimal("0.0001"), 1_732_406_400_000)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis, closed after the test."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def desk(store: PositionStore, redis_url: str, mqtt_url: str, prefix: str) -> FundingDesk:
    """A funding desk on ``store`` for BTCUSDT, its clock stopped just after the funding time."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    engine = Engine(store, settings.symbols, settings.risk, prefix, clock_ms=lambda: NOW_MS)
    return FundingDesk(engine, {"BTCUSDT"})


def long(n: int, seq: int = 1, margin: str = "3000") -> PositionUpdate:
    """Long n: 0.5 BTC at 60,000."""
    return PositionUpdate(
        f"p-{n}",
        "acct-1",
        "BTCUSDT",
        Side.LONG,
        Decimal("0.5"),
        Decimal(60000),
        Decimal(margin),
        seq,
    )


async def events_of(client: aioredis.Redis, prefix: str) -> list[tuple[str, str]]:
    """BTCUSDT's outbox: (event id, amount) of each funding_applied, in order."""
    entries = await client.xrange(Keys(prefix).outbox("BTCUSDT"))
    payloads = [orjson.loads(fields[b"payload"]) for _, fields in entries]
    return [(p["event_id"], p["amount"]) for p in payloads if p["type"] == "funding_applied"]


async def test_every_batch_of_a_large_symbol_pays_once(
    client: aioredis.Redis, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """2.5 batches of positions in one funding time: each pays 3 once; applied again, none."""
    store = PositionStore(Transport.of(client), Keys(prefix), Limits())
    funding = desk(store, redis_url, mqtt_url, prefix)
    count = COMMIT_SLICE * 5 // 2
    await funding.engine.on_mark(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(60000), 1, "t"))
    await funding.engine.apply_updates([long(n) for n in range(count)])

    first = await funding.apply(FUNDING)
    again = await funding.apply(FUNDING)

    assert first is not None and again is not None
    assert (first.applied, len(first.events), again.applied, again.ignored) == (
        count,
        count,
        0,
        count,
    )
    assert {amount for _, amount in await events_of(client, prefix)} == {"-3"}
    margins = {record.margin for record in await store.all_records("BTCUSDT")}
    assert margins == {Decimal(2997)}


class _TickedBetween(PositionStore):
    """A store whose first funding commit is preceded by a tick to ``mark`` (another task)."""

    mark = Decimal(50000)
    ticked = False

    async def funding_many(
        self,
        symbol: str,
        funding_ts_ms: int,
        batches: Sequence[Sequence[FundingWrite]],
        decided_at: DecidedAt,
    ) -> list[FundingResult | None]:
        if not self.ticked:
            self.ticked = True
            await self.accept_mark(symbol, self.mark, 2)
        return await super().funding_many(symbol, funding_ts_ms, batches, decided_at)


async def test_a_tick_between_deciding_and_committing_has_the_payment_decided_again(
    client: aioredis.Redis, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The mark moves from 60,000 to 50,000 while payments are decided: nothing of the first
    decision is written; the payment is made once, at 50,000 (2.5, not 3)."""
    store = _TickedBetween(Transport.of(client), Keys(prefix), Limits())
    funding = desk(store, redis_url, mqtt_url, prefix)
    await funding.engine.on_mark(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(60000), 1, "t"))
    await funding.engine.apply_updates([long(1)])

    outcome = await funding.apply(FUNDING)

    assert outcome is not None and outcome.applied == 1
    assert await events_of(client, prefix) == [("p-1:1:1", "-2.5")]


class _NewVersionBetween(PositionStore):
    """A store whose first funding commit is preceded by a new version of p-1 (margin 4,000)."""

    engine: Engine | None = None

    async def funding_many(
        self,
        symbol: str,
        funding_ts_ms: int,
        batches: Sequence[Sequence[FundingWrite]],
        decided_at: DecidedAt,
    ) -> list[FundingResult | None]:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.apply_updates([long(1, seq=2, margin="4000")])
        return await super().funding_many(symbol, funding_ts_ms, batches, decided_at)


async def test_a_version_between_deciding_and_committing_pays_on_the_new_version(
    client: aioredis.Redis, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A new version lands between the decision and the commit: the payment is decided again
    on it (margin 4,000 − 3), and its event belongs to version 2."""
    store = _NewVersionBetween(Transport.of(client), Keys(prefix), Limits())
    funding = desk(store, redis_url, mqtt_url, prefix)
    await funding.engine.on_mark(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(60000), 1, "t"))
    await funding.engine.apply_updates([long(1)])
    store.engine = funding.engine

    outcome = await funding.apply(FUNDING)

    assert outcome is not None and outcome.applied == 1
    assert await events_of(client, prefix) == [("p-1:2:1", "-3")]
    [record] = await store.all_records("BTCUSDT")
    assert (record.seq, record.margin) == (2, Decimal(3997))


async def test_a_funding_time_due_before_a_take_over_is_applied_by_the_new_holder(
    client: aioredis.Redis, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Due while another monitor holds the symbol, the funding time is kept; once this monitor
    holds it (the other died without paying), it pays, once."""
    store = PositionStore(Transport.of(client), Keys(prefix), Limits())
    funding = desk(store, redis_url, mqtt_url, prefix)
    held = False
    funding.owns = lambda symbol: held
    await funding.engine.on_mark(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(60000), 1, "t"))
    await funding.engine.apply_updates([long(1)])
    assert funding.announce(FUNDING)

    before = await funding.apply_due()
    held = True
    after = await funding.apply_due()
    later = await funding.apply_due()

    assert (before, [o.applied for o in after], later) == ([], [1], [])
    assert await events_of(client, prefix) == [("p-1:1:1", "-3")]
