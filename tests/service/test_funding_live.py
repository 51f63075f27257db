"""Funding in a running monitor: payments through margins, on real Redis and mosquitto.

A funding time arrives on ``{prefix}/funding/{symbol}``; what a subscriber of
the events sees, and what Redis holds, is asserted.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest
from harness import (
    Collector,
    half_btc_long,
    mqtt_client,
    position_object,
    publish,
    redis_url_of,
    running,
    serving,
    settings_for,
    settled,
    stored_positions,
    until,
)
from websockets.asyncio.server import ServerConnection, serve

from feeds.binance import BinanceSource
from feeds.ws import WsOptions
from monitor.config.model import Limits, Settings
from monitor.core.funding import FundingRate
from monitor.service.daemon import Daemon
from monitor.state.keys import Keys

FUNDING_TS = 1_732_406_400_000
"""A funding time in the past: due as soon as it is announced."""


def funded_settings(redis_url: str, mqtt_url: str, prefix: str, *symbols: str) -> Settings:
    """The example configuration with ``apply_funding = true`` for ``symbols``."""
    return settings_for(redis_url, mqtt_url, prefix, funding=frozenset(symbols))


async def margin_of(daemon: Daemon, position_id: str, symbol: str = "BTCUSDT") -> Decimal:
    """The stored margin of a position."""
    [found] = await daemon.store.records(symbol, [position_id])
    assert found is not None
    return found[0].margin


async def opened(
    daemon: Daemon, client: Any, prefix: str, positions: list[dict[str, Any]], mark: str
) -> None:
    """Store ``positions``, then a mark of BTCUSDT (and BTCUSD) at ``mark``, evaluated."""
    await publish(client, f"{prefix}/positions", positions)
    for symbol in {p["symbol"] for p in positions}:
        await stored_positions(daemon, symbol, sum(1 for p in positions if p["symbol"] == symbol))
        await publish(client, f"{prefix}/prices/{symbol}/mark", {"price": mark, "ts": 2})
        await settled(daemon, symbol, 2)


@pytest.mark.parametrize("cluster", [False, True])
async def test_a_payment_that_pushes_a_position_under_maintenance_liquidates_it(
    request: pytest.FixtureRequest, mqtt_url: str, prefix: str, cluster: bool
) -> None:
    """A healthy long (0.5 BTC, margin 3,000) at 54,300 pays 0.2 % funding (54.30): the
    subscriber sees funding_applied with the amount, then the liquidation, at once (on one
    Redis, and on a Redis Cluster)."""
    redis_url = redis_url_of(request, cluster)
    settings = settings_for(redis_url, mqtt_url, prefix, cluster, funding=frozenset({"BTCUSDT"}))
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await opened(daemon, client, prefix, [half_btc_long("p-1")], "54300")
        assert await events.quiet(0.3) == []
        await publish(client, f"{prefix}/funding/BTCUSDT", {"rate": "0.002", "ts": FUNDING_TS})
        received = await events.wait_for(2)
        assert await margin_of(daemon, "p-1") == Decimal("2945.7")
        counted = [
            daemon.metrics.registry.get_sample_value("liqmon_events_total", {"type": kind})
            for kind in ("funding_applied", "liquidation")
        ]

    assert [(e["event_id"], e["type"]) for e in received] == [
        ("p-1:1:1", "funding_applied"),
        ("p-1:1:2", "liquidation"),
    ]
    assert counted == [1, 1]
    funded = received[0]
    assert (funded["amount"], funded["margin"], funded["funding_time"]) == (
        "-54.3",
        "2945.7",
        FUNDING_TS,
    )
    assert events.topics == [
        f"{prefix}/events/acct-42/BTCUSDT/funding_applied",
        f"{prefix}/events/acct-42/BTCUSDT/liquidation",
    ]


async def test_a_payment_received_moves_a_position_out_of_its_margin_call(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A long in margin call at 54,250 (ratio 0.87) receives 0.2 % (54.25), which brings it
    to 0.61: funding_applied, then margin_call_cleared; the short on the other side pays
    and stays healthy (one event)."""
    settings = funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT")
    short = position_object("s-1", side="short", qty="0.5", margin="3000")
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await opened(daemon, client, prefix, [half_btc_long("p-1"), short], "54250")
        [call] = await events.wait_for(1)
        assert call["type"] == "margin_call"
        await publish(client, f"{prefix}/funding/BTCUSDT", {"rate": "-0.002", "ts": FUNDING_TS})
        received = await events.wait_for(4)
        await events.quiet(0.3)
        assert await margin_of(daemon, "p-1") == Decimal("3054.25")
        assert await margin_of(daemon, "s-1") == Decimal("2945.75")

    by_id = {e["event_id"]: e for e in received}
    assert [(e["event_id"], e["type"]) for e in received if e["position_id"] == "p-1"] == [
        ("p-1:1:1", "margin_call"),
        ("p-1:1:2", "funding_applied"),
        ("p-1:1:3", "margin_call_cleared"),
    ]
    assert by_id["s-1:1:1"]["type"] == "funding_applied"
    assert by_id["s-1:1:1"]["amount"] == "-54.25"
    assert len(received) == 4


