"""Everyday failures of the real `liqmon` command: one stderr line and a documented status.

Every case runs the installed command as a subprocess, against the real servers
the fixtures start, or against a port nothing listens on for the "down" cases.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from harness import btc_long

from monitor.cli.main import EXIT_INTERRUPTED, EXIT_UNREACHABLE, explain
from monitor.config.loading import DEFAULT_PATH, load_settings
from monitor.devtools.embedded import free_port
from monitor.service.loading import open_read_model
from monitor.state.keys import Keys
from monitor.web.api import Api, parse_positions_query

if TYPE_CHECKING:
    from conftest import MosquittoFactory

REPO = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
COMMANDS = ["run", "publish", "calc", "positions", "watch", "replay", "record", "demo"]


def environment(**overrides: str) -> dict[str, str]:
    """The test's environment without any LIQMON_ setting, plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    return env | overrides


def liqmon(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed command from the repository root with ``LIQMON_*`` ``env``."""
    done = subprocess.run(
        [str(LIQMON), *args],
        cwd=REPO,
        env=environment(**env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed command (asserting there is exactly one).

    A daemon's JSON log lines (``run`` and ``publish`` log ``starting`` first) are
    its log, not the error: they are left out.
    """
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A JSON Lines file of three BTCUSDT longs (margins 3,000, 5,000 and 7,000)."""
    path = tmp_path / "book.jsonl"
    lines = [btc_long(f"p-{n}", margin) for n, margin in enumerate(["3000", "5000", "7000"], 1)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "args",
    [["positions", "list"], ["positions", "show", "p-1"], ["positions", "load", "BOOK"]],
    ids=["list", "show", "load"],
)
def test_redis_down_is_one_line_and_exit_3(args: list[str], book: Path, closed_port: int) -> None:
    """With Redis down, positions list, show and load say where Redis was expected and exit 3."""
    args = [str(book) if arg == "BOOK" else arg for arg in args]
    done = liqmon(*args, LIQMON_REDIS_URL=f"redis://127.0.0.1:{closed_port}/0")
    assert (done.returncode, done.stdout) == (EXIT_UNREACHABLE, "")
    assert one_line(done) == (
        f"liqmon: error: cannot reach Redis at 127.0.0.1:{closed_port} (connection refused): "
        "start it, or point LIQMON_REDIS_URL at it"
    )


def test_redis_down_names_the_configuration_file(tmp_path: Path, closed_port: int) -> None:
    """Without an environment override, the line names the [redis] url of the file to fix."""
    shipped = (REPO / DEFAULT_PATH).read_text()
    config = tmp_path / "liqmon.toml"
    config.write_text(
        shipped.replace('"redis://127.0.0.1:6379/0"', f'"redis://127.0.0.1:{closed_port}/0"')
    )
    done = liqmon("positions", "list", "--config", str(config))
    assert done.returncode == EXIT_UNREACHABLE
    assert one_line(done).endswith(
        f"start it, or point [redis] url in {config} (or LIQMON_REDIS_URL) at it"
    )


@pytest.mark.parametrize("args", [["watch"], ["replay", "BOOK"]], ids=["watch", "replay"])
def test_broker_down_is_one_line_and_exit_3(args: list[str], book: Path, closed_port: int) -> None:
    """With the broker down, watch and replay say where it was expected and exit 3."""
    args = [str(book) if arg == "BOOK" else arg for arg in args]
    done = liqmon(*args, LIQMON_MQTT_URL=f"mqtt://127.0.0.1:{closed_port}")
    assert done.returncode == EXIT_UNREACHABLE
    assert one_line(done) == (
        f"liqmon: error: cannot reach the MQTT broker at 127.0.0.1:{closed_port} "
        "(connection refused): start it, or point LIQMON_MQTT_URL at it"
    )


def test_ctrl_c_stops_watch_quietly_with_130(mqtt_url: str) -> None:
    """SIGINT to a running `liqmon watch` ends it with status 130 and no traceback."""
    # A shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that: `liqmon watch` gets the terminal's default, as a user's has.
    with subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGINT_EXEC, str(LIQMON), "watch"],
        cwd=REPO,
        env=environment(LIQMON_MQTT_URL=mqtt_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            assert process.stderr is not None
            assert process.stderr.readline() == b"watching events (Ctrl-C to stop)\n"
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert (process.returncode, stdout, stderr) == (EXIT_INTERRUPTED, b"", b"")


DEFAULT_SIGINT_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
"""Runs the program named by its arguments with SIGINT at its default disposition."""


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A local port another process (this test) is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("command", "setting"), [("run", "LIQMON_HTTP_PORT"), ("publish", "--http-port")]
)
def test_a_daemon_with_its_http_port_taken_is_one_line_and_exit_1(
    redis_url: str, mqtt_url: str, taken_port: int, command: str, setting: str
) -> None:
    """`liqmon run` (or `publish`) on a port in use names the address and the setting, exit 1."""
    args = [command] if command == "run" else [command, "--http-port", str(taken_port)]
    done = liqmon(
        *args,
        LIQMON_REDIS_URL=redis_url,
        LIQMON_MQTT_URL=mqtt_url,
        LIQMON_HTTP_PORT=str(taken_port),
    )
    assert done.returncode == 1
    assert one_line(done) == (
        f"liqmon: error: cannot listen on 127.0.0.1:{taken_port}: the address is already in "
        f"use; stop the process holding it, or choose another port ({setting})"
    )


def test_config_is_accepted_after_the_command(tmp_path: Path) -> None:
    """`--config FILE` works after the command (and wins over one given before it)."""
    config = tmp_path / "liqmon.toml"
    config.write_text(
        (REPO / DEFAULT_PATH).read_text().replace("[symbols.BTCUSDT]", "[symbols.XBT]")
    )
    args = ["--side", "long", "--qty", "1", "--entry", "60000", "--margin", "3000"]
    done = liqmon("calc", "--symbol", "XBT", *args, "--config", str(config))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["symbol"] == "XBT"
    done = liqmon(
        "--config", "nope.toml", "calc", "--symbol", "XBT", *args, "--config", str(config)
    )
    assert done.returncode == 0
    done = liqmon("run", "--config", "nope.toml")
    assert (done.returncode, one_line(done)) == (
        2,
        "liqmon: error: nope.toml: file not found (pass --config FILE)",
    )


def test_version_prints_the_package_version() -> None:
    """`liqmon --version` prints the installed package's version and exits 0."""
    from importlib.metadata import version

    done = liqmon("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"liqmon {version('liqmon')}\n", "")


def test_help_is_plain_text_and_names_every_command() -> None:
    """`liqmon --help` has no reST markup, names all eight commands and the exit statuses."""
    done = liqmon("--help")
    assert done.returncode == 0
    assert "``" not in done.stdout
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")]
    assert [name for name in listed if name in COMMANDS] == COMMANDS
    assert "3    Redis or the MQTT broker unreachable" in done.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["publish"],
        ["calc"],
        ["positions", "load"],
        ["positions", "list"],
        ["positions", "show"],
        ["watch"],
        ["replay"],
        ["record"],
        ["demo"],
    ],
    ids=" ".join,
)
def test_every_option_of_every_command_has_help(command: list[str]) -> None:
    """Each command's --help documents --config and gives every option a description."""
    done = liqmon(*command, "--help")
    assert done.returncode == 0
    assert "--config FILE" in done.stdout
    options = done.stdout.split("options:", 1)[1]
    for line in options.splitlines():
        if line.strip().startswith("-") and "  " not in line.strip():
            # An option whose help text did not fit wraps to the next line: that line must exist.
            following = options.splitlines()[options.splitlines().index(line) + 1]
            assert following.startswith(" " * 10), f"no help for {line.strip()!r}"


