"""Starting and stopping `liqmon run` and `liqmon publish`, start-up included.

A process that waits for Redis at start must still obey SIGTERM and SIGINT:
``docker stop`` and systemd send SIGTERM and otherwise kill after a grace
period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor import __version__
from monitor.devtools.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"


def read_until(
    process: subprocess.Popen[bytes], event: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The child's JSON log lines up to and including the first with ``event``."""
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if line.startswith(b"{"):
            lines.append(orjson.loads(line))
            if lines[-1]["event"] == event:
                return lines
    raise AssertionError(f"no {event!r} log line within {timeout} s")


CONFIG = str(ROOT / "config" / "liqmon.toml")


def spawned(command: list[str], mqtt_url: str, http_port: str) -> subprocess.Popen[bytes]:
    """``liqmon COMMAND`` with JSON logs on a pipe, and a Redis nobody listens on (every
    connection attempt is refused)."""
    env = dict(
        os.environ,
        LIQMON_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        LIQMON_MQTT_URL=mqtt_url,
        LIQMON_HTTP_PORT=http_port,
        LIQMON_LOG_FORMAT="json",
    )
    return subprocess.Popen(
        [str(LIQMON), "--config", CONFIG, *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", [["run"], ["publish"]], ids=["run", "publish"])
def test_a_signal_stops_the_process_while_redis_is_down_at_start(
    command: list[str], sig: signal.Signals, mqtt_url: str
) -> None:
    """With Redis down at start, SIGTERM or SIGINT ends it within 3 s: exit 0, no traceback."""
    process = spawned(command, mqtt_url, http_port="0")
    try:
        read_until(process, "redis_unavailable")
        sent = time.monotonic()
        process.send_signal(sig)
        code = process.wait(timeout=10)
        took = time.monotonic() - sent
        rest = process.communicate()[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    assert took < 3.0
    assert b"Traceback" not in rest
    events = [orjson.loads(line)["event"] for line in rest.splitlines() if line.startswith(b"{")]
    assert "stopped" in events


@pytest.mark.parametrize(
    ("command", "http"),
    [(["run"], "127.0.0.1:8399"), (["publish", "--http-port", "8398"], "127.0.0.1:8398")],
    ids=["run", "publish"],
)
def test_the_first_line_names_version_config_http_address_and_symbols(
    command: list[str], http: str, mqtt_url: str
) -> None:
    """The first log line names the version, the config file, the HTTP address and the symbols."""
    process = spawned(command, mqtt_url, http_port="8399")
    try:
        lines = read_until(process, "starting")
    finally:
        process.kill()
        process.communicate()
    assert len(lines) == 1
    starting = lines[0]
    assert (starting["version"], starting["config"], starting["http"], starting["symbols"]) == (
        __version__,
        CONFIG,
        http,
        ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSD", "ETHUSD"],
    )
