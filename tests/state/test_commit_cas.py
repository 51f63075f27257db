"""commit.lua's compare-and-set and tombstones, against a real redis-server: a new position
is written only while absent, a replacement only over the record it was decided on, and a
record ending closed or liquidated is a tombstone whatever its transition count."""

from __future__ import annotations

from decimal import Decimal

from monitor.config.model import Limits, RedisSettings
from monitor.core.evaluation import Triggers
from monitor.core.margin import Side
from monitor.core.position import PositionRecord
from monitor.core.status import Status
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore, Write, score_at_or_above
from monitor.state.transport import connect

SYMBOL = "BTCUSDT"
LARGEST_COUNT = 2**64 - 1
"""The largest transition count a record can carry (orjson writes integers up to it)."""


def _record(position_id: str, status: Status, transitions: int = 0, seq: int = 1) -> PositionRecord:
    return PositionRecord(
        position_id,
        "a",
        SYMBOL,
        Side.LONG,
        Decimal(1),
        Decimal(100),
        Decimal(10),
        seq,
        status,
        transitions,
    )


async def test_a_new_position_is_written_only_while_absent(redis_url: str, prefix: str) -> None:
    """A write expecting no record stores and indexes it; the same write again is a
    conflict and leaves the first record and its trigger as they were."""
    store = PositionStore(connect(RedisSettings(redis_url)), Keys(prefix), Limits())
    first = Write(_record("p-1", Status.HEALTHY), None, Triggers(down=Decimal(90)))
    again = Write(_record("p-1", Status.HEALTHY, seq=2), None, Triggers(down=Decimal(80)))
    try:
        assert set() == await store.commit(SYMBOL, [first])
        assert {"p-1"} == await store.commit(SYMBOL, [again])
        positions = store.keys.positions(SYMBOL)
        assert first.record.encode() == await store.client.hget(positions, "p-1")
        (down, *_) = store.keys.all_triggers(SYMBOL)
        (score,) = [score for _, score in await store.client.zrange(down, 0, -1, withscores=True)]
        assert float(score_at_or_above(Decimal(90))) == score
    finally:
        await store.transport.aclose()


async def test_a_replacement_is_written_only_over_the_record_it_was_decided_on(
    redis_url: str, prefix: str
) -> None:
    """Expecting the stored record replaces it; expecting another (or none) is a conflict."""
    store = PositionStore(connect(RedisSettings(redis_url)), Keys(prefix), Limits())
    stored = _record("p-1", Status.HEALTHY)
    newer = _record("p-1", Status.HEALTHY, seq=2)
    try:
        assert set() == await store.commit(SYMBOL, [Write(stored, None, Triggers())])
        stale = Write(newer, _record("p-1", Status.MARGIN_CALL).encode(), Triggers())
        assert {"p-1"} == await store.commit(SYMBOL, [stale])
        assert set() == await store.commit(SYMBOL, [Write(newer, stored.encode(), Triggers())])
        positions = store.keys.positions(SYMBOL)
        assert newer.encode() == await store.client.hget(positions, "p-1")
    finally:
        await store.transport.aclose()


async def test_a_tombstone_is_known_whatever_its_transition_count(
    redis_url: str, prefix: str
) -> None:
    """Records written liquidated or closed join the tombstones set, with the largest
    transition count a record can carry (the script reads only a record's tail); an
    open one does not, and reopening a tombstone takes it out."""
    store = PositionStore(connect(RedisSettings(redis_url)), Keys(prefix), Limits())
    liquidated = _record("p-liquidated", Status.LIQUIDATED, LARGEST_COUNT)
    closed = _record("p-closed", Status.CLOSED, LARGEST_COUNT)
    open_ = _record("p-open", Status.MARGIN_CALL, LARGEST_COUNT)
    tombstones = store.keys.tombstones(SYMBOL)
    try:
        writes = [Write(record, None, Triggers()) for record in (liquidated, closed, open_)]
        assert set() == await store.commit(SYMBOL, writes)
        assert {b"p-liquidated", b"p-closed"} == set(await store.client.zrange(tombstones, 0, -1))
        reopened = Write(_record("p-closed", Status.HEALTHY, seq=2), closed.encode(), Triggers())
        assert set() == await store.commit(SYMBOL, [reopened])
        assert [b"p-liquidated"] == await store.client.zrange(tombstones, 0, -1)
    finally:
        await store.transport.aclose()
