"""Measure ``/api/stress``, ``/api/liquidation-map`` and the gauges against the book's size.

Starts its own redis-server (monitor.devtools.embedded), loads N positions of one
symbol (BTCUSDT at a mark of 64,000, entries within 5 %, leverage 2-50x, a third
short) with the real ``liqmon positions load``, reads ``INFO memory`` before and
after (less the outbox's events and the change log, reported apart: the log keeps
the ids of about the last thousand writing calls, whatever the book's size), then,
in this process, as the daemon does: files the symbol's liquidation
book (:mod:`monitor.state.books`; ``filing``: its wall time, the longest the event
loop went without a turn meanwhile, and the growth of this process's resident
memory per position), and times the endpoints' work from it: stress at moves of
−1 %, −5 %, −10 % and −30 %, a map of ±20 % of the mark in 400 buckets (step 64,
which cuts the book's blocks, so cells are summed) and in 256 buckets of 100 (a
block each), and the liquidation gauges (three distances, both sides). Then it
loads ``--changes`` more positions and times the stress that catches the book up
with them. ``max_loop_stall_ms``: the longest the event loop went without turning
during any run of a query, what a tick would wait in the daemon. Each figure is
the median of ``--repeat`` runs.

    .venv/bin/python -m benchmarks.stress --positions 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from benchmarks.generator import generate_positions
from monitor.config.loading import load_settings
from monitor.core.clusters import GAUGE_DISTANCES
from monitor.core.stress import Within
from monitor.devtools.embedded import RedisServer
from monitor.devtools.stalls import timed
from monitor.service.loading import open_read_model
from monitor.state.books import Books
from monitor.telemetry.log import configure
from monitor.web.api import Api
from monitor.web.stress import map_document, stress_documents, stress_query

CONFIG = Path(__file__).resolve().parents[1] / "config" / "liqmon.toml"
MARK = 64000
MOVES = ("-0.01", "-0.05", "-0.1", "-0.3")
SYMBOL = "BTCUSDT"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


async def timings(url: str, count: int, repeat: int, changes: int) -> dict[str, Any]:
    """File the book, then the median wall time of each query and the longest the event
    loop went without a turn during any run of it."""
    settings = load_settings(CONFIG, environ={"LIQMON_REDIS_URL": url})
    reads = open_read_model(settings)
    books = Books(reads, settings.symbols, settings.risk)
    api = Api(reads, settings.symbols, risk=settings.risk, books=books)
    figures: dict[str, Any] = {}
    async with asyncio.TaskGroup() as group:
        running = group.create_task(books.run())
        try:
            gc.collect()
            before = resident_bytes()
            seconds, stall, book = await timed(books.book(SYMBOL, 3600))
            gc.collect()
            figures["filing"] = {
                "s": round(seconds, 2),
                "max_loop_stall_ms": round(stall * 1000, 1),
                "filed": len(book),
                "python_bytes_per_position": round((resident_bytes() - before) / count, 1),
            }
            # As the daemon does once it runs: what exists now is left out of the garbage
            # collector's passes.
            gc.freeze()
            for move in MOVES:
                query = stress_query(api.symbols, SYMBOL, None, move)
                runs = [await timed(stress_documents(api, query)) for _ in range(repeat)]
                (document,) = runs[-1][2]
                figures[f"stress {move}"] = {
                    **_summary(runs),
                    "liquidated": document["liquidated"]["count"],
                    "margin_call": document["margin_call"]["count"],
                }
            for name, low_f, high_f, step in (
                ("map ±20 % / 400", "0.8", "1.2", Decimal(64)),
                ("map ±20 % / 256 of 100", "0.8", "1.2", Decimal(100)),
            ):
                low, high = Decimal(MARK) * Decimal(low_f), Decimal(MARK) * Decimal(high_f)
                maps = [
                    await timed(map_document(api, SYMBOL, low, high, step)) for _ in range(repeat)
                ]
                figures[name] = _summary(maps)
            figures["gauges 1/5/10 %"] = _summary(
                [await timed(_gauges(books, Decimal(MARK))) for _ in range(repeat)]
            )
            await asyncio.to_thread(load, url, changes, "more")
            query = stress_query(api.symbols, SYMBOL, None, "-0.1")
            figures[f"stress -0.1 after {changes:,} more positions"] = _summary(
                [await timed(stress_documents(api, query))]
            )
        finally:
            running.cancel()
            await reads.aclose()
    return figures


async def _gauges(books: Books, mark: Decimal) -> Within:
    """The liquidation gauges' computation (both sides, three distances)."""
    return (await books.book(SYMBOL, 60)).within(mark, GAUGE_DISTANCES)


def _summary(runs: list[tuple[float, float, Any]]) -> dict[str, float]:
    """The median wall time and the longest loop stall of some runs, in ms."""
    return {
        "ms": round(statistics.median(seconds for seconds, _, _ in runs) * 1000, 2),
        "max_loop_stall_ms": round(max(stall for _, stall, _ in runs) * 1000, 1),
    }


def load(url: str, count: int, prefix: str) -> None:
    """Load ``count`` positions of the symbol, ids ``{prefix}-N``, with ``liqmon positions
    load``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "positions.jsonl"
        with data.open("w") as out:
            for position in generate_positions(
                count, len(prefix), symbols={SYMBOL: MARK}, inverse={}
            ):
                position["id"] = f"{prefix}-{position['id']}"
                out.write(json.dumps(position) + "\n")
        command = [str(Path(sys.executable).parent / "liqmon"), "positions", "load", str(data)]
        env = dict(os.environ, LIQMON_REDIS_URL=url)
        subprocess.run(command, env=env, check=True, capture_output=True)


def measure(count: int, repeat: int, changes: int) -> dict[str, Any]:
    """Load ``count`` positions into a fresh Redis and time the book and the queries."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.hset("liqmon:{BTCUSDT}:price", mapping={"mark": str(MARK), "mark_ts": 1})
        before = int(client.info("memory")["used_memory"])
        load(server.url, count, "p")
        outbox, log = (
            int(client.memory_usage(f"liqmon:{{{SYMBOL}}}:{key}", samples=0) or 0)
            for key in ("outbox", "changes")
        )
        after = int(client.info("memory")["used_memory"])
        client.close()
        return {
            "positions": count,
            "redis_bytes_per_position": round((after - before - outbox - log) / count, 1),
            "redis_change_log_bytes": log,
            **asyncio.run(timings(server.url, count, repeat, changes)),
        }


def main() -> None:
    """Measure each ``--positions`` count and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--positions", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--changes", type=int, default=10_000)
    args = parser.parse_args()
    configure("warning")  # the books' log lines to stderr, the figures alone to stdout
    figures = [measure(count, args.repeat, args.changes) for count in args.positions]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