async def test_a_funding_time_applied_twice_pays_once(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The same funding time applied again by the monitor, then announced to a restarted one
    (a crash after the payment): one payment, one funding_applied."""
    settings = funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT")
    funding = FundingRate("BTCUSDT", Decimal("0.0001"), FUNDING_TS)
    async with Collector(mqtt_url, prefix) as events, mqtt_client(mqtt_url) as client:
        async with running(settings) as daemon:
            await opened(daemon, client, prefix, [half_btc_long("p-1")], "60000")
            first = await daemon.funding.apply(funding)
            again = await daemon.funding.apply(funding)
            assert first is not None and again is not None
            assert (first.applied, again.applied, again.ignored) == (1, 0, 1)
            await events.wait_for(1)
        # Not ready until a fresh mark comes (stale with an open position): no need here.
        async with serving(Daemon(settings), ready=False) as restarted:
            await until(restarted.bus.connected.is_set)
            await publish(client, f"{prefix}/funding/BTCUSDT", {"rate": "0.0001", "ts": FUNDING_TS})
            await until(restarted.funding.applied.is_set)
            assert await margin_of(restarted, "p-1") == Decimal(2997)
        received = await events.quiet(0.5)

    assert [(e["event_id"], e["type"], e["amount"]) for e in received] == [
        ("p-1:1:1", "funding_applied", "-3")
    ]


async def test_without_apply_funding_funding_is_ignored(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """apply_funding on for BTCUSDT only: BTCUSD's funding changes nothing, and a monitor with
    it off for every symbol does not even subscribe: no event, margins as sent."""
    inverse = position_object("i-1", symbol="BTCUSD", qty="100", entry_price="60000", margin="0.02")
    async with Collector(mqtt_url, prefix) as events, mqtt_client(mqtt_url) as client:
        for settings in (
            funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT"),
            settings_for(redis_url, mqtt_url, prefix),
        ):
            # The second is not ready (its feed is stale with a position open): not needed.
            async with serving(Daemon(settings), ready=False) as daemon:
                await until(daemon.bus.connected.is_set)
                await opened(daemon, client, prefix, [inverse], "60000")
                await publish(
                    client, f"{prefix}/funding/BTCUSD", {"rate": "0.01", "ts": FUNDING_TS}
                )
                assert await events.quiet(0.5) == []
                assert not daemon.funding.schedule.pending("BTCUSD")
                assert await margin_of(daemon, "i-1", "BTCUSD") == Decimal("0.02")
                assert await daemon.redis.xlen(daemon.store.keys.dead_letter) == 0


async def test_funding_from_a_binance_feed_is_applied(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A Binance source's markPrice frame brings the mark and announces ``r`` at ``T`` (past):
    the long pays 0.01 % of 0.5 × 60,000, and the subscriber sees funding_applied."""
    frame = orjson.dumps(
        {
            "stream": "btcusdt@markPrice@1s",
            "data": {
                "e": "markPriceUpdate",
                "E": FUNDING_TS - 1000,
                "s": "BTCUSDT",
                "p": "60000.00",
                "i": "60001.00",
                "P": "60000.00",
                "r": "0.00010000",
                "T": FUNDING_TS,
            },
        }
    ).decode()
    position_stored = asyncio.Event()

    async def venue(ws: ServerConnection) -> None:
        await ws.recv()
        await position_stored.wait()
        await ws.send(frame)
        await ws.wait_closed()

    settings = funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT")
    async with serve(venue, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        source = BinanceSource(
            {"BTCUSDT": "BTCUSDT"},
            url=f"ws://127.0.0.1:{port}/",
            options=WsOptions(ping_interval_s=None, proxy=False),
        )
        async with (
            serving(Daemon(settings, sources=[source]), ready=False) as daemon,
            Collector(mqtt_url, prefix) as events,
            mqtt_client(mqtt_url) as client,
        ):
            await until(daemon.bus.connected.is_set)
            await publish(client, f"{prefix}/positions", [half_btc_long("p-1")])
            await stored_positions(daemon, "BTCUSDT", 1)
            position_stored.set()
            [funded] = await events.wait_for(1)
            assert await margin_of(daemon, "p-1") == Decimal(2997)

    assert (funded["type"], funded["amount"], funded["mark_price"]) == (
        "funding_applied",
        "-3",
        "60000",
    )


async def test_a_funding_time_waits_for_the_symbols_first_mark(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Due before any mark of its symbol, with a position open: nothing is paid until the
    first mark, then the payment is made at it."""
    settings = funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT")
    async with (
        serving(Daemon(settings), ready=False) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await until(daemon.bus.connected.is_set)
        await publish(client, f"{prefix}/positions", [half_btc_long("p-1")])
        await stored_positions(daemon, "BTCUSDT", 1)
        await publish(client, f"{prefix}/funding/BTCUSDT", {"rate": "0.0001", "ts": FUNDING_TS})
        await until(lambda: ("BTCUSDT", FUNDING_TS) in daemon.funding.waiting)
        assert await events.quiet(0.3) == []
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 2})
        [funded] = await events.wait_for(1)

    assert (funded["type"], funded["amount"]) == ("funding_applied", "-3")


async def test_a_position_liquidated_by_funding_is_forgotten_with_its_funding_mark(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """After the tombstone retention, the liquidated record and its last funding time both
    leave Redis; the healthy position's stay."""
    limits = replace(Limits(), tombstone_retention_s=1)
    settings = funded_settings(redis_url, mqtt_url, prefix, "BTCUSDT")
    settings = replace(settings, limits=limits)
    healthy = position_object("p-2", qty="0.5", margin="20000")
    funded_key = Keys(prefix).funding("BTCUSDT")
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await opened(daemon, client, prefix, [half_btc_long("p-1"), healthy], "54300")
        await publish(client, f"{prefix}/funding/BTCUSDT", {"rate": "0.002", "ts": FUNDING_TS})
        await events.wait_for(3)
        assert sorted(await daemon.redis.hkeys(funded_key)) == [b"p-1", b"p-2"]

        async def forgotten() -> bool:
            return not await daemon.redis.hexists(funded_key, "p-1")

        await until(forgotten, timeout_s=10)
        assert await daemon.redis.hkeys(funded_key) == [b"p-2"]
        assert await daemon.redis.hkeys(daemon.store.keys.positions("BTCUSDT")) == [b"p-2"]