def test_an_unknown_position_id_exits_1(redis_url: str) -> None:
    """`positions show` of an id nobody loaded says so in one line and exits 1 (not 2)."""
    done = liqmon("positions", "show", "p-nope", LIQMON_REDIS_URL=redis_url)
    assert (done.returncode, done.stdout) == (1, "")
    assert one_line(done) == (
        "liqmon: error: no position 'p-nope'; 'liqmon positions list' shows the ids"
    )


def test_load_with_rejected_lines_exits_1_and_counts_them(redis_url: str, book: Path) -> None:
    """Rejected lines make `positions load` exit 1, its final line saying how many."""
    with book.open("a") as handle:
        handle.write("not json\n")
        handle.write(json.dumps(btc_long("p-bad", "-5")) + "\n")
    done = liqmon("positions", "load", str(book), LIQMON_REDIS_URL=redis_url)
    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("line 4: rejected: malformed_json: ")
    assert lines[1] == "line 5: rejected: non_positive: margin must be positive, got -5"
    assert lines[2].startswith("loaded 3 positions in ")
    assert lines[-1] == (
        "liqmon: error: 2 lines were rejected (listed above, all in the dead-letter stream): "
        "fix them and load them again"
    )


def test_list_says_how_many_of_how_many_it_shows(redis_url: str, book: Path) -> None:
    """`positions list --limit 1` prints one row and says it is 1 of the 3 open positions."""
    assert liqmon("positions", "load", str(book), LIQMON_REDIS_URL=redis_url).returncode == 0
    done = liqmon("positions", "list", "--limit", "1", LIQMON_REDIS_URL=redis_url)
    assert (done.returncode, done.stderr) == (0, "")
    header, row, count = done.stdout.splitlines()
    assert (header.split()[0], row.split()[0]) == ("id", "p-1")
    assert count == "(1 of 3 open positions shown)"


