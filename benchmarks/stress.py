"""Measure ``/api/stress`` and ``/api/liquidation-map``'s work against the book's size.

Starts its own redis-server (monitor.devtools.embedded), loads N positions of one
symbol (BTCUSDT at a mark of 64,000, entries within 5 %, leverage 2-50x, a third
short) with the real ``liqmon positions load``, reads ``INFO memory`` before and
after, then times, in this process, what the endpoints do (the read model's
reads and :mod:`monitor.core.stress`): stress at moves of −1 %, −5 %, −10 % and
−30 %, and a map of ±20 % of the mark in 400 buckets (``first_ms``: the first
map, which solves every liquidation price; ``ms``: again, from the API's record
cache), and the daemon's liquidation gauges (:mod:`monitor.service.liquidations`:
one walk to 10 % against each side, each position tested at 1, 5 and 10 %).
``max_loop_stall_ms``: the longest the event loop went without turning during any
run of a query, what a tick would wait in the daemon, which computes all three in
its event loop. Each figure is the median of ``--repeat`` runs; ``read`` is how many
positions the trigger index selected for reading, ``liquidated`` how many of them count.

    .venv/bin/python -m benchmarks.stress --positions 10000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from benchmarks.generator import write_positions
from monitor.config.loading import load_settings
from monitor.core.clusters import GAUGE_DISTANCES
from monitor.core.margin import Contract, Side
from monitor.core.stress import Within
from monitor.core.triggers import TriggerSet
from monitor.devtools.embedded import RedisServer
from monitor.devtools.stalls import timed
from monitor.service.liquidations import walk
from monitor.service.loading import open_read_model
from monitor.state.readmodel import WALK_PAGE, ReadModel
from monitor.web.api import Api
from monitor.web.stress import map_document, stress_documents, stress_query

CONFIG = Path(__file__).resolve().parents[1] / "config" / "liqmon.toml"
MARK = 64000
MOVES = ("-0.01", "-0.05", "-0.1", "-0.3")


async def timings(url: str, repeat: int) -> dict[str, Any]:
    """Median wall time of each query, with what it read and counted, and the longest the
    event loop went without a turn during any run of it."""
    settings = load_settings(CONFIG, environ={"LIQMON_REDIS_URL": url})
    reads = open_read_model(settings)
    api = Api(reads, settings.symbols, risk=settings.risk)
    # As the daemon does once it runs: what exists now is left out of the garbage
    # collector's passes (else each full pass over this process's modules is 40-60 ms
    # of loop stall the daemon does not have).
    gc.collect()
    gc.freeze()
    figures: dict[str, Any] = {}
    try:
        for move in MOVES:
            query = stress_query(api.symbols, "BTCUSDT", None, move)
            runs = [await timed(stress_documents(api, query)) for _ in range(repeat)]
            (document,) = runs[-1][2]
            price = Decimal(MARK) * (1 + Decimal(move))
            figures[f"stress {move}"] = {
                **_summary(runs),
                "read": await _selected(reads, price),
                "liquidated": document["liquidated"]["count"],
                "margin_call": document["margin_call"]["count"],
            }
        low, high = Decimal(MARK) * Decimal("0.8"), Decimal(MARK) * Decimal("1.2")
        step = (high - low) / 400
        maps = [
            await timed(map_document(api, "BTCUSDT", low, high, step)) for _ in range(repeat + 1)
        ]
        figures["map ±20 % / 400"] = {"first_ms": round(maps[0][0] * 1000, 1), **_summary(maps[1:])}
        figures["gauges 1/5/10 %"] = await _gauges(reads, settings.symbols["BTCUSDT"], repeat)
    finally:
        await reads.aclose()
    return figures


def _summary(runs: list[tuple[float, float, Any]]) -> dict[str, float]:
    """The median wall time and the longest loop stall of some runs, in ms."""
    return {
        "ms": round(statistics.median(seconds for seconds, _, _ in runs) * 1000, 1),
        "max_loop_stall_ms": round(max(stall for _, stall, _ in runs) * 1000, 1),
    }


async def _gauges(reads: ReadModel, contract: Contract, repeat: int) -> dict[str, Any]:
    """The daemon's liquidation-gauge computation of one symbol (both sides, three
    distances), and the longest the event loop waited meanwhile (what a tick could)."""
    runs = [
        await timed(walk(reads, contract, Within(contract, Decimal(MARK), GAUGE_DISTANCES)))
        for _ in range(repeat)
    ]
    read = runs[-1][2]
    figures = _summary(runs)
    return {**figures, "read": read, "us_per_read": round(figures["ms"] * 1000 / max(read, 1), 1)}


async def _selected(reads: ReadModel, price: Decimal) -> int:
    """Positions a stress at ``price`` reads: longs scored at or above it, shorts at or
    below, and every position in margin call."""
    longs = await reads.trigger_page("BTCUSDT", TriggerSet.worsening_of(Side.LONG), math.inf, 0, -1)
    shorts = await reads.trigger_page(
        "BTCUSDT", TriggerSet.worsening_of(Side.SHORT), -math.inf, 0, -1
    )
    called = sum(
        [await reads.trigger_size("BTCUSDT", TriggerSet.improving_of(side)) for side in Side]
    )
    at = float(price)
    return sum(score >= at for _, score in longs) + sum(score <= at for _, score in shorts) + called


def measure(count: int, repeat: int) -> dict[str, Any]:
    """Load ``count`` positions into a fresh Redis and time the queries."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        data = Path(tmp) / "positions.jsonl"
        write_positions(data, count, 1, symbols={"BTCUSDT": MARK}, inverse={})
        client = redis.Redis.from_url(server.url)
        client.hset("liqmon:{BTCUSDT}:price", mapping={"mark": str(MARK), "mark_ts": 1})
        before = int(client.info("memory")["used_memory"])
        command = [str(Path(sys.executable).parent / "liqmon"), "positions", "load", str(data)]
        env = dict(os.environ, LIQMON_REDIS_URL=server.url)
        subprocess.run(command, env=env, check=True, capture_output=True)
        outbox = int(client.memory_usage("liqmon:{BTCUSDT}:outbox", samples=0) or 0)
        after = int(client.info("memory")["used_memory"])
        client.close()
        return {
            "positions": count,
            "redis_bytes_per_position": round((after - before - outbox) / count, 1),
            "page": WALK_PAGE,
            **asyncio.run(timings(server.url, repeat)),
        }


def main() -> None:
    """Measure each ``--positions`` count and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--positions", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps([measure(count, args.repeat) for count in args.positions], indent=2))


if __name__ == "__main__":
    main()
