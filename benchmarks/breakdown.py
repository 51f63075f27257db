"""Where a quiet tick's CPU goes: each stage of the monitor's tick path, alone.

A sampling profiler on a loaded 2-core machine charges wall time to whatever
syscall the process was preempted in; this measures CPU (``process_time``)
of each stage run in a loop, with the real monitor code and a real Redis and
broker, so the stages add up to the per-tick CPU that ``bench.py`` reports.

    .venv/bin/python -m benchmarks.breakdown [--positions-per-symbol 160]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import redis
import redis.asyncio as aioredis

from benchmarks import book
from benchmarks.generator import generate_positions
from feeds.tick import PriceKind, PriceTick
from monitor.config.loading import load_settings
from monitor.config.model import Limits
from monitor.core.coalescing import Coalescing, Mark
from monitor.core.guards import PriceGuards
from monitor.core.wire import price_from_payload
from monitor.devtools.embedded import MosquittoServer, RedisServer
from monitor.state.keys import Keys
from monitor.state.positions import PositionStore
from monitor.state.transport import Transport
from monitor.telemetry.metrics import Metrics

KEYS = Keys("liqmon")


def cpu_us(func: Any, rounds: int) -> float:
    """CPU microseconds per call of ``func()``."""
    started = time.process_time()
    for _ in range(rounds):
        func()
    return (time.process_time() - started) / rounds * 1e6


async def redis_stage(
    url: str, symbol: str, mark: Decimal, rounds: int, **options: Any
) -> dict[str, float]:
    """CPU per call of PositionStore.accept_mark (EVALSHA of candidates.lua) on redis.asyncio."""
    client = aioredis.Redis.from_url(url, **options)
    store = PositionStore(Transport.of(client), KEYS, Limits())
    ts = int(time.time() * 1000)
    for n in range(200):  # warm up: script load, connection
        await store.accept_mark(symbol, mark, ts + n)
    started_cpu, started = time.process_time(), time.perf_counter()
    for n in range(rounds):
        await store.accept_mark(symbol, mark, ts + 200 + n)
    cpu = (time.process_time() - started_cpu) / rounds * 1e6
    wall = (time.perf_counter() - started) / rounds * 1e6
    started_cpu = time.process_time()
    for _ in range(rounds):
        await client.ping()
    ping = (time.process_time() - started_cpu) / rounds * 1e6
    await client.aclose()
    return {"accept_mark_cpu_us": round(cpu, 1), "accept_mark_wall_us": round(wall, 1),
            "ping_cpu_us": round(ping, 1)}  # fmt: skip


async def mqtt_stage(mqtt: MosquittoServer, rounds: int) -> float:
    """CPU per QoS 0 message received through aiomqtt (paho decode, queue, iterator)."""
    client = aiomqtt.Client("127.0.0.1", mqtt.port, identifier="breakdown-sub")
    payload = b'{"price":"64000.5","ts":1732400000123}\n'
    async with client:
        await client.subscribe("liqmon/prices/+/mark", qos=1)
        feeder = subprocess.Popen(  # noqa: ASYNC220 (a feeder process, started once)
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "0",
             "-t", "liqmon/prices/BTCUSDT/mark", "-l"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert feeder.stdin is not None
        received = 0
        started = None
        feeder.stdin.write(payload * rounds)
        feeder.stdin.close()
        async with asyncio.timeout(60):
            async for _ in client.messages:
                if started is None:
                    started = time.process_time()
                received += 1
                if received == rounds:
                    break
        feeder.wait()
    assert started is not None
    return (time.process_time() - started) / (rounds - 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions-per-symbol", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    symbols = book.universe()
    rounds = args.rounds
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "liqmon.toml"
        config.write_text(book.config_text(symbols))
        settings = load_settings(config, environ={})
        symbol = "S001USDT"
        payload = b'{"price":"101.4987","ts":1732400000123}'
        out["wire_price_from_payload_us"] = cpu_us(
            lambda: price_from_payload(payload, symbol, PriceKind.MARK, "mqtt", 1 << 20), rounds
        )
        guards = PriceGuards(settings.guards)
        tick = PriceTick(symbol, PriceKind.MARK, Decimal("101.4987"), 1732400000123, "mqtt")
        out["guards_on_tick_us"] = cpu_us(
            lambda: guards.on_tick(tick, time.monotonic(), time.time_ns() // 1_000_000), rounds
        )
        out["guards_may_liquidate_us"] = cpu_us(
            lambda: guards.may_liquidate(symbol, time.monotonic()), rounds
        )
        coalescing = Coalescing()

        def coalesce() -> None:
            coalescing.offer(Mark(tick, 0.0))
            coalescing.take(symbol)
            coalescing.done(symbol)

        out["coalescer_offer_take_done_us"] = cpu_us(coalesce, rounds)
        metrics = Metrics()

        def count() -> None:
            metrics.ticks_received.labels(symbol, "mark", "mqtt").inc()
            metrics.ticks_evaluated.labels(symbol).inc()
            metrics.candidates.labels(symbol).inc(0)
            metrics.tick_seconds.observe(0.0003)

        out["prometheus_per_tick_us"] = cpu_us(count, rounds)
        for name in symbols:
            metrics.feed_age.labels(name).set(1.0)
            metrics.feed_stale.labels(name).set(0)
            metrics.liquidation_hold.labels(name).set(0)
            metrics.ticks_received.labels(name, "mark", "mqtt").inc()
            metrics.ticks_evaluated.labels(name).inc()
            metrics.candidates.labels(name).inc()
        started = time.process_time()
        for _ in range(20):
            metrics.render()
        out["metrics_render_500_symbols_ms"] = (time.process_time() - started) / 20 * 1000
        with RedisServer(Path(tmp) / "redis") as server:
            client = redis.Redis.from_url(server.url)
            client.hset(KEYS.price(symbol), mapping={"mark": book.mark_text(101.49), "mark_ts": 1})
            positions = generate_positions(
                args.positions_per_symbol,
                1,
                symbols={symbol: 101.49},
                inverse={},
                entry_spread=book.ENTRY_SPREAD,
                leverage=book.LEVERAGE,
            )
            lines = Path(tmp) / "p.jsonl"
            lines.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in positions))
            subprocess.run(
                [str(book.ROOT / ".venv" / "bin" / "liqmon"), "--config", str(config), "positions",
                 "load", str(lines)],
                env={"LIQMON_REDIS_URL": server.url, "PATH": "/usr/bin:/bin"},
                check=True, capture_output=True,
            )  # fmt: skip
            mark = Decimal("101.4987")
            out |= asyncio.run(redis_stage(server.url, symbol, mark, rounds // 4))
            # the daemon's client: socket timeouts (an asyncio timeout around every read)
            daemons = asyncio.run(
                redis_stage(
                    server.url,
                    symbol,
                    mark,
                    rounds // 4,
                    socket_timeout=5,
                    socket_connect_timeout=5,
                )
            )
            out |= {f"{k}_daemon_client": v for k, v in daemons.items()}
            started = time.process_time()
            pipe = client.pipeline(transaction=False)
            for name in symbols:
                pipe.hlen(KEYS.positions(name))
                for key in KEYS.all_triggers(name):
                    pipe.zcard(key)
            pipe.execute()
            out["sync_pipeline_2500_commands_ms"] = (time.process_time() - started) * 1000
            client.close()
        with MosquittoServer(Path(tmp) / "mqtt", persistence=False) as mqtt:
            out["aiomqtt_receive_qos0_us"] = asyncio.run(mqtt_stage(mqtt, rounds))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
