"""A mark's candidates, against a real redis-server: which sets it reads, in which order."""

from __future__ import annotations

from decimal import Decimal

from monitor.config.model import Limits, RedisSettings
from monitor.core.evaluation import Triggers
from monitor.core.margin import Side
from monitor.core.position import PositionRecord
from monitor.core.status import Status
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore, Write
from monitor.state.transport import connect

SYMBOL = "BTCUSDT"


def _write(position_id: str, side: Side, status: Status, triggers: Triggers) -> Write:
    record = PositionRecord(
        position_id, "a", SYMBOL, side, Decimal(1), Decimal(100), Decimal(10), 1, status
    )
    return Write(record, None, triggers)


async def test_a_mark_brings_back_the_worsening_sets_first_most_underwater_first(
    redis_url: str, prefix: str
) -> None:
    """A falling mark returns the longs past their worsening trigger (highest trigger first),
    then the longs and shorts whose improving trigger it crossed; a rising mark the shorts
    past theirs (lowest first), then the recovering. Positions it did not cross stay out."""
    transport = connect(RedisSettings(redis_url))
    store = PositionStore(transport, Keys(prefix), Limits())
    healthy, called = Status.HEALTHY, Status.MARGIN_CALL
    writes = [
        _write("long-100", Side.LONG, healthy, Triggers(down=Decimal(100))),
        _write("long-105", Side.LONG, healthy, Triggers(down=Decimal(105))),
        _write("long-far", Side.LONG, healthy, Triggers(down=Decimal(50))),
        _write("long-called", Side.LONG, called, Triggers(down=Decimal(70), up=Decimal(80))),
        _write("short-120", Side.SHORT, called, Triggers(down=Decimal(95), up=Decimal(120))),
        _write("short-125", Side.SHORT, healthy, Triggers(up=Decimal(125))),
        _write("short-called", Side.SHORT, called, Triggers(down=Decimal(92), up=Decimal(140))),
    ]
    try:
        assert set() == await store.commit(SYMBOL, writes)
        falling = await store.accept_mark(SYMBOL, Decimal(90), 1)
        rising = await store.accept_mark(SYMBOL, Decimal(130), 2)
    finally:
        await transport.aclose()
    assert falling is not None and rising is not None
    assert ["long-105", "long-100", "long-called", "short-120", "short-called"] == [
        record.id for record, _ in falling.records
    ]
    assert ["short-120", "short-125", "long-called"] == [record.id for record, _ in rising.records]
