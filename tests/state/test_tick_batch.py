"""Marks of several symbols in one round trip: same answers as one at a time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from harness import nodes_holding, position_object, redis_url_of, settings_for

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import Limits
from monitor.core.wire import position_from_object
from monitor.service.engine import Engine
from monitor.service.loading import load_positions
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore
from monitor.state.transport import Client, connect

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ENTRY = {"BTCUSDT": 64000, "ETHUSDT": 3400, "SOLUSDT": 150}


async def _book(
    redis_url: str, mqtt_url: str, prefix: str, cluster: bool = False
) -> tuple[Engine, Client]:
    settings = settings_for(redis_url, mqtt_url, prefix, cluster)
    items = [
        (n, b"", position_from_object(
            position_object(f"{symbol}-{n}", account="a", symbol=symbol,
                            entry_price=str(ENTRY[symbol]), margin=str(ENTRY[symbol] // 10)),
            settings.symbols,
        ))
        for symbol in SYMBOLS
        for n in range(20)
    ]  # fmt: skip
    transport = connect(settings.redis)
    client = transport.client
    for symbol in SYMBOLS:
        await client.hset(Keys(prefix).price(symbol), mapping={"mark": ENTRY[symbol], "mark_ts": 1})
    await load_positions(settings, items, batch_size=100, progress=False)
    store = PositionStore(transport, Keys(prefix), Limits())
    return Engine(store, settings.symbols, settings.risk, prefix), client


def _crash(symbol: str, ts_ms: int) -> PriceTick:
    """A mark 20 % under entry: every 10x long of the book is past its liquidation price."""
    return PriceTick(symbol, PriceKind.MARK, Decimal(ENTRY[symbol]) * Decimal("0.8"), ts_ms, "t")


async def test_batched_marks_find_each_symbols_candidates_and_drop_stale_ones(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """One round trip for three symbols: each gets its own 20 positions; an older tick is None."""
    engine, client = await _book(redis_url, mqtt_url, prefix)
    stale = PriceTick("SOLUSDT", PriceKind.MARK, Decimal("150"), 0, "t")
    found = await engine.accept_marks([_crash("BTCUSDT", 10), _crash("ETHUSDT", 10), stale])
    await client.aclose()
    assert found[2] is None
    assert [sorted(r.id for r, _ in c.records) for c in found[:2] if c is not None] == [
        sorted(f"{symbol}-{n}" for n in range(20)) for symbol in ("BTCUSDT", "ETHUSDT")
    ]


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_batched_marks_survive_a_flushed_script_cache(
    request: pytest.FixtureRequest, mqtt_url: str, prefix: str, cluster: bool
) -> None:
    """After SCRIPT FLUSH (a Redis restart, a failover) the batch loads the script and goes on.

    On a Redis Cluster the symbols live on two nodes; the script is flushed
    on every primary, and reloaded where NOSCRIPT was answered.
    """
    redis_url = redis_url_of(request, cluster)
    if cluster:
        assert len(nodes_holding(redis_url, [Keys(prefix).price(s) for s in SYMBOLS])) == 2
    engine, client = await _book(redis_url, mqtt_url, prefix, cluster)
    await client.script_flush()
    found = await engine.accept_marks([_crash(symbol, 10) for symbol in SYMBOLS])
    outcomes = [
        await engine.on_candidates(tick, candidates)
        for tick, candidates in zip([_crash(s, 10) for s in SYMBOLS], found, strict=True)
        if candidates is not None
    ]
    await client.aclose()
    assert [len(o.events) for o in outcomes] == [20, 20, 20]
    assert {e.type.value for o in outcomes for e in o.events} == {"liquidation"}
