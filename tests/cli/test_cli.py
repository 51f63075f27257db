"""The real `liqmon` command: calc, bad arguments, and positions load/list/show against Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import half_btc_long, nodes_holding, position_object, redis_url_of

from monitor.state.keys import Keys

REPO = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
CONFIGURED = "BTCUSDT, ETHUSDT, SOLUSDT, BTCUSD, ETHUSD"


def liqmon(
    *args: str, redis_url: str | None = None, cluster: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the installed command from the repository root, as a user would.

    Output is decoded without newline translation, so a progress line's
    carriage returns stay visible. With ``cluster``, ``redis_url`` names a
    node of a Redis Cluster.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    if redis_url is not None:
        env["LIQMON_REDIS_URL"] = redis_url
    if cluster:
        env["LIQMON_REDIS_CLUSTER"] = "true"
    done = subprocess.run(
        [str(LIQMON), *args], cwd=REPO, env=env, capture_output=True, timeout=30, check=False
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def calc(*args: str) -> subprocess.CompletedProcess[str]:
    return liqmon("--config", "config/liqmon.toml", "calc", *args)


WORKED = ["--symbol", "BTCUSDT", "--side", "long", "--qty", "0.5", "--entry", "60000"]


def test_calc_prints_the_worked_example() -> None:
    """The issue's worked long liquidates at 27,000/0.498 and is healthy at a mark of 55,000."""
    done = calc(*WORKED, "--margin", "3000", "--mark", "55000")
    assert (done.returncode, done.stderr) == (0, "")
    result = json.loads(done.stdout)
    assert result == {
        "symbol": "BTCUSDT",
        "venue": "binance",
        "contract": "linear",
        "liquidation_price": "54216.86746987951807228915663",
        "bankruptcy_price": "54000",
        "margin_call_price": "54271.35678391959798994974874",
        "mark_price": "55000",
        "notional": "27500",
        "unrealized_pnl": "-2500",
        "maintenance_margin": "110",
        "margin_balance": "500",
        "margin_ratio": "0.22",
        "venue_ratio": "0.22",
        "status": "healthy",
    }
    assert Decimal(result["liquidation_price"]) == Decimal(27000) / Decimal("0.498")


@pytest.mark.parametrize(("mark", "status"), [("54250", "margin_call"), ("54216", "liquidatable")])
def test_calc_reports_the_status_at_the_mark(mark: str, status: str) -> None:
    """Past the margin-call price the status is margin_call; past liquidation, liquidatable."""
    done = calc(*WORKED, "--margin", "3000", "--mark", mark)
    assert done.returncode == 0
    assert json.loads(done.stdout)["status"] == status


def test_calc_without_mark_and_without_liquidation_price() -> None:
    """A long backed by more than its notional prints null prices and no mark-dependent fields."""
    done = calc(*WORKED, "--margin", "40000")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "symbol": "BTCUSDT",
        "venue": "binance",
        "contract": "linear",
        "liquidation_price": None,
        "bankruptcy_price": None,
        "margin_call_price": None,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["calc", *WORKED[:5], "-0.5", "--entry", "60000", "--margin", "3000"],
            "liqmon calc: error: argument --qty: '-0.5' must be a positive finite number",
        ),
        (
            ["calc", *WORKED, "--margin", "NaN"],
            "liqmon calc: error: argument --margin: 'NaN' must be a positive finite number",
        ),
        (
            ["calc", *WORKED, "--margin", "lots"],
            "liqmon calc: error: argument --margin: 'lots' is not a decimal number",
        ),
        (
            ["calc", *WORKED, "--margin", "1e999999999"],
            "liqmon calc: error: argument --margin: '1e999999999' is out of range "
            "(at most 40 digits before or after the point)",
        ),
        (
            ["calc", "--symbol", "XRPUSDT", *WORKED[2:], "--margin", "3000"],
            f"liqmon: error: unknown symbol 'XRPUSDT'; configured: {CONFIGURED}",
        ),
        (
            ["calc", *WORKED[:2], *WORKED[4:], "--margin", "3000"],
            "liqmon calc: error: the following arguments are required: --side",
        ),
        (
            ["calc", *WORKED[:3], "sideways", *WORKED[4:], "--margin", "3000"],
            "liqmon calc: error: argument --side: invalid choice: 'sideways' "
            "(choose from 'long', 'short')",
        ),
        (
            ["positions", "list", "--symbol", "XRPUSDT"],
            f"liqmon: error: unknown symbol 'XRPUSDT'; configured: {CONFIGURED}",
        ),
        (
            ["positions", "load", "missing.jsonl"],
            "liqmon: error: missing.jsonl: no such file",
        ),
        (
            ["positions", "load", "missing.jsonl", "--batch", "0"],
            "liqmon positions load: error: argument --batch: '0' must be a positive integer",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    """A bad argument exits with status 2, prints nothing, and says why in one stderr line."""
    done = liqmon("--config", "config/liqmon.toml", *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("nope.toml", "liqmon: error: nope.toml: file not found (pass --config FILE)"),
        ("config", "liqmon: error: config: cannot read: Is a directory"),
    ],
)
def test_a_bad_config_path_exits_2_with_one_line(config: str, message: str) -> None:
    """A configuration path that is missing or not a file exits 2 with one line naming it."""
    done = liqmon("--config", config, "calc", *WORKED, "--margin", "3000")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


