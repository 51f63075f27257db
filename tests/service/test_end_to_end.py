"""Thousands of positions, a price path that crosses their triggers both ways, all over MQTT.

The events that arrive must be exactly the set computed independently here,
tick by tick, straight from the margin formulas: nothing missing, nothing
doubled, nothing for a position that never crossed.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from harness import (
    Collector,
    mqtt_client,
    nodes_holding,
    position_object,
    publish,
    publishing,
    redis_url_of,
    running,
    settings_for,
    settled,
    stored_positions,
)

from monitor.config.model import Settings
from monitor.core.margin import Contract, ContractKind, Position, Side, assess
from monitor.state.keys import Keys

SYMBOLS = ("BTCUSDT", "BTCUSD")
START = Decimal(64000)
PATH = [
    64000,
    63000,
    63600,
    62500,
    63200,
    61800,
    62600,
    61000,
    62200,
    63800,
    65000,
    64400,
    65600,
    64800,
    66400,
    65500,
    67200,
    66000,
    63000,
    64500,
]


def make_positions(settings: Settings, count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Random positions whose trigger prices fall inside the price path."""
    rng = random.Random(seed)
    positions = []
    for n in range(count):
        symbol = SYMBOLS[n % 2]
        contract = settings.symbols[symbol]
        side = rng.choice(("long", "short"))
        leverage = Decimal(rng.choice((5, 8, 10, 12, 15, 20, 25, 40)))
        entry = START * Decimal(rng.randint(9500, 10500)) / 10000
        if contract.kind is ContractKind.LINEAR:
            qty = Decimal(rng.randint(1, 4000)) / 1000  # up to 4 BTC: crosses the first caps
            margin = (qty * entry / leverage).quantize(Decimal("0.01"))
        else:
            qty = Decimal(rng.randint(1, 3000))  # contracts of 100 USD
            margin = (qty * contract.contract_size / entry / leverage).quantize(Decimal("1e-8"))
        positions.append(
            position_object(
                f"p-{n}",
                account=f"acct-{n % 37}",
                symbol=symbol,
                side=side,
                qty=str(qty),
                entry_price=str(entry),
                margin=str(margin),
            )
        )
    return positions


def expected_events(settings: Settings, positions: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The reference model: every position through every tick, by the formulas alone."""
    call, clear = settings.risk.margin_call_ratio, settings.risk.margin_call_clear_ratio
    expected: set[tuple[str, str]] = set()
    for p in positions:
        contract: Contract = settings.symbols[p["symbol"]]
        position = Position(
            Side(p["side"]), Decimal(p["qty"]), Decimal(p["entry_price"]), Decimal(p["margin"])
        )
        status, transitions = "healthy", 0
        for price in [START, *PATH]:
            state = assess(contract, position, Decimal(price))
            balance, mm = state.margin_balance, state.maintenance_margin
            ratio = mm / balance if balance > 0 else Decimal("Infinity")
            new = status
            if status != "liquidated":
                if balance <= mm:
                    new = "liquidated"
                elif status == "healthy" and ratio >= call:
                    new = "margin_call"
                elif status == "margin_call" and ratio < clear:
                    new = "healthy"
            if new != status:
                transitions += 1
                kind = {
                    "liquidated": "liquidation",
                    "margin_call": "margin_call",
                    "healthy": "margin_call_cleared",
                }[new]
                expected.add((f"{p['id']}:1:{transitions}", kind))
                status = new
    return expected


@pytest.mark.parametrize(
    ("monitors", "publishers", "cluster"),
    [
        (1, 0, False),
        (2, 0, False),
        (1, 1, False),
        (1, 2, False),
        (1, 0, True),
        (2, 0, True),
        (1, 1, True),
    ],
)
async def test_events_equal_the_independently_computed_set(
    request: pytest.FixtureRequest,
    mqtt_url: str,
    prefix: str,
    monitors: int,
    publishers: int,
    cluster: bool,
) -> None:
    """3,000 positions, a wobbling path of 20 marks: exactly the expected events arrive,
    each position's in the order of its transitions.

    With two monitors on one Redis and one broker, both evaluate every tick,
    and still each transition is published once. With ``publishers``, the
    monitor leaves its events to that many ``liqmon publish`` processes. On a
    Redis Cluster, the two symbols live on different nodes.
    """
    redis_url = redis_url_of(request, cluster)
    if cluster:
        outboxes = [Keys(prefix).outbox(symbol) for symbol in SYMBOLS]
        assert len(nodes_holding(redis_url, outboxes)) == 2
    settings = settings_for(redis_url, mqtt_url, prefix, cluster)
    if publishers:
        settings = replace(settings, mqtt=replace(settings.mqtt, publisher="separate"))
    positions = make_positions(settings, 3000)
    expected = expected_events(settings, positions)
    kinds = {kind for _, kind in expected}
    assert kinds == {"margin_call", "margin_call_cleared", "liquidation"}
    touched = {event_id.rsplit(":", 2)[0] for event_id, _ in expected}
    assert 200 < len(touched) < len(positions), "some positions must never cross"

    async with contextlib.AsyncExitStack() as stack:
        daemons = [
            await stack.enter_async_context(
                running(replace(settings, mqtt=replace(settings.mqtt, client_id=f"{prefix}-m{n}")))
            )
            for n in range(monitors)
        ]
        for n in range(publishers):
            await stack.enter_async_context(publishing(settings, f"p{n}"))
        events = await stack.enter_async_context(Collector(mqtt_url, prefix))
        client = await stack.enter_async_context(mqtt_client(mqtt_url))
        ts = 1
        for symbol in SYMBOLS:
            await publish(client, f"{prefix}/prices/{symbol}/mark", {"price": str(START), "ts": ts})
        for start in range(0, len(positions), 500):
            await publish(client, f"{prefix}/positions", positions[start : start + 500])
        for daemon in daemons:
            for symbol in SYMBOLS:
                await stored_positions(daemon, symbol, len(positions) // 2)
        for price in PATH:
            ts += 1
            for symbol in SYMBOLS:
                await publish(
                    client, f"{prefix}/prices/{symbol}/mark", {"price": str(price), "ts": ts}
                )
            # One mark at a time, so the reference's tick-by-tick path is the daemons' too.
            for daemon in daemons:
                for symbol in SYMBOLS:
                    await settled(daemon, symbol, ts)
        received = await events.wait_for(len(expected), timeout=30)
        await events.quiet(0.5)

    ids = [(e["event_id"], e["type"]) for e in received]
    assert len(ids) == len(set(ids)), "no event may arrive twice"
    assert set(ids) == expected
    arrived: dict[str, list[int]] = {}
    for event_id, _ in ids:
        position, _, transition = event_id.rpartition(":")
        arrived.setdefault(position, []).append(int(transition))
    assert all(numbers == sorted(numbers) for numbers in arrived.values())
    assert all(
        topic.split("/")[-1] == e["type"] for topic, e in zip(events.topics, received, strict=True)
    )
