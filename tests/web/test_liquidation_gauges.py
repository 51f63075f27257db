"""The liquidation gauges of a running daemon against a position-by-position reference.

The book of the stress API's tests (three symbols, linear and inverse, longs and
shorts, some in margin call and some liquidated on arrival) is stored; every
stored record is then read and, per symbol, side and distance, the notional
liquidating at ``mark × (1 ∓ d)`` is summed position by position
(tests/stress_book.py). ``liqmon_liquidation_notional_within`` must give the same
figure, as the float of that exact value.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from harness import until
from stress_book import reference
from test_http_api import MARKS, seeded

from monitor.config.model import LiquidationWatch
from monitor.core.margin import Side
from monitor.service.daemon import Daemon

DISTANCES = ("0.01", "0.05", "0.1")
WIDE = Context(prec=100)


async def expected_gauges(daemon: Daemon) -> dict[tuple[str, str, str], float]:
    """Per symbol, side and distance, the reference's liquidating notional, from every
    stored record."""
    expected = {}
    for symbol in MARKS:
        contract = daemon.settings.symbols[symbol]
        quote = await daemon.store.quote(symbol)
        assert quote is not None
        records = await daemon.store.all_records(symbol)
        for side in Side:
            alone = [record for record in records if record.side is side]
            for distance in DISTANCES:
                move = Decimal(distance) if side is Side.SHORT else -Decimal(distance)
                with localcontext(WIDE):
                    price = quote.mark * (1 + move)
                _, notional, _ = reference(contract, alone, price, daemon.settings.risk)[
                    "liquidated"
                ]  # type: ignore[misc]
                expected[symbol, side.value, distance] = float(notional)
    return expected


def gauges(daemon: Daemon) -> dict[tuple[str, str, str], float | None]:
    """The daemon's gauges, as Prometheus would scrape them."""
    registry = daemon.metrics.registry
    return {
        (symbol, side.value, distance): registry.get_sample_value(
            "liqmon_liquidation_notional_within",
            {"symbol": symbol, "side": side.value, "distance": distance},
        )
        for symbol in MARKS
        for side in Side
        for distance in DISTANCES
    }


async def test_gauges_match_a_position_by_position_reference(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Every symbol (linear and inverse), both sides, 1 %, 5 % and 10 %: the gauge is the
    reference's figure, and the figures are not all zero."""
    watch = LiquidationWatch(symbols=("*",), refresh_s=0.05)
    async with seeded(redis_url, mqtt_url, prefix, 900, liquidation_watch=watch) as (daemon, _):
        expected = await expected_gauges(daemon)
        await until(lambda: gauges(daemon) == expected)
        metrics = daemon.metrics.render().decode()
    assert sum(value > 0 for value in expected.values()) > len(expected) / 2
    assert all(
        expected[symbol, "long", "0.01"] <= expected[symbol, "long", "0.1"] for symbol in MARKS
    )
    assert 'liqmon_liquidation_notional_within{distance="0.05",side="short",symbol="BTCUSD"}' in (
        metrics
    )