def _marked_book(redis_url: str, tmp_path: Path) -> None:
    """Load, at a BTCUSDT mark of 58,000: p-1 liquidated, p-2 in margin call, p-3 healthy."""
    with redis.Redis.from_url(redis_url) as client:
        client.hset(Keys().price("BTCUSDT"), mapping={"mark": "58000.0", "mark_ts": 1})
    path = tmp_path / "marked.jsonl"
    margins = {"p-1": "1500", "p-2": "2270", "p-3": "7000"}
    path.write_text("".join(json.dumps(btc_long(i, m)) + "\n" for i, m in margins.items()))
    assert liqmon("positions", "load", str(path), LIQMON_REDIS_URL=redis_url).returncode == 0


async def test_list_selects_what_the_api_selects(redis_url: str, tmp_path: Path) -> None:
    """By default open positions, with --at-risk those in margin call: the same ids as the API."""
    _marked_book(redis_url, tmp_path)
    settings = load_settings(REPO / DEFAULT_PATH, {"LIQMON_REDIS_URL": redis_url})
    reads = open_read_model(settings)
    api = Api(reads, settings.symbols)
    try:
        for cli_args, query in [
            ([], ""),
            (["--at-risk"], "at_risk=true"),
            (["--status", "liquidated"], "status=liquidated"),
        ]:
            done = liqmon("positions", "list", "--json", *cli_args, LIQMON_REDIS_URL=redis_url)
            assert (done.returncode, done.stderr) == (0, "")
            listed: dict[str, Any] = json.loads(done.stdout)
            wanted = await api.positions(parse_positions_query(query, api.symbols))
            assert [row["id"] for row in listed["positions"]] == [r["id"] for r in wanted.rows]
            shown = {row["id"]: row["status"] for row in listed["positions"]}
            expected = {
                "": {"p-2": "margin_call", "p-3": "healthy"},
                "at_risk=true": {"p-2": "margin_call"},
                "status=liquidated": {"p-1": "liquidated"},
            }[query]
            assert shown == expected
            assert listed["matched"] == len(expected)
    finally:
        await reads.aclose()


