"""A Bybit, an OKX and a Binance symbol crash together: each position liquidates at its own
model's price, with real redis-server and mosquitto.

The three longs are alike (1 BTC at 20,000 with 400 USDT of margin, 50x) and
the three symbols receive the same marks, so only the venue model tells them
apart:

- Bybit (help centre, "Liquidation Price (USDT Contract)", Example 1, MMR
  0.5 %): MM is 100 USDT on the entry value, liquidation at 20,000 − (400 −
  100) = 19,700, margin call where 0.8·MB = 100 (19,725);
- OKX (margin ratio (margin + uPnL) / (ctVal·n·mark·(mmr + taker fee)), mmr
  1 %, taker 0.05 %, 100 contracts of 0.01 BTC): liquidation where
  400 + (P − 20,000) = 0.0105·P, P = 19,600 / 0.9895 ≈ 19,807.98;
- Binance (the shipped BTCUSDT brackets, 0.4 % below 50,000 of notional):
  400 + (P − 20,000) = 0.004·P, P = 19,600 / 0.996 ≈ 19,678.71.

The crash steps through 19,850, back up to 19,950 (OKX's margin call clears:
the hysteresis), 19,850 again, then 19,800, 19,720, 19,690 and 19,670, so the
three liquidate at three different ticks, each at the first mark past its own
model's price; the events are compared field by field with values worked by
hand here.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Context, Decimal
from pathlib import Path
from typing import Any

from harness import (
    Collector,
    mqtt_client,
    position_object,
    publish,
    running,
    settled,
    stored_positions,
)
from venue_symbols import venue_settings

D = Decimal
CRASH = [19850, 19950, 19850, 19800, 19720, 19690, 19670]
"""Marks after the opening one (20,000), stamped ts 2 to 8."""
SYMBOLS = {"bybit-1": "BYBIT-BTCUSDT", "okx-1": "OKX-BTCUSDT", "binance-1": "BTCUSDT"}
QTY = {"bybit-1": "1", "okx-1": "100", "binance-1": "1"}
"""1 BTC each: Bybit and Binance count base units, OKX contracts of ctVal 0.01 BTC."""


def floor28(value: Decimal) -> str:
    """A long's price as a model that settles toward the losing side prints it."""
    return str(Context(prec=28, rounding=ROUND_FLOOR).plus(value))


def at28(value: Decimal) -> str:
    """``value`` to the 28 digits of the default context (margin.py's rounding)."""
    return str(Context(prec=28).plus(value))


LIQUIDATION = {
    "bybit-1": "19700",
    "okx-1": floor28(Context(prec=60).divide(D(19600), D("0.9895"))),
    "binance-1": at28(Context(prec=60).divide(D(19600), D("0.996"))),
}


def event(
    position_id: str, n: int, kind: str, ts: int, balance: str, maintenance: str, ratio: str
) -> dict[str, Any]:
    """The payload of ``position_id``'s ``n``-th transition, at the mark stamped ``ts``."""
    return {
        "schema": 1,
        "event_id": f"{position_id}:1:{n}",
        "type": kind,
        "position_id": position_id,
        "account": f"acct-{position_id}",
        "symbol": SYMBOLS[position_id],
        "side": "long",
        "qty": QTY[position_id],
        "entry_price": "20000",
        "margin": "400",
        "position_seq": 1,
        "mark_price": str(CRASH[ts - 2]),
        "index_price": None,
        "price_ts": ts,
        "margin_balance": balance,
        "maintenance_margin": maintenance,
        "margin_ratio": ratio,
        "liquidation_price": LIQUIDATION[position_id],
        "bankruptcy_price": "19600",
    }


EXPECTED = [
    # 19,850: OKX's MM is 0.0105 × 19,850 = 208.425 of 250, past 0.8.
    event("okx-1", 1, "margin_call", 2, "250", "208.425", "0.8337"),
    # 19,950: 209.475 of 350 is below 0.7: cleared (Bybit and Binance were never called).
    event("okx-1", 2, "margin_call_cleared", 3, "350", "209.475", "0.5985"),
    event("okx-1", 3, "margin_call", 4, "250", "208.425", "0.8337"),
    # 19,800: OKX's balance 200 is below its MM 207.9 (Bybit 100/200, Binance 79.2/200: healthy).
    event("okx-1", 4, "liquidation", 5, "200", "207.9", "1.0395"),
    # 19,720: Bybit's fixed MM of 100 is over 0.8 of 120 (Binance 78.88/120: healthy).
    event("bybit-1", 1, "margin_call", 6, "120", "100", at28(D(100) / D(120))),
    # 19,690: Bybit's 90 is below 100; Binance's 78.76 is 0.875 of 90, a margin call only.
    event("bybit-1", 2, "liquidation", 7, "90", "100", at28(D(100) / D(90))),
    event("binance-1", 1, "margin_call", 7, "90", "78.76", at28(D("78.76") / D(90))),
    # 19,670: Binance's 70 is below 0.004 × 19,670 = 78.68.
    event("binance-1", 2, "liquidation", 8, "70", "78.68", "1.124"),
]


def test_the_hand_worked_prices_lie_between_the_crash_ticks() -> None:
    """Each model's liquidation price is crossed by exactly the tick that liquidates it."""
    assert D(19800) < D(LIQUIDATION["okx-1"]) < D(19850)
    assert D(19690) < D(LIQUIDATION["bybit-1"]) < D(19720)
    assert D(19670) < D(LIQUIDATION["binance-1"]) < D(19690)


async def test_three_models_crash_together(
    tmp_path: Path, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Bybit's, OKX's and Binance's longs, alike but for the venue, crash on the same marks:
    each is called (OKX's call clears and comes back) and liquidated at the tick past its
    own model's price, and each event carries that model's liquidation price, maintenance
    margin and ratio, exactly."""
    settings = venue_settings(tmp_path, redis_url, mqtt_url, prefix)
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        for symbol in SYMBOLS.values():
            await publish(client, f"{prefix}/prices/{symbol}/mark", {"price": "20000", "ts": 1})
        positions = [
            position_object(
                position_id,
                account=f"acct-{position_id}",
                symbol=symbol,
                qty=QTY[position_id],
                entry_price="20000",
                margin="400",
            )
            for position_id, symbol in SYMBOLS.items()
        ]
        await publish(client, f"{prefix}/positions", positions)
        for symbol in SYMBOLS.values():
            await stored_positions(daemon, symbol, 1)
        for ts, price in enumerate(CRASH, start=2):
            for symbol in SYMBOLS.values():
                await publish(
                    client, f"{prefix}/prices/{symbol}/mark", {"price": str(price), "ts": ts}
                )
            for symbol in SYMBOLS.values():
                await settled(daemon, symbol, ts)
        await events.wait_for(len(EXPECTED), timeout=20)
        received = await events.quiet(0.5)

    for payload in received:
        del payload["emitted_at"]
    by_tick = sorted(received, key=lambda e: (e["price_ts"], e["event_id"]))
    assert sorted(EXPECTED, key=lambda e: (e["price_ts"], e["event_id"])) == by_tick
    assert [
        f"{prefix}/events/{e['account']}/{e['symbol']}/{e['type']}" for e in received
    ] == events.topics