LINES = [
    half_btc_long("p-1"),
    # Numbers as JSON numbers: read exactly, not through a float.
    '{"id": "p-2", "account": "acct-7", "symbol": "BTCUSDT", "side": "short", "qty": 0.1,'
    ' "entry_price": 60000.1, "margin": 600, "seq": 3}',
    "",
    position_object("p-bad", account="acct-42", margin="-5"),
    position_object(
        "p-3", account="acct-42", symbol="ETHUSDT", qty="2", entry_price="3000", margin="300"
    ),
]


def _jsonl(lines: list[Any]) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def _client(url: str, cluster: bool) -> redis.Redis | redis.RedisCluster:
    return redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_positions_load_list_and_show(
    request: pytest.FixtureRequest, tmp_path: Path, cluster: bool
) -> None:
    """Loading a JSONL file reports what it loaded and rejected (exit 1 for the rejected line);
    list prints the open positions at the symbol's precision and show every digit.

    On a Redis Cluster, the book's two symbols live on different nodes.
    """
    redis_url = redis_url_of(request, cluster)
    if cluster:
        symbols = [line["symbol"] for line in LINES if isinstance(line, dict)]
        assert len(nodes_holding(redis_url, [Keys().positions(s) for s in symbols])) == 2
    with _client(redis_url, cluster) as client:
        client.hset(Keys().price("BTCUSDT"), mapping={"mark": "55000", "mark_ts": 1})
    path = tmp_path / "book.jsonl"
    path.write_text(_jsonl(LINES))

    done = liqmon("positions", "load", str(path), redis_url=redis_url, cluster=cluster)
    assert (done.returncode, done.stdout) == (1, "")
    first, progress, last, end = done.stderr.split("\n")
    assert (first, end) == ("line 4: rejected: non_positive: margin must be positive, got -5", "")
    assert last == (
        "liqmon: error: 1 line was rejected (listed above, all in the dead-letter stream): "
        "fix them and load them again"
    )
    # Progress overwrites itself with carriage returns; the last one is the summary.
    summary = progress.rsplit("\r", 1)[-1]
    assert re.fullmatch(
        r"loaded 3 positions in \d+\.\d s; 0 ignored \(not newer\), 1 rejected, 0 events queued",
        summary,
    ), progress
    with _client(redis_url, cluster) as client:
        ((_, fields),) = client.xrange(Keys().dead_letter)
    assert fields == {
        b"source": b"load",
        b"reason": b"non_positive",
        b"detail": b"line 4: margin must be positive, got -5",
        b"payload": (json.dumps(LINES[3]) + "\n").encode(),
    } | {k: fields[k] for k in (b"payload_bytes", b"bytes", b"total")}
    assert int(fields[b"payload_bytes"]) == len(fields[b"payload"])

    done = liqmon("positions", "list", "--symbol", "BTCUSDT", redis_url=redis_url, cluster=cluster)
    assert (done.returncode, done.stderr) == (0, "")
    assert [line.split() for line in done.stdout.splitlines()] == [
        [
            "id",
            "account",
            "symbol",
            "side",
            "qty",
            "mark_price",
            "liquidation_price",
            "distance_pct",
            "margin_ratio",
            "status",
        ],
        [
            "p-1",
            "acct-42",
            "BTCUSDT",
            "long",
            "0.5",
            "55000",
            "54217",
            "1.42",
            "0.2200",
            "healthy",
        ],
        [
            "p-2",
            "acct-7",
            "BTCUSDT",
            "short",
            "0.1",
            "55000",
            "65737",
            "19.52",
            "0.0200",
            "healthy",
        ],
        ["(2", "of", "2", "open", "positions", "shown)"],
    ]

    done = liqmon("positions", "show", "p-2", redis_url=redis_url, cluster=cluster)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {
        "id": "p-2",
        "account": "acct-7",
        "symbol": "BTCUSDT",
        "side": "short",
        "qty": "0.1",
        "entry_price": "60000.1",
        "margin": "600",
        "seq": 3,
        "status": "healthy",
        "liquidation_price": "65737.15139442231075697211155",
        "bankruptcy_price": "66000.1",
        "mark_price": "55000",
        "distance_pct": "19.52",
        "margin_ratio": "0.01999981818347105935400587267",
    }

    done = liqmon("positions", "show", "p-bad", redis_url=redis_url, cluster=cluster)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "liqmon: error: no position 'p-bad'; 'liqmon positions list' shows the ids\n",
    )
