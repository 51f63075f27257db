"""Taking a symbol over, against a real Redis: its stored mark and the marks held back during
the hand-over go to the tick path in time order, and the guards follow the leases."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from harness import settings_for

from feeds.tick import PriceKind, PriceTick
from monitor.core.coalescing import HeldBack, Mark
from monitor.core.guards import Alert, PriceGuards
from monitor.service.handover import Handover
from monitor.state.keys import Keys
from monitor.state.leases import Leases
from monitor.state.positions import PositionStore
from monitor.state.transport import connect

T = TypeVar("T")
NOW_MS = 1_732_400_000_000
NOW_S = 12.0


@dataclass
class TickPath:
    """Stands in for the tick workers behind the ``Marks`` seam: keeps what it was offered."""

    offered: list[tuple[PriceTick, float]] = field(default_factory=list)

    def offer(self, tick: PriceTick, received_s: float) -> bool:
        self.offered.append((tick, received_s))
        return True

    def prices(self) -> list[tuple[int, int, str, float]]:
        """(price, ts_ms relative to NOW_MS, source, received_s) of each mark offered."""
        return [(int(t.price), t.ts_ms - NOW_MS, t.source, s) for t, s in self.offered]


async def once(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await call(*args)


@dataclass
class Setup:
    handover: Handover
    leases: Leases
    store: PositionStore
    held: HeldBack
    guards: PriceGuards
    marks: TickPath
    alerts: list[Alert]


@contextlib.asynccontextmanager
async def handover_on(redis_url: str, mqtt_url: str, prefix: str) -> AsyncIterator[Setup]:
    """A hand-over on a real Redis for one monitor, its clocks stopped."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    transport = connect(settings.redis)
    store = PositionStore(transport, Keys(prefix), settings.limits)
    leases = Leases(transport, Keys(prefix), "monitor-1", ["BTCUSDT"], ttl_s=3.0)
    held, guards, marks = HeldBack(window_s=6.0), PriceGuards(settings.guards), TickPath()
    alerts: list[Alert] = []

    async def publish(raised: Sequence[Alert]) -> None:
        alerts.extend(raised)

    handover = Handover(
        leases,
        held,
        guards,
        store,
        marks,
        publish,
        once,
        clock=lambda: NOW_S,
        wall_clock_ms=lambda: NOW_MS,
    )
    try:
        yield Setup(handover, leases, store, held, guards, marks, alerts)
    finally:
        await transport.aclose()


def mark(price: int, ts_ms: int, received_s: float) -> Mark:
    return Mark(PriceTick("BTCUSDT", PriceKind.MARK, Decimal(price), ts_ms, "mqtt"), received_s)


async def test_a_symbol_taken_over_is_evaluated_at_its_stored_mark_then_at_what_was_held(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The previous holder may have died mid-tick: the stored mark goes first, then the low
    and the last of the marks held back meanwhile, each timed from the take-over."""
    async with handover_on(redis_url, mqtt_url, prefix) as setup:
        await setup.store.accept_marks([("BTCUSDT", Decimal(60000), NOW_MS - 1000)])
        for price, ts_ms in [(59000, -500), (58000, -400), (59500, -300)]:
            setup.held.offer(mark(price, NOW_MS + ts_ms, received_s=10.0))
        acquired = await setup.leases.refresh()
        await setup.handover.taken_over(acquired)
    assert ["BTCUSDT"] == acquired
    assert [
        (60000, -1000, "takeover", NOW_S),
        (58000, -400, "mqtt", NOW_S),
        (59500, -300, "mqtt", NOW_S),
    ] == setup.marks.prices()
    assert {"BTCUSDT"} == setup.guards.watching
    assert [] == setup.alerts


async def test_a_stored_mark_stamped_in_the_future_is_not_replayed(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A stored mark an hour ahead of the clock (left by a bad feed) is not believed: only
    the held marks are evaluated."""
    async with handover_on(redis_url, mqtt_url, prefix) as setup:
        await setup.store.accept_marks([("BTCUSDT", Decimal(1), NOW_MS + 3_600_000)])
        setup.held.offer(mark(59000, NOW_MS - 500, received_s=10.0))
        await setup.handover.taken_over(await setup.leases.refresh())
    assert [(59000, -500, "mqtt", NOW_S)] == setup.marks.prices()


async def test_held_marks_older_than_two_windows_are_not_replayed(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Marks held back long before the take-over were the old holder's to evaluate."""
    async with handover_on(redis_url, mqtt_url, prefix) as setup:
        setup.held.offer(mark(59000, NOW_MS - 500, received_s=NOW_S - 12.5))
        await setup.handover.taken_over(await setup.leases.refresh())
    assert [] == setup.marks.prices()


async def test_the_guards_stop_watching_symbols_no_longer_held(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A symbol whose lease went elsewhere no longer raises alerts here, so two monitors do not
    announce one feed episode twice."""
    async with handover_on(redis_url, mqtt_url, prefix) as setup:
        setup.guards.watch("ETHUSDT", NOW_S, NOW_MS)
        await setup.handover.taken_over(await setup.leases.refresh())
    assert {"BTCUSDT"} == setup.guards.watching
