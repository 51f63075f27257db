"""Bulk loading: a mark in another tool's spelling, and several worker processes."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis
import redis.asyncio as aioredis
from harness import position_object, settings_for

from monitor.core.position import PositionUpdate
from monitor.core.wire import position_from_object
from monitor.service.loading import load_positions
from monitor.state.keys import Keys

if TYPE_CHECKING:
    from conftest import RedisFactory

REPO = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
MARKS = {"BTCUSDT": "64000", "ETHUSDT": "3400", "BTCUSD": "64000"}


async def test_load_stores_every_position_whatever_the_mark_spelling(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A mark stored as "64000.00" does not defeat the compare-and-set: all positions load."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    client = aioredis.Redis.from_url(redis_url)
    await client.hset(f"{prefix}:{{BTCUSDT}}:price", mapping={"mark": "64000.00", "mark_ts": 1})
    items: list[tuple[int, bytes, PositionUpdate]] = [
        (n, b"", position_from_object(
            position_object(f"p-{n}", account="a", entry_price="64000", margin="6400"),
            settings.symbols,
        ))
        for n in range(50)
    ]  # fmt: skip
    summary = await load_positions(settings, items, batch_size=20, progress=False)
    stored = await client.hlen(f"{prefix}:{{BTCUSDT}}:positions")
    await client.aclose()
    assert (50, 0, 50) == (summary.applied, summary.failed, stored)


def _book_file(path: Path, seed: int) -> None:
    """Versions of 60 positions over three symbols (repeated ids, older versions after newer
    ones, closes, every leverage), with blank, malformed and invalid lines among them."""
    rng = random.Random(seed)
    lines = []
    for n in range(600):
        symbol = ("BTCUSDT", "ETHUSDT", "BTCUSD")[n % 3]
        mark = Decimal(MARKS[symbol])
        qty = (
            Decimal(rng.randint(0, 40))
            if symbol == "BTCUSD"
            else Decimal(rng.randint(0, 900)) / 100
        )
        entry = (mark * Decimal(rng.randint(970, 1030)) / 1000).quantize(Decimal("0.1"))
        notional = qty * 100 / entry if symbol == "BTCUSD" else qty * entry
        margin = (notional / rng.choice((2, 10, 50, 120))).quantize(Decimal("1e-8")) or 1
        position = {
            "id": f"p-{rng.randint(0, 59)}-{symbol}",
            "account": f"acct-{n % 4}",
            "symbol": symbol,
            "side": rng.choice(("long", "short")),
            "qty": str(qty),
            "entry_price": str(entry),
            "margin": str(margin),
            "seq": rng.randint(1, 9),
        }
        lines.append(json.dumps(position))
        if n % 50 == 7:
            lines += ["", "{not json", json.dumps(position | {"symbol": "DOGEUSDT"})]
        if n % 70 == 3:
            lines.append(json.dumps(position | {"margin": "-1"}))
    path.write_text("\n".join(lines) + "\n")


def _stored(url: str) -> dict[str, Any]:
    """Everything a load leaves in Redis (event payloads without their emission time)."""
    keys = Keys()
    state: dict[str, Any] = {}
    with redis.Redis.from_url(url) as client:
        for symbol in MARKS:
            state[f"{symbol} records"] = client.hgetall(keys.positions(symbol))
            for key in keys.all_triggers(symbol):
                state[key] = client.zrange(key, 0, -1, withscores=True)
            by_position: dict[str, list[Any]] = {}
            for _, fields in client.xrange(keys.outbox(symbol)):
                payload = orjson.loads(fields[b"payload"])
                payload.pop("emitted_at")
                by_position.setdefault(payload["position_id"], []).append(payload)
            state[f"{symbol} events"] = by_position
        # Not "total": the stream's running byte count depends on the order workers wrote in.
        state["dead letters"] = sorted(
            sorted((k, v) for k, v in fields.items() if k != b"total")
            for _, fields in client.xrange(keys.dead_letter)
        )
    return state


def _load(path: Path, url: str, workers: int) -> subprocess.CompletedProcess[str]:
    with redis.Redis.from_url(url) as client:
        for symbol, mark in MARKS.items():
            client.hset(Keys().price(symbol), mapping={"mark": mark, "mark_ts": 1})
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    env["LIQMON_REDIS_URL"] = url
    command = [str(LIQMON), "positions", "load", str(path), "--workers", str(workers)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=60, check=False)
    return subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr.decode())


def test_workers_load_what_one_process_loads(fresh_redis: RedisFactory, tmp_path: Path) -> None:
    """--workers 3 stores, announces, rejects and reports exactly what one process does."""
    path = tmp_path / "book.jsonl"
    _book_file(path, seed=11)
    one, three = fresh_redis(), fresh_redis()
    alone, shared = _load(path, one.url, 1), _load(path, three.url, 3)
    # The book has rejected lines: both loads exit 1 (see test_cli_errors).
    assert (1, 1) == (alone.returncode, shared.returncode), shared.stderr
    expected, actual = _stored(one.url), _stored(three.url)
    assert sum(len(events) for events in expected["BTCUSDT events"].values()) > 5
    assert expected == actual
    # Same first rejections in line order, same counts; only the time differs.
    timeless = [re.sub(r" in \d+\.\d s;", " in T s;", done.stderr) for done in (alone, shared)]
    assert timeless[0] == timeless[1]
    assert timeless[0].split("\n")[:2] == [
        "line 5: rejected: non_positive: margin must be positive, got -1",
        "line 11: rejected: malformed_json: unexpected character, expected a string key: "
        "line 1 column 2 (char 1)",
    ]
