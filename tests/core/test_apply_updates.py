"""Position versions in batches: pipelined across symbols, same outcome as one at a time."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
import redis.asyncio as aioredis
from harness import settings_for

from monitor.config.model import Limits
from monitor.core.evaluation import Quote
from monitor.core.margin import Side
from monitor.core.position import PositionUpdate
from monitor.service.engine import Engine
from monitor.state.keys import Keys
from monitor.state.positions import Found, PositionStore
from monitor.state.transport import Transport

MARKS = {"BTCUSDT": "64000", "ETHUSDT": "3400.5", "BTCUSD": "64000"}
NOW_MS = 1_732_400_000_000


def _engine(store: PositionStore, redis_url: str, mqtt_url: str, prefix: str) -> Engine:
    """An engine on ``store``, its events' topics under ``prefix``, its clock stopped."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    return Engine(store, settings.symbols, settings.risk, prefix, clock_ms=lambda: NOW_MS)


async def _market(client: aioredis.Redis, prefix: str) -> None:
    for symbol, mark in MARKS.items():
        await client.hset(Keys(prefix).price(symbol), mapping={"mark": mark, "mark_ts": 1})


def _batch(seed: int, count: int) -> list[PositionUpdate]:
    """Versions of 40 positions over three symbols (one inverse): repeated ids, side flips,
    older versions after newer ones, closes, and margins from safe to liquidated at the mark."""
    rng = random.Random(seed)
    ids = [(f"p-{n}", list(MARKS)[n % 3]) for n in range(40)]
    updates = []
    for _ in range(count):
        position_id, symbol = rng.choice(ids)
        mark = Decimal(MARKS[symbol])
        inverse = symbol == "BTCUSD"
        qty = Decimal(rng.randint(1, 50)) if inverse else Decimal(rng.randint(1, 2000)) / 100
        if rng.random() < 0.05:
            qty = Decimal(0)
        entry = (mark * Decimal(rng.randint(980, 1020)) / 1000).quantize(Decimal("0.1"))
        notional = qty * 100 / entry if inverse else qty * entry
        leverage = Decimal(rng.choice((2, 10, 50, 90, 120, 200)))
        margin = (notional / leverage).quantize(Decimal("1e-8")) or Decimal("0.01")
        updates.append(
            PositionUpdate(
                position_id,
                f"acct-{rng.randint(1, 3)}",
                symbol,
                rng.choice((Side.LONG, Side.SHORT)),
                qty,
                entry,
                margin,
                rng.randint(1, 12),
            )
        )
    return updates


