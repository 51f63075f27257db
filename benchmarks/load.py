"""Measure `liqmon positions load`: time to load N positions and Redis memory per position.

Starts its own redis-server (monitor.devtools.embedded), writes N random positions over
the example configuration's symbols to a JSON Lines file (with ``--book``: the
bench's 500 symbols and generated configuration, see book.py), runs the real
`liqmon positions load` command on it, and reports wall time, rate, the CPU
seconds of the command (all its workers) and of Redis, and `INFO memory`
used_memory before/after divided by N (events queued in the outbox excluded), and
the CPU seconds the whole machine used meanwhile (above the other two: another tenant).

    .venv/bin/python -m benchmarks.load --positions 1000000
    .venv/bin/python -m benchmarks.load --positions 1000000 --book
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.generator import SYMBOLS, write_positions
from monitor.devtools.embedded import RedisServer


def _cpu_seconds(client: redis.Redis) -> float:
    """CPU time the Redis server has used so far."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _machine_cpu_seconds() -> float:
    """CPU time every process of the machine has used so far (/proc/stat): what the
    load and Redis did not use of it during a run was someone else's (the machine is shared)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


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
            from benchmarks import book  # the bench's market: 500 symbols, its configuration

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
        machine_before = _machine_cpu_seconds()
        started = time.perf_counter()
        cpu_before = os.times()
        subprocess.run(command, env=env, check=True)
        seconds = time.perf_counter() - started
        cpu = os.times()
        machine = _machine_cpu_seconds() - machine_before
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
            "machine_cpu_seconds": round(machine, 2),
        }
        print(json.dumps(report, indent=2))
        client.close()


if __name__ == "__main__":
    main()
