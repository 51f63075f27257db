"""The real ``liqmon stress`` and ``liqmon map`` against Redis, after ``positions load``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import redis
from harness import position_object
from test_cli import liqmon

from monitor.config.loading import load_settings
from monitor.core.position import PositionRecord
from monitor.core.stress import liquidation_map, stress
from monitor.state.keys import Keys

CONFIG = Path(__file__).resolve().parents[2] / "config" / "liqmon.toml"
BOOK = [
    position_object("l-1", qty="1", entry_price="60000", margin="3000"),
    position_object("l-2", qty="0.5", entry_price="58000", margin="1000"),
    position_object("s-1", side="short", qty="2", entry_price="61000", margin="6000"),
    position_object("s-2", side="short", qty="0.1", entry_price="59000", margin="200"),
]


def load(redis_url: str, tmp_path: Path) -> list[PositionRecord]:
    """The book loaded at a mark of 60,000; the stored records."""
    with redis.Redis.from_url(redis_url) as client:
        client.hset(Keys().price("BTCUSDT"), mapping={"mark": "60000", "mark_ts": 1})
    path = tmp_path / "book.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in BOOK))
    assert 0 == liqmon("positions", "load", str(path), redis_url=redis_url).returncode
    with redis.Redis.from_url(redis_url) as client:
        stored = client.hgetall(Keys().positions("BTCUSDT"))
    return [PositionRecord.decode(k.decode(), "BTCUSDT", v) for k, v in stored.items()]


def test_stress_prints_the_figures_every_record_gives(redis_url: str, tmp_path: Path) -> None:
    """``--json`` is the endpoint's document, equal to the position-by-position figures; the
    lines say the same; a move is taken from the stored mark."""
    records = load(redis_url, tmp_path)
    settings = load_settings(CONFIG, environ={})
    contract = settings.symbols["BTCUSDT"]
    expected = stress(contract, records, Decimal(55000), settings.risk).document(Decimal(60000))

    done = liqmon(
        "stress", "--symbol", "BTCUSDT", "--price", "55000", "--json", redis_url=redis_url
    )
    moved = liqmon("stress", "--symbol", "BTCUSDT", "--move", "-0.1", redis_url=redis_url)

    assert (0, "") == (done.returncode, done.stderr)
    assert {"stress": [{**expected, "move": None}]} == json.loads(done.stdout)
    assert expected["liquidated"]["count"] == 2  # type: ignore[index]
    at_54000 = stress(contract, records, Decimal(54000), settings.risk).document(Decimal(60000))
    liquidated = at_54000["liquidated"]
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == [
        "BTCUSDT at 54000.0 (mark 60000)",
        f"  liquidated   {liquidated['count']:>9,}  notional {liquidated['notional']}"  # type: ignore[index]
        f"  margin {liquidated['margin']}",  # type: ignore[index]
        f"  margin call  {at_54000['margin_call']['count']:>9,}"  # type: ignore[index]
        f"  notional {at_54000['margin_call']['notional']}",  # type: ignore[index]
        f"  shortfall    {at_54000['shortfall']}",
    ]


def test_map_prints_the_buckets_that_hold_a_position(redis_url: str, tmp_path: Path) -> None:
    """``liqmon map`` lists the non-empty buckets; ``--json`` has all of them."""
    records = load(redis_url, tmp_path)
    contract = load_settings(CONFIG, environ={}).symbols["BTCUSDT"]
    args = ["map", "--symbol", "BTCUSDT", "--low", "50000", "--high", "70000", "--step", "1000"]

    table = liqmon(*args, redis_url=redis_url)
    document = json.loads(liqmon(*args, "--json", redis_url=redis_url).stdout)

    expected = liquidation_map(contract, records, Decimal(50000), Decimal(70000), Decimal(1000))
    assert [b.document() for b in expected] == document["buckets"]
    held = [b for b in expected if b.long_count or b.short_count]
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["low", "high", "longs", "long_notional", "shorts", "short_notional"]
    assert [line.split()[:2] for line in lines[1:-1]] == [[str(b.low), str(b.high)] for b in held]
    assert lines[-1] == f"({len(held)} of 20 buckets hold a position; mark 60000)"


def test_refused_queries_exit_2_with_the_endpoints_message(redis_url: str) -> None:
    """A query the endpoint would refuse is one line and exit status 2."""
    zero = liqmon("stress", "--symbol", "BTCUSDT", "--price", "0", redis_url=redis_url)
    unmarked = liqmon("stress", "--symbol", "SOLUSDT", "--move", "0.1", redis_url=redis_url)
    backwards = liqmon(
        "map",
        "--symbol",
        "BTCUSDT",
        "--low",
        "2",
        "--high",
        "1",
        "--step",
        "1",
        redis_url=redis_url,
    )
    assert (2, "liqmon: error: price must be a positive decimal, got '0'\n") == (
        zero.returncode,
        zero.stderr,
    )
    assert (2, "liqmon: error: no mark stored for SOLUSDT yet: give a price\n") == (
        unmarked.returncode,
        unmarked.stderr,
    )
    assert (2, "liqmon: error: low must be below high, got 2 and 1\n") == (
        backwards.returncode,
        backwards.stderr,
    )