async def _state(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every record and trigger, and each symbol's outbox events in order."""
    keys = Keys(prefix)
    state: dict[str, Any] = {}
    for symbol in MARKS:
        state[f"{symbol} records"] = await client.hgetall(keys.positions(symbol))
        for key in keys.all_triggers(symbol):
            state[key.removeprefix(prefix)] = await client.zrange(key, 0, -1, withscores=True)
        entries = await client.xrange(keys.outbox(symbol))
        state[f"{symbol} events"] = [
            (fields[b"event_id"], fields[b"topic"], orjson.loads(fields[b"payload"]))
            for _, fields in entries
        ]
    return state


def _by_position(events: Sequence[tuple[bytes, bytes, Any]]) -> dict[str, list[Any]]:
    """A symbol's events grouped by position, each position's in the order they were queued."""
    grouped: dict[str, list[Any]] = {}
    for event in events:
        grouped.setdefault(event[2]["position_id"], []).append(event)
    return grouped


async def test_a_batch_stores_and_announces_what_one_version_at_a_time_does(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """300 versions over three symbols in one call, against the same applied one by one."""
    client = aioredis.Redis.from_url(redis_url)
    batched, single = f"{prefix}-b", f"{prefix}-s"
    for name in (batched, single):
        await _market(client, name)
    updates = _batch(seed=7, count=300)

    transport = Transport.of(client)
    engine = _engine(PositionStore(transport, Keys(batched), Limits()), redis_url, mqtt_url, prefix)
    together = await engine.apply_updates(updates)
    engine = _engine(PositionStore(transport, Keys(single), Limits()), redis_url, mqtt_url, prefix)
    one_by_one = [await engine.apply_updates([update]) for update in updates]

    expected = await _state(client, single)
    actual = await _state(client, batched)
    await client.aclose()
    # The batch does announce transitions and does carry versions that are not newer.
    assert sum(len(o.events) for o in one_by_one) > 10
    assert sum(o.ignored for o in one_by_one) > 10
    assert (
        sum(o.applied for o in one_by_one),
        sum(o.ignored for o in one_by_one),
        sum(len(o.events) for o in one_by_one),
        0,
    ) == (together.applied, together.ignored, len(together.events), together.failed)
    for symbol in MARKS:
        # Symbols and positions are independent, so only each position's own order counts.
        events = f"{symbol} events"
        assert _by_position(expected.pop(events)) == _by_position(actual.pop(events))
    assert expected == actual


class _InterferedOnce(PositionStore):
    """A position store whose first read of versions is followed by another writer's ``write``."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, write: Callable[[], Awaitable[object]]
    ) -> None:
        super().__init__(Transport.of(client), keys, Limits())
        self.writes = [write]

    async def versions(
        self, wanted: Mapping[str, Sequence[str]]
    ) -> dict[str, tuple[Quote | None, list[Found]]]:
        found = await super().versions(wanted)
        if self.writes:
            await self.writes.pop()()
        return found


async def test_a_mark_moved_between_read_and_commit_is_decided_again_at_the_new_mark(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The commit refuses the stale decision; the retry calls the margin at the new mark."""
    client = aioredis.Redis.from_url(redis_url)
    await _market(client, prefix)
    keys = Keys(prefix)
    # A tick moves BTCUSDT's mark.
    store = _InterferedOnce(
        client,
        keys,
        lambda: client.hset(keys.price("BTCUSDT"), mapping={"mark": "57880", "mark_ts": 2}),
    )
    engine = _engine(store, redis_url, mqtt_url, prefix)
    # 1 BTC long at 64,000 with 6,400 margin: healthy at 64,000, MM/MB = 0.855 at 57,880.
    called = PositionUpdate(
        "p-1", "a", "BTCUSDT", Side.LONG, Decimal(1), Decimal(64000), Decimal(6400), 1
    )
    other = PositionUpdate(
        "p-2", "a", "ETHUSDT", Side.SHORT, Decimal(1), Decimal(3400), Decimal(340), 1
    )
    outcome = await engine.apply_updates([called, other])
    await client.aclose()
    assert (2, 0, 0) == (outcome.applied, outcome.ignored, outcome.failed)
    assert [("margin_call", "57880")] == [
        (event.type.value, event.payload["mark_price"]) for event in outcome.events
    ]


async def test_a_newer_version_stored_meanwhile_wins_the_compare_and_set(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A conflicting id is read again and found not newer; the rest of the batch is stored."""
    client = aioredis.Redis.from_url(redis_url)
    await _market(client, prefix)
    newer = b'["a","long","2","64000","6400",5,"healthy",0]'
    keys = Keys(prefix)
    # Another monitor stores a newer version of p-1.
    store = _InterferedOnce(
        client, keys, lambda: client.hset(keys.positions("BTCUSDT"), "p-1", newer)
    )
    engine = _engine(store, redis_url, mqtt_url, prefix)
    updates = [
        PositionUpdate(
            f"p-{n}", "a", "BTCUSDT", Side.LONG, Decimal(1), Decimal(64000), Decimal(6400), 1
        )
        for n in range(1, 4)
    ]
    outcome = await engine.apply_updates(updates)
    stored = await client.hgetall(Keys(prefix).positions("BTCUSDT"))
    await client.aclose()
    assert (2, 1, 0) == (outcome.applied, outcome.ignored, outcome.failed)
    assert newer == stored[b"p-1"]
    assert {b"p-1", b"p-2", b"p-3"} == set(stored)


async def test_one_batch_walks_a_position_through_its_whole_life(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Opened, liquidated by its own thin version, reopened healthy, closed, reopened: each
    version moves by its row of the status table, in order, within one call; only the
    liquidation is announced, and the last version is what stays."""
    client = aioredis.Redis.from_url(redis_url)
    await _market(client, prefix)
    engine = _engine(
        PositionStore(Transport.of(client), Keys(prefix), Limits()), redis_url, mqtt_url, prefix
    )

    def version(seq: int, margin: str, qty: str = "1") -> PositionUpdate:
        """Version ``seq`` of a BTCUSDT long at 64,000 (mark 64,000)."""
        return PositionUpdate(
            "p-1", "a", "BTCUSDT", Side.LONG, Decimal(qty), Decimal(64000), Decimal(margin), seq
        )

    life = [
        version(1, "6400"),  # healthy
        version(2, "100"),  # margin far below maintenance at the mark: liquidated
        version(3, "6400"),  # a new version after a liquidation starts healthy
        version(4, "0", qty="0"),  # closed: a tombstone
        version(5, "6400"),  # reopened, healthy
    ]
    outcome = await engine.apply_updates(life)
    stored = await client.hget(Keys(prefix).positions("BTCUSDT"), "p-1")
    state = await _state(client, prefix)
    await client.aclose()
    assert (5, 0, 0) == (outcome.applied, outcome.ignored, outcome.failed)
    assert [("p-1:2:1", "liquidation")] == [
        (event.event_id, event.type.value) for event in outcome.events
    ]
    assert ["p-1:2:1"] == [event_id.decode() for event_id, _, _ in state["BTCUSDT events"]]
    assert b'["a","long","1","64000","6400",5,"healthy",0]' == stored
