"""The tick path: marks offered to the tick workers, decided by the engine against a real
Redis, counted and timed in the metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import orjson
from harness import btc_long, settings_for

from feeds.tick import PriceKind, PriceTick
from monitor.config.model import Limits
from monitor.core.coalescing import HeldBack
from monitor.core.wire import position_from_object
from monitor.service.engine import Engine
from monitor.service.workers import TickWorkers
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore
from monitor.state.transport import Client, connect
from monitor.telemetry.metrics import Metrics

SYMBOL = "BTCUSDT"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class HoldLiquidations:
    """Price guards that let every mark decide but hold every liquidation (mark and index
    disagree, say)."""

    def may_decide(self, symbol: str, now_s: float) -> bool:
        return True

    def may_liquidate(self, symbol: str, now_s: float) -> bool:
        return False

    def ts_ceiling_ms(self, symbol: str, now_ms: int) -> int | None:
        return None


def mark(price: int, ts_ms: int, symbol: str = SYMBOL) -> PriceTick:
    """A mark tick."""
    return PriceTick(symbol, PriceKind.MARK, Decimal(price), ts_ms, "test")


@contextlib.asynccontextmanager
async def book(
    redis_url: str, mqtt_url: str, prefix: str, margins: list[int]
) -> AsyncIterator[tuple[PositionStore, Client]]:
    """Redis holding BTCUSDT longs of the given margins at mark 60,000 (stamped 1)."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    transport = connect(settings.redis)
    client = transport.client
    store = PositionStore(transport, Keys(prefix), Limits())
    loader = Engine(store, settings.symbols, settings.risk, prefix)
    try:
        await store.accept_marks([(SYMBOL, Decimal(60000), 1)])
        await loader.apply_updates(
            [
                position_from_object(btc_long(f"p-{n}", str(margin)), settings.symbols)
                for n, margin in enumerate(margins)
            ]
        )
        yield store, client
    finally:
        await transport.aclose()


@contextlib.asynccontextmanager
async def working(workers: TickWorkers, count: int = 2) -> AsyncIterator[None]:
    """``count`` workers running until the block ends."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(workers.run()) for _ in range(count)]
        yield
        for task in tasks:
            task.cancel()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def events(client: Client, prefix: str) -> list[tuple[str, str]]:
    """(event id, type) of every event in the symbol's outbox, in commit order."""
    entries = await client.xrange(Keys(prefix).outbox(SYMBOL))
    return [
        (fields[b"event_id"].decode(), orjson.loads(fields[b"payload"])["type"])
        for _, fields in entries
    ]


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    """A metric's current value (0 when it has no sample yet)."""
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def evaluated(metrics: Metrics) -> Callable[[], bool]:
    """True once a mark tick was evaluated."""
    return lambda: sample(metrics, "liqmon_ticks_evaluated_total", {"symbol": SYMBOL}) >= 1