def test_table_prices_have_the_symbols_precision(redis_url: str, tmp_path: Path) -> None:
    """The table shows prices at the mark's decimals (the liquidation price rounded towards
    the mark) while `positions show` keeps every digit."""
    _marked_book(redis_url, tmp_path)
    done = liqmon("positions", "list", "--at-risk", LIQMON_REDIS_URL=redis_url)
    assert done.returncode == 0
    header, row, count = (line.split() for line in done.stdout.splitlines())
    shown = dict(zip(header, row, strict=True))
    exact = json.loads(liqmon("positions", "show", "p-2", LIQMON_REDIS_URL=redis_url).stdout)
    assert shown["mark_price"] == "58000.0"
    assert len(exact["liquidation_price"]) > 20
    places = shown["liquidation_price"].split(".")[1]
    assert len(places) == 1
    assert 0 <= float(shown["liquidation_price"]) - float(exact["liquidation_price"]) < 0.1
    assert shown["margin_ratio"] == f"{float(exact['margin_ratio']):.4f}"
    assert count == ["(1", "of", "1", "margin", "call", "positions", "shown)"]


def test_a_bug_keeps_its_traceback_and_known_groups_are_unwrapped() -> None:
    """explain() maps known failures (inside exception groups too) and leaves bugs alone."""
    refused = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Refused.")
    in_use = OSError(98, "error while attempting to bind on address ('127.0.0.1', 8321)")
    assert explain(ValueError("a bug"), None) is None
    assert explain(ExceptionGroup("g", [refused, ValueError("a bug")]), None) is None
    assert explain(ExceptionGroup("g", [ExceptionGroup("h", [in_use])]), None) == (
        "cannot listen on 127.0.0.1:8321: the address is already in use; stop the process "
        "holding it, or choose another port "
        "([http] port in the configuration (or LIQMON_HTTP_PORT))",
        1,
    )
    assert explain(KeyboardInterrupt(), None) == (None, EXIT_INTERRUPTED)


def test_a_broker_refusing_the_credentials_is_a_configuration_error(
    fresh_mosquitto: MosquittoFactory,
) -> None:
    """A broker that refuses the connection (no credentials given) exits 2, naming the URL."""
    broker = fresh_mosquitto(extra_config=["allow_anonymous false"])
    done = liqmon("watch", LIQMON_MQTT_URL=broker.url)
    assert done.returncode == 2
    assert one_line(done) == (
        f"liqmon: error: the MQTT broker at 127.0.0.1:{broker.port} refused the connection "
        "([code:135] Not authorized): check the user:password of LIQMON_MQTT_URL"
    )


def test_a_file_that_cannot_be_written_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """`liqmon record` into a missing directory names the file and exits 1."""
    config = tmp_path / "liqmon.toml"
    recording = tmp_path / "ticks.jsonl"
    recording.write_text("")
    config.write_text(
        (REPO / DEFAULT_PATH).read_text()
        + f'\n[[sources]]\ntype = "replay"\npath = "{recording}"\nspeed = 0\n'
    )
    target = tmp_path / "missing" / "out.jsonl"
    done = liqmon("record", str(target), "--duration", "1", "--config", str(config))
    assert done.returncode == 1
    assert one_line(done) == f"liqmon: error: {target}: No such file or directory"


def test_a_reader_that_goes_away_ends_the_listing_quietly(redis_url: str, book: Path) -> None:
    """`liqmon positions list | head -0`: no traceback, status 141 like any program whose
    reader went away."""
    assert liqmon("positions", "load", str(book), LIQMON_REDIS_URL=redis_url).returncode == 0
    process = subprocess.Popen(
        [str(LIQMON), "positions", "list"],
        cwd=REPO,
        env=environment(LIQMON_REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the child writes its first line
    _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr) == (141, b"")
