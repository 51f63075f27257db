"""Measure `liqmon positions load`: time to load N positions and Redis memory per position.

Starts its own redis-server (monitor.devtools.embedded), writes N random positions over
the example configuration's symbols to a JSON Lines file (with ``--book``: the
bench's 500 symbols and generated configuration, see book.py), runs the real
`liqmon positions load` command on it, and reports wall time, rate, the CPU
seconds of the command (all its workers) and of Redis, and `INFO memory`
used_memory before/after divided by N (events queued in the outbox excluded).

    .venv/bin/python benchmarks/load.py --positions 1000000
    .venv/bin/python benchmarks/load.py --positions 1000000 --book
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from monitor.devtools.embedded import RedisServer

SYMBOLS = {"BTCUSDT": 64000, "ETHUSDT": 3400, "SOLUSDT": 150, "BTCUSD": 64000, "ETHUSD": 3400}
INVERSE = {"BTCUSD": 100, "ETHUSD": 10}


def generate_positions(
    count: int,
    seed: int,
    symbols: Mapping[str, float] = SYMBOLS,
    inverse: Mapping[str, int] = INVERSE,
    symbol_of: Callable[[int], str] | None = None,
    entry_spread: float = 0.05,
    leverage: tuple[float, float] = (2, 50),
) -> Iterator[dict[str, Any]]:
    """N positions (JSON-ready dicts), entry within ``entry_spread`` of each symbol's mark.

    ``symbol_of(n)`` picks the n-th position's symbol (default: round robin);
    the mark in ``symbols`` is the one set before loading. Pure per seed.
    """
    rng = random.Random(seed)
    names = list(symbols)
    low, high = 1 - entry_spread, 1 + entry_spread
    for n in range(count):
        symbol = symbol_of(n) if symbol_of else names[n % len(names)]
        mark = symbols[symbol]
        price = mark * rng.uniform(low, high)
        lev = rng.uniform(*leverage)
        qty: float
        if symbol in inverse:
            qty = rng.randint(1, 2000)
            margin = qty * inverse[symbol] / price / lev
            entry, margin_text = f"{price:.1f}", f"{margin:.8f}"
        else:
            qty = round(rng.uniform(0.001, 200_000 / mark), 3) or 0.001
            margin = qty * price / lev
            entry, margin_text = f"{price:.2f}", f"{margin:.2f}"
        yield {
            "id": f"p-{n}",
            "account": f"acct-{n % 5000}",
            "symbol": symbol,
            "side": "long" if n % 3 else "short",
            "qty": str(qty),
            "entry_price": entry,
            "margin": margin_text,
            "seq": 1,
        }


def write_positions(path: Path, count: int, seed: int, **options: Any) -> None:
    """N positions as JSON Lines (see :func:`generate_positions`; default: leverage 2-50x)."""
    with path.open("w") as out:
        for position in generate_positions(count, seed, **options):
            out.write(json.dumps(position) + "\n")


def _cpu_seconds(client: redis.Redis) -> float:
    """CPU time the Redis server has used so far."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--book",
        action="store_true",
        help="make bench's book instead: 500 linear symbols, 20%% of positions on BTCUSDT",
    )
    parser.add_argument("--workers", type=int, help="liqmon positions load --workers")
    parser.add_argument("--batch", type=int, help="liqmon positions load --batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        data = Path(tmp) / "positions.jsonl"
        command = [str(Path(sys.executable).parent / "liqmon")]
        started = time.perf_counter()
        if args.book:
            import book  # the bench's market: 500 symbols, generated configuration

            marks = {name: book.mark_text(price) for name, price in book.universe().items()}
            config = Path(tmp) / "liqmon.toml"
            config.write_text(book.config_text(book.universe()))
            command += ["--config", str(config)]
            with data.open("w") as out:
                for position in book.positions(args.positions, args.seed, book.universe(), 0.2):
                    out.write(json.dumps(position) + "\n")
        else:
            marks = {symbol: str(price) for symbol, price in SYMBOLS.items()}
            write_positions(data, args.positions, args.seed)
        print(f"generated {args.positions:,} positions in {time.perf_counter() - started:.1f} s")
        client = redis.Redis.from_url(server.url)
        for symbol, price in marks.items():
            client.hset(f"liqmon:{{{symbol}}}:price", mapping={"mark": price, "mark_ts": 1})
        before = int(client.info("memory")["used_memory"])
        redis_cpu_before = _cpu_seconds(client)
        env = dict(os.environ, LIQMON_REDIS_URL=server.url)
        command += ["positions", "load", str(data)]
        if args.workers:
            command += ["--workers", str(args.workers)]
        if args.batch:
            command += ["--batch", str(args.batch)]
        started = time.perf_counter()
        cpu_before = os.times()
        subprocess.run(command, env=env, check=True)
        seconds = time.perf_counter() - started
        cpu = os.times()
        after = int(client.info("memory")["used_memory"])
        outbox = sum(
            int(client.memory_usage(f"liqmon:{{{symbol}}}:outbox", samples=0) or 0)
            for symbol in marks
        )
        events = sum(client.xlen(f"liqmon:{{{symbol}}}:outbox") for symbol in marks)
        stored = sum(client.hlen(f"liqmon:{{{symbol}}}:positions") for symbol in marks)
        per_position = (after - before - outbox) / args.positions
        report = {
            "events_queued_at_load": events,
            "outbox_bytes": outbox,
            "positions": args.positions,
            "positions_stored": stored,
            "symbols": len(marks),
            "load_seconds": round(seconds, 2),
            "load_cpu_seconds": round(
                cpu.children_user
                + cpu.children_system
                - cpu_before.children_user
                - cpu_before.children_system,
                2,
            ),
            "positions_per_second": round(args.positions / seconds),
            "redis_bytes_per_position_excluding_outbox": round(per_position, 1),
            "redis_cpu_seconds": round(_cpu_seconds(client) - redis_cpu_before, 2),
        }
        print(json.dumps(report, indent=2))
        client.close()


if __name__ == "__main__":
    main()