async def test_a_crash_commits_its_liquidations_timed_from_the_marks_receipt(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A crash mark received 2.5 s before a worker finished it queues each liquidation once
    and is timed 2.5 s from receipt: the wait before a worker took it counts."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    metrics, clock = Metrics(), Clock(100.0)
    async with book(redis_url, mqtt_url, prefix, [2000, 2500, 20000]) as (store, client):
        engine = Engine(store, settings.symbols, settings.risk, prefix)
        workers = TickWorkers(engine, metrics, lambda symbol: True, HeldBack(6.0), clock)
        assert workers.offer(mark(50000, 2), received_s=97.5)
        assert not workers.idle
        async with working(workers):
            await until(evaluated(metrics))
            await until(lambda: workers.idle)
        queued = await events(client, prefix)
    assert [("p-0:1:1", "liquidation"), ("p-1:1:1", "liquidation")] == sorted(queued)
    assert 2 == sample(metrics, "liqmon_candidates_evaluated_total", {"symbol": SYMBOL})
    assert 2 == sample(metrics, "liqmon_events_total", {"type": "liquidation"})
    assert (1, 2.5) == (
        sample(metrics, "liqmon_tick_evaluation_seconds_count"),
        sample(metrics, "liqmon_tick_evaluation_seconds_sum"),
    )
    assert (1, 0.0) == (
        sample(metrics, "liqmon_tick_worker_seconds_count"),
        sample(metrics, "liqmon_tick_worker_seconds_sum"),
    )


async def test_marks_that_pile_up_are_evaluated_as_low_high_and_last(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Five marks offered before any worker runs: three are evaluated, and the dip in the
    middle still liquidates the position it crossed."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    metrics = Metrics()
    async with book(redis_url, mqtt_url, prefix, [2000]) as (store, client):
        engine = Engine(store, settings.symbols, settings.risk, prefix)
        workers = TickWorkers(engine, metrics, lambda symbol: True, HeldBack(6.0))
        for ts_ms, price in enumerate([59000, 58000, 50000, 61000, 60000], 2):
            assert workers.offer(mark(price, ts_ms), received_s=0.0)
        async with working(workers):
            await until(
                lambda: sample(metrics, "liqmon_ticks_evaluated_total", {"symbol": SYMBOL}) == 3
            )
            await until(lambda: workers.idle)
        assert [("p-0:1:1", "liquidation")] == await events(client, prefix)
        quote = await store.quote(SYMBOL)
    assert quote is not None and (Decimal(60000), 6) == (quote.mark, quote.mark_ts_ms)


async def test_a_mark_older_than_the_stored_one_is_dropped_and_counted(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark stamped before the stored one (another monitor was faster) decides nothing."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    metrics = Metrics()
    async with book(redis_url, mqtt_url, prefix, [2000]) as (store, client):
        await store.accept_marks([(SYMBOL, Decimal(60000), 10)])
        engine = Engine(store, settings.symbols, settings.risk, prefix)
        workers = TickWorkers(engine, metrics, lambda symbol: True, HeldBack(6.0))
        workers.offer(mark(50000, 5), received_s=0.0)
        async with working(workers):
            await until(
                lambda: (
                    sample(
                        metrics, "liqmon_ticks_dropped_total", {"symbol": SYMBOL, "kind": "mark"}
                    )
                    == 1
                )
            )
            await until(lambda: workers.idle)
        assert [] == await events(client, prefix)
    assert 0 == sample(metrics, "liqmon_ticks_evaluated_total", {"symbol": SYMBOL})


async def test_marks_of_a_symbol_another_monitor_holds_are_held_back(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Without the lease, a crash mark is kept for the hand-over and nothing is decided."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    held = HeldBack(6.0)
    async with book(redis_url, mqtt_url, prefix, [2000]) as (store, client):
        engine = Engine(store, settings.symbols, settings.risk, prefix)
        workers = TickWorkers(engine, Metrics(), lambda symbol: False, held)
        assert workers.offer(mark(50000, 2), received_s=3.0)
        assert workers.idle
        assert [] == await events(client, prefix)
    assert [(Decimal(50000), 3.0)] == [(m.tick.price, m.received_s) for m in held.take(SYMBOL, 4)]


async def test_liquidations_held_by_the_guards_become_margin_calls(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """While the guards hold liquidations, a crash mark margin-calls the position instead;
    its liquidation trigger stays crossed for the first mark after the hold."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    metrics = Metrics()
    async with book(redis_url, mqtt_url, prefix, [2000]) as (store, client):
        engine = Engine(store, settings.symbols, settings.risk, prefix, guards=HoldLiquidations())
        workers = TickWorkers(engine, metrics, lambda symbol: True, HeldBack(6.0))
        workers.offer(mark(50000, 2), received_s=0.0)
        async with working(workers):
            await until(evaluated(metrics))
            await until(lambda: workers.idle)
        assert [("p-0:1:1", "margin_call")] == await events(client, prefix)


async def test_a_bug_in_one_symbols_evaluation_leaves_the_others_evaluated(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A symbol whose evaluation raises is counted as an evaluation error; the symbol sharing
    its round trip still commits its liquidation."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    metrics = Metrics()
    eth = {**btc_long("e-0", "200"), "symbol": "ETHUSDT", "entry_price": "3000"}
    async with book(redis_url, mqtt_url, prefix, [2000]) as (store, client):
        loader = Engine(store, settings.symbols, settings.risk, prefix)
        await store.accept_marks([("ETHUSDT", Decimal(3000), 1)])
        await loader.apply_updates([position_from_object(eth, settings.symbols)])
        # An engine that lost BTCUSDT's contract: deciding its positions raises KeyError.
        contracts = {"ETHUSDT": settings.symbols["ETHUSDT"]}
        engine = Engine(store, contracts, settings.risk, prefix)
        workers = TickWorkers(engine, metrics, lambda symbol: True, HeldBack(6.0), batch=2)
        workers.offer(mark(50000, 2), received_s=0.0)
        workers.offer(mark(2000, 2, "ETHUSDT"), received_s=0.0)
        async with working(workers, count=1):
            await until(
                lambda: sample(metrics, "liqmon_evaluation_errors_total", {"stage": "tick"}) == 1
            )
            await until(
                lambda: sample(metrics, "liqmon_ticks_evaluated_total", {"symbol": "ETHUSDT"}) == 1
            )
        eth_events: Any = await client.xrange(Keys(prefix).outbox("ETHUSDT"))
        assert [] == await events(client, prefix)
    assert [b"e-0:1:1"] == [fields[b"event_id"] for _, fields in eth_events]
    assert 0 == sample(metrics, "liqmon_ticks_evaluated_total", {"symbol": SYMBOL})
