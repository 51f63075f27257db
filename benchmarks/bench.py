"""liqmon end-to-end benchmark: per-tick cost against book size, load, burst, ceilings.

Starts its own ``redis-server`` and ``mosquitto`` (monitor.devtools.embedded), writes a
configuration with 500 symbols, loads N positions with the real
``liqmon positions load`` and runs the real ``liqmon run`` as a subprocess
(its CPU time read from /proc). Ticks are QoS 0 MQTT publishes on
``liqmon/prices/{S}/mark``; what comes back is measured where a user sees it:

* tick -> evaluated: the moment the monitor's candidates script stores the mark
  (a Redis keyspace notification, timestamped by a separate observer process);
  for a tick that crosses no trigger that is the whole of its work;
* tick -> event: the arrival of the event at ``mosquitto_sub`` (QoS 1), which
  timestamps each message itself (``-F %U``).

Phases, per N (10k and 100k in quick mode, plus 1M in full mode):

1. load (time, Redis bytes per position), start, restart (start -> ready);
2. ticks that cross nothing at ``background_rate``/s: latency, CPU per tick of
   the monitor and of Redis, the monitor's own histogram;
3. the same background with ticks that each cross 1-3 triggers: tick -> event;
4. the peers' design, a full scan (HGETALL + ``monitor.core.margin.assess`` of every
   position of the symbol) on the same ticks, same data, same Redis;
5. at the largest N only: sustained load at rising rates until p99 > 10 ms,
   then one tick that liquidates 10 % of all positions (the burst);
6. once: the bare ceilings (redis-benchmark EVALSHA of the candidates script,
   mosquitto_pub/sub QoS 1 throughput, one MQTT hop's latency).

Writes ``results.json``, ``report.md`` and ``plot.png`` to
``benchmarks/results/<date>-quick|full/``.

    .venv/bin/python -m benchmarks.bench --quick     # < 2 minutes
    .venv/bin/python -m benchmarks.bench --full      # about 12 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
import uvloop

from benchmarks import book, report
from benchmarks.rawmqtt import Publisher
from benchmarks.stats import (
    CLOCK_TICKS,
    cpu_seconds,
    histogram_delta,
    spearman,
    summary_ms,
    tick_histogram,
)
from monitor.cli.main import LOAD_BATCH, default_load_workers
from monitor.config.loading import load_settings
from monitor.config.model import Settings
from monitor.core import topics
from monitor.core.evaluation import triggers_for
from monitor.core.margin import Position, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import Status, next_status
from monitor.core.wire import decimal_str
from monitor.devtools.embedded import MosquittoServer, RedisServer, free_port
from monitor.state.channel import resp_command
from monitor.state.keys import Keys
from monitor.state.positions import candidates_call
from monitor.state.transport import Transport, script_source

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIQMON = Path(sys.executable).parent / "liqmon"
PREFIX = "liqmon"
KEYS = Keys(PREFIX)


@dataclass(frozen=True)
class Profile:
    """How long and how large each phase runs."""

    name: str
    sizes: tuple[int, ...]
    baseline_s: float
    quiet_s: float
    cross_s: float
    background_rate: int
    cross_rate: int
    cross_symbols: int
    ramp_rates: tuple[int, ...]
    ramp_s: float
    fullscan_ticks: int
    fullscan_budget_s: float
    heavy_s: float
    ceiling_messages: int
    ceiling_ops: int


QUICK = Profile(
    name="quick",
    sizes=(10_000, 100_000),
    baseline_s=1.0,
    quiet_s=3.0,
    cross_s=4.0,
    background_rate=1000,
    cross_rate=40,
    cross_symbols=50,
    ramp_rates=(1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000),
    ramp_s=2.0,
    fullscan_ticks=1000,
    fullscan_budget_s=2.0,
    heavy_s=4.0,
    ceiling_messages=30_000,
    ceiling_ops=10_000,
)
FULL = Profile(
    name="full",
    sizes=(10_000, 100_000, 1_000_000),
    baseline_s=3.0,
    quiet_s=10.0,
    cross_s=20.0,
    background_rate=1000,
    cross_rate=50,
    cross_symbols=50,
    ramp_rates=(1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000, 14000, 16000),
    ramp_s=5.0,
    fullscan_ticks=2000,
    fullscan_budget_s=15.0,
    heavy_s=8.0,
    ceiling_messages=50_000,
    ceiling_ops=50_000,
)


def text(value: object) -> str:
    """A Redis reply as text (redis-py's sync client answers bytes here; None is a bug)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {value!r}")


def log(message: str) -> None:
    """Progress on stderr, with the elapsed time."""
    sys.stderr.write(f"[{time.monotonic() - STARTED:6.1f}s] {message}\n")
    sys.stderr.flush()


STARTED = time.monotonic()


def system_busy() -> tuple[float, float]:
    """(wall seconds, busy CPU seconds of the whole machine) from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return time.perf_counter(), (sum(fields[:8]) - idle) / CLOCK_TICKS


def redis_commands(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """INFO commandstats: command -> (calls, usec)."""
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in client.info("commandstats").items()
    }


def commands_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], ticks: int
) -> dict[str, dict[str, float]]:
    """Redis commands per tick and server time per call between two snapshots."""
    out = {}
    for name, (calls, usec) in sorted(after.items()):
        b_calls, b_usec = before.get(name, (0, 0))
        if calls > b_calls:
            out[name] = {
                "per_tick": round((calls - b_calls) / ticks, 3),
                "usec_per_call": round((usec - b_usec) / (calls - b_calls), 1),
            }
    return out


# -- processes ----------------------------------------------------------------


class Monitor:
    """``liqmon run`` as a subprocess, with its HTTP endpoint and CPU time; with
    ``separate``, a ``liqmon publish`` beside it, whose CPU time counts too."""

    def __init__(
        self, config: Path, redis_url: str, mqtt_url: str, workdir: Path, separate: bool
    ) -> None:
        self.config = config
        self.separate = separate
        self.publisher: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.env = dict(
            os.environ,
            LIQMON_REDIS_URL=redis_url,
            LIQMON_MQTT_URL=mqtt_url,
            LIQMON_HTTP_PORT=str(self.port),
            LIQMON_LOG_FORMAT="json",
        )
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.hang_dump = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /readyz; returns seconds from spawn to ready."""
        self.starts += 1
        started = time.perf_counter()
        self.proc = self._spawn("run", self.workdir / f"monitor-{self.starts}.log", "wb")
        if self.separate and (self.publisher is None or self.publisher.poll() is not None):
            self.publisher = self._spawn("publish", self.workdir / "publisher.log", "ab")
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"liqmon run exited with {self.proc.returncode}:\n{self.tail()}")
            if self._get("/readyz")[0] == 200:
                return time.perf_counter() - started
            time.sleep(0.01)
        raise RuntimeError(f"liqmon run not ready after {timeout} s:\n{self.tail()}")

    def _spawn(self, command: str, log: Path, mode: str) -> subprocess.Popen[bytes]:
        """``liqmon COMMAND`` with this run's configuration, its output into ``log``."""
        with log.open(mode) as output:
            return subprocess.Popen(
                [str(LIQMON), "--config", str(self.config), command],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def committed_at(self) -> dict[str, int]:
        """event_id -> when the monitor logged the event (epoch ns): its ``event`` line is
        written once the tick's commit is back, so it marks the end of the monitor's part."""
        found: dict[str, int] = {}
        with (self.workdir / f"monitor-{self.starts}.log").open("rb") as lines:
            for line in lines:
                if b'"event":"event"' not in line:
                    continue
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                stamp = datetime.datetime.fromisoformat(entry["timestamp"])
                found[entry["event_id"]] = int(stamp.timestamp() * 1e6) * 1000
        return found

    def wait_warm(self, timeout: float = 15.0) -> float | None:
        """Seconds until the monitor logs ``heap_frozen`` (None: not within ``timeout``).

        ``liqmon run`` freezes its long-lived heap once, 5 s after connecting,
        with one full collection (tens of milliseconds): the phases measure
        the daemon as it runs from then on, not that one-off pause.
        """
        started = time.perf_counter()
        path = self.workdir / f"monitor-{self.starts}.log"
        while time.perf_counter() - started < timeout:
            if path.exists() and b'"heap_frozen"' in path.read_bytes():
                return time.perf_counter() - started
            time.sleep(0.1)
        return None

    def stop(self, timeout: float = 15.0) -> float | None:
        """SIGTERM and wait; seconds to exit, or None when it had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.hang_dump = self._dump()
            self.proc.kill()
            self.proc.wait()
            return None
        return time.perf_counter() - started

    def _dump(self) -> str:
        """Where a monitor that ignores SIGTERM is stuck: py-spy dump, if installed."""
        spy = Path(sys.executable).parent / "py-spy"
        text = ""
        if spy.exists():
            done = subprocess.run(
                [str(spy), "dump", "--pid", str(self.pid)],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            text = done.stdout + done.stderr
        (self.workdir / f"monitor-{self.starts}-hang.txt").write_text(text + "\n" + self.tail(40))
        return text

    def cpu(self) -> float:
        publisher = self.publisher
        return cpu_seconds(self.pid) + (cpu_seconds(publisher.pid) if publisher else 0.0)

    def stop_publisher(self) -> None:
        if self.publisher is not None and self.publisher.poll() is None:
            self.publisher.terminate()
            self.publisher.wait(timeout=15)

    def metrics(self) -> str:
        return self._get("/metrics")[1].decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        path = self.workdir / f"monitor-{self.starts}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""


class LineFile:
    """A file written by a child process, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        """Skip everything written so far."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> list[bytes]:
        """Complete lines written since the last read or mark."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].splitlines()


class Watchers:
    """The keyspace observer and the event subscriber (mosquitto_sub), as child processes."""

    def __init__(self, workdir: Path, redis_server: RedisServer, mqtt: MosquittoServer) -> None:
        self.workdir = workdir
        self.notes = LineFile(workdir / "keyspace.txt")
        self.events = LineFile(workdir / "events.txt")
        pattern = f"__keyspace@0__:{PREFIX}:{{*}}:price"
        self.observer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.observer",
                "127.0.0.1",
                str(redis_server.port),
                pattern,
            ],
            stdout=self.notes.path.open("wb"),
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        sub = [
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1",
            "-i", f"bench-events-{os.getpid()}", "-t", topics.all_events(PREFIX), "-F", "%U %p",
        ]  # fmt: skip
        if shutil.which("stdbuf"):
            sub = ["stdbuf", "-oL", *sub]
        self.subscriber = subprocess.Popen(
            sub, stdout=self.events.path.open("wb"), stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while b"READY" not in b"".join(self.notes.read()):
            if time.monotonic() > deadline:
                raise RuntimeError("keyspace observer did not subscribe")
            time.sleep(0.02)
        time.sleep(0.3)  # mosquitto_sub connects and subscribes

    def stop(self) -> None:
        for proc in (self.observer, self.subscriber):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def read_notes(self) -> list[tuple[int, str]]:
        out = []
        for line in self.notes.read():
            stamp, _, symbol = line.partition(b" ")
            if stamp != b"0":
                out.append((int(stamp), symbol.decode()))
        return out

    def read_events(self) -> list[tuple[int, dict[str, Any]]]:
        return parse_events(self.events.read())


def parse_events(lines: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """``mosquitto_sub -F '%U %p'`` lines: (receive time in ns, payload)."""
    out = []
    for line in lines:
        stamp, _, payload = line.partition(b" ")
        seconds, _, nanos = stamp.partition(b".")
        try:
            out.append((int(seconds) * 1_000_000_000 + int(nanos), orjson.loads(payload)))
        except orjson.JSONDecodeError:
            continue
    return out


# -- ticks --------------------------------------------------------------------


@dataclass
class Sent:
    """One tick as sent."""

    ts: int
    symbol: str
    price: str
    send_ns: int
    kind: str  # "quiet", "down", "up", "burst"
    expected: int = 0


@dataclass
class Driver:
    """Sends ticks with exact timestamps; every tick gets a unique, increasing ``ts``."""

    publisher: Publisher
    next_ts: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    largest_gap_ns: int = 0
    """The longest the last :meth:`paced` went between two sends."""

    def tick(self, symbol: str, price: str, kind: str, expected: int = 0) -> Sent:
        self.next_ts += 1
        payload = b'{"price":"%s","ts":%d}' % (price.encode(), self.next_ts)
        packet = Publisher.packet(topics.prices(PREFIX, symbol, "mark"), payload)
        send_ns = time.time_ns()
        self.publisher.send(packet)
        return Sent(self.next_ts, symbol, price, send_ns, kind, expected)

    def paced(self, rate: float, seconds: float, make: Any) -> tuple[list[Sent], float]:
        """Send ``rate``/s for ``seconds``; ``make(i)`` returns (symbol, price, kind, expected).

        Returns the ticks and the achieved rate; :attr:`largest_gap_ns` says how
        evenly they went. The driver's garbage collector is off meanwhile: this
        process holds the generated book, and a generation-2 pass over it
        stopped the sends for 40-55 ms, after which the ticks due went out at
        once, a burst no venue's feed sent (at 10,000/s, a queue the monitor
        took 80-110 ms to drain, which the ramp then reported as its p99).
        """
        total = int(rate * seconds)
        sent: list[Sent] = []
        largest = 0
        collecting = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            i = 0
            while i < total:
                due = min(total, int((time.perf_counter() - start) * rate) + 1)
                while i < due:
                    symbol, price, kind, expected = make(i)
                    sent.append(self.tick(symbol, price, kind, expected))
                    if i:
                        largest = max(largest, sent[i].send_ns - sent[i - 1].send_ns)
                    i += 1
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(max(wait, 0.0005))
            elapsed = time.perf_counter() - start
        finally:
            if collecting:
                gc.enable()
        self.largest_gap_ns = largest
        return sent, total / elapsed if elapsed > 0 else 0.0


def evaluated_latencies(sent: list[Sent], notes: list[tuple[int, str]]) -> tuple[list[int], int]:
    """Match keyspace notifications to ticks (per symbol, in order): latencies and misses.

    A tick that never got its own notification was coalesced with a later
    one (the monitor fell behind on that symbol); it counts as missed, and
    the later notifications are attributed to earlier ticks, which overstates
    their latency: conservative.
    """
    queues: dict[str, collections.deque[Sent]] = collections.defaultdict(collections.deque)
    for tick in sorted(sent, key=lambda t: t.send_ns):
        queues[tick.symbol].append(tick)
    latencies = []
    for stamp, symbol in notes:
        queue = queues.get(symbol)
        if not queue or stamp < queue[0].send_ns:
            continue
        latencies.append(stamp - queue.popleft().send_ns)
    missed = sum(len(queue) for queue in queues.values())
    return latencies, missed


# -- the market ------------------------------------------------------------------


@dataclass
class Band:
    """A symbol's mark and the open interval around it with no trigger."""

    symbol: str
    mark: Decimal
    low: float
    high: float

    def quiet_price(self, rng: random.Random) -> str:
        mark = float(self.mark)
        if rng.random() < 0.5:
            value = mark - rng.uniform(0, 0.4) * (mark - self.low)
        else:
            value = mark + rng.uniform(0, 0.4) * (self.high - mark)
        return book.decimal_text(value)


@dataclass
class Crossing:
    """A symbol where a tick to ``down`` raises k margin calls and a tick to ``up`` clears them."""

    symbol: str
    down: str
    up: str
    k: int
    state: int = 0

    def next(self) -> tuple[str, str, str, int]:
        self.state ^= 1
        if self.state:
            return self.symbol, self.down, "down", self.k
        return self.symbol, self.up, "up", self.k


def _top_score(client: redis.Redis, key: str, highest: bool) -> float | None:
    reply = (
        client.zrevrange(key, 0, 0, withscores=True)
        if highest
        else client.zrange(key, 0, 0, withscores=True)
    )
    return float(reply[0][1]) if reply else None


def band_of(client: redis.Redis, symbol: str) -> Band:
    """The trigger-free interval around ``symbol``'s stored mark."""
    mark = Decimal(text(client.hget(KEYS.price(symbol), "mark")))
    long_down, long_up, short_down, short_up = KEYS.all_triggers(symbol)
    below = [
        s
        for s in (_top_score(client, long_down, True), _top_score(client, short_down, True))
        if s is not None
    ]
    above = [
        s
        for s in (_top_score(client, short_up, False), _top_score(client, long_up, False))
        if s is not None
    ]
    low = max(below) if below else float(mark) * 0.9
    high = min(above) if above else float(mark) * 1.1
    if not low < float(mark) < high:
        raise RuntimeError(f"{symbol}: a trigger sits at the mark ({low} {mark} {high})")
    return Band(symbol, mark, low, high)


def crossing_of(
    client: redis.Redis, settings: Settings, symbol: str, k: int, band: Band
) -> Crossing | None:
    """A down price crossing exactly the k highest long margin-call triggers, if one is clean."""
    contract = settings.symbols[symbol]
    ids = [text(raw) for raw in client.zrevrange(KEYS.all_triggers(symbol)[0], 0, k)]
    if len(ids) < k + 1:
        return None
    raws = client.hmget(KEYS.positions(symbol), ids)
    records = [
        PositionRecord.decode(i, symbol, text(raw)) for i, raw in zip(ids, raws, strict=True)
    ]
    model = model_for(contract)
    calls = [model.margin_call_price(r.position, settings.risk.margin_call_ratio) for r in records]
    if any(price is None for price in calls):
        return None
    calls_d: list[Decimal] = [price for price in calls if price is not None]
    if calls_d != sorted(calls_d, reverse=True) or calls_d[k - 1] - calls_d[k] < Decimal("0.001"):
        return None
    down = (calls_d[k - 1] + calls_d[k]) / 2
    down = down.quantize(Decimal("0.000001"))
    if not calls_d[k] < down < calls_d[k - 1]:
        return None
    for record in records[:k]:
        moved = triggers_for(contract, record.moved_to(Status.MARGIN_CALL), settings.risk)
        # the down tick must not liquidate; the way back to the mark must clear
        if moved.down is not None and moved.down >= down:
            return None
        if moved.up is None or moved.up >= band.mark:
            return None
    if float(down) <= float(band.mark) * 0.5:
        return None
    return Crossing(symbol, decimal_str(down), decimal_str(band.mark), k)


# -- one book size -----------------------------------------------------------------


class BookRun:
    """Everything measured at one N."""

    def __init__(
        self,
        n: int,
        profile: Profile,
        args: argparse.Namespace,
        workdir: Path,
        mqtt: MosquittoServer,
    ) -> None:
        self.n = n
        self.profile = profile
        self.args = args
        self.workdir = workdir
        self.mqtt = mqtt
        self.symbols = book.universe(args.symbols)
        self.config = workdir / "liqmon.toml"
        self.config.write_text(book.config_text(self.symbols, publisher=args.publisher))
        self.settings = load_settings(self.config, environ={})
        self.result: dict[str, Any] = {"positions": n, "symbols": len(self.symbols)}
        self.redis_server = RedisServer(workdir / "redis")
        self.client: redis.Redis
        self.monitor: Monitor
        self.watchers: Watchers
        self.driver: Driver
        self.burst_longs: list[dict[str, Any]] = []
        self.rng = random.Random(args.seed)

    # -- set-up --------------------------------------------------------------

    def load(self) -> None:
        data = self.workdir / "positions.jsonl"
        started = time.perf_counter()
        with data.open("wb") as out:
            for position in book.positions(
                self.n, self.args.seed, self.symbols, self.args.burst_share
            ):
                if position["symbol"] == book.BURST_SYMBOL and position["side"] == "long":
                    self.burst_longs.append(position)
                out.write(orjson.dumps(position) + b"\n")
        log(f"N={self.n:,}: generated in {time.perf_counter() - started:.1f} s")
        self.redis_server.start()
        self.client = redis.Redis.from_url(self.redis_server.url)
        pipe = self.client.pipeline(transaction=False)
        for symbol, price in self.symbols.items():
            pipe.hset(KEYS.price(symbol), mapping={"mark": book.mark_text(price), "mark_ts": 1})
            pipe.xgroup_create(KEYS.outbox(symbol), "publishers", id="0", mkstream=True)
        pipe.execute()
        before = int(self.client.info("memory")["used_memory"])
        env = dict(os.environ, LIQMON_REDIS_URL=self.redis_server.url, LIQMON_LOG_FORMAT="json")
        redis_cpu = self._redis_cpu()
        # The load's own CPU: the liqmon process and its workers (waited for by it, so
        # counted in ours once it is waited for too).
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [str(LIQMON), "--config", str(self.config), "positions", "load", str(data)],
            env=env,
            capture_output=True,
            check=True,
        )
        seconds = time.perf_counter() - started
        spent = resource.getrusage(resource.RUSAGE_CHILDREN)
        loader_cpu = spent.ru_utime + spent.ru_stime - children.ru_utime - children.ru_stime
        redis_cpu = self._redis_cpu() - redis_cpu
        after = int(self.client.info("memory")["used_memory"])
        stored = sum(self.client.hlen(KEYS.positions(s)) for s in self.symbols)
        outbox = sum(self.client.xlen(KEYS.outbox(s)) for s in self.symbols)
        gave_up = done.stderr.count(b"position_update_gave_up")
        self.result["state"] = {
            "load_seconds": round(seconds, 2),
            "load_positions_per_second": round(self.n / seconds),
            "load_batch": LOAD_BATCH,
            "load_workers": default_load_workers(data.stat().st_size),
            "load_cpu_seconds": {
                "loader": round(loader_cpu, 2),
                "redis": round(redis_cpu, 2),
                "cores_busy": round((loader_cpu + redis_cpu) / seconds, 2),
                "cores": os.cpu_count(),
            },
            "positions_stored": stored,
            "load_gave_up_messages": gave_up,
            "events_at_load": outbox,
            "redis_used_memory_before": before,
            "redis_used_memory_after": after,
            "redis_bytes_per_position": round((after - before) / self.n, 1),
        }
        log(
            f"N={self.n:,}: loaded in {seconds:.1f} s ({self.n / seconds:,.0f}/s), "
            f"{(after - before) / self.n:.0f} B/position, {stored:,} stored"
        )
        if stored != self.n:
            raise RuntimeError(
                f"only {stored:,} of {self.n:,} positions stored:\n{done.stderr[-2000:]!r}"
            )
        data.unlink()

    def _redis_cpu(self) -> float:
        """Redis's CPU seconds so far (user and system)."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def fresh_marks(self) -> None:
        """Stamp every stored mark with the time now, as live feeds would keep it: a monitor
        with open positions under a mark older than ``stale_after_s`` is not ready."""
        now_ms = time.time_ns() // 1_000_000
        pipe = self.client.pipeline(transaction=False)
        for symbol in self.symbols:
            pipe.hset(KEYS.price(symbol), "mark_ts", now_ms)
        pipe.execute()

    def start_monitor(self) -> None:
        self.monitor = Monitor(
            self.config,
            self.redis_server.url,
            self.mqtt.url,
            self.workdir,
            separate=self.args.publisher == "separate",
        )
        self.fresh_marks()
        first = self.monitor.start()
        stop = self.monitor.stop()
        self.fresh_marks()
        again = self.monitor.start()
        warm = self.monitor.wait_warm()
        self.result["state"] |= {
            "first_start_to_ready_s": round(first, 3),
            "stop_s": round(stop, 3) if stop is not None else "killed after 15 s",
            "restart_to_ready_s": round(again, 3),
            "ready_to_heap_frozen_s": round(warm, 3) if warm is not None else None,
        }
        log(f"N={self.n:,}: ready in {first:.2f} s, after a restart in {again:.2f} s")
        self.client.config_set("notify-keyspace-events", "Kh")
        self.watchers = Watchers(self.workdir, self.redis_server, self.mqtt)
        self.driver = Driver(Publisher("127.0.0.1", self.mqtt.port, f"bench-ticks-{os.getpid()}"))
        bands = [band_of(self.client, s) for s in self.symbols if s != book.BURST_SYMBOL]
        self.crossings: list[Crossing] = []
        quiet: list[Band] = []
        for band in bands:
            crossing = None
            if len(self.crossings) < self.profile.cross_symbols:
                for k in (len(self.crossings) % 3 + 1, 1, 2, 3):
                    crossing = crossing_of(self.client, self.settings, band.symbol, k, band)
                    if crossing:
                        break
            if crossing:
                self.crossings.append(crossing)
            else:
                quiet.append(band)
        self.quiet = quiet
        self.result["market"] = {
            "quiet_symbols": len(quiet),
            "crossing_symbols": len(self.crossings),
            "positions_per_quiet_symbol": round(
                sum(self.client.hlen(KEYS.positions(b.symbol)) for b in quiet) / len(quiet)
            ),
            "burst_symbol_positions": self.client.hlen(KEYS.positions(book.BURST_SYMBOL)),
        }

    @contextlib.contextmanager
    def profiled(self, phase: str) -> Any:
        """py-spy record of the monitor during a phase, with ``--profile DIR``."""
        if not self.args.profile:
            yield
            return
        out = Path(self.args.profile) / f"n{self.n}-{phase}.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.monitor.pid),
             "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)

    def quiet_tick(self, _: int) -> tuple[str, str, str, int]:
        band = self.quiet[self.rng.randrange(len(self.quiet))]
        return band.symbol, band.quiet_price(self.rng), "quiet", 0

    # -- measurements ------------------------------------------------------------

    def settle(self, seconds: float = 0.3) -> None:
        time.sleep(seconds)

    def window(self) -> tuple[float, float, float, float]:
        return (
            time.perf_counter(),
            self.monitor.cpu(),
            cpu_seconds(self.redis_server.pid or 0),
            system_busy()[1],
        )

    def baseline(self) -> None:
        """Idle CPU of the monitor and of Redis (periodic tasks), to subtract."""
        wall0, mon0, red0, _ = self.window()
        time.sleep(self.profile.baseline_s)
        wall1, mon1, red1, _ = self.window()
        self.idle_monitor = (mon1 - mon0) / (wall1 - wall0)
        self.idle_redis = (red1 - red0) / (wall1 - wall0)
        self.result["idle_cpu_cores"] = {
            "monitor": round(self.idle_monitor, 4),
            "redis": round(self.idle_redis, 4),
        }

    def cpu_per_tick(
        self, start: tuple[float, float, float, float], ticks: int
    ) -> dict[str, float]:
        wall1, mon1, red1, busy1 = self.window()
        wall = wall1 - start[0]
        monitor = (mon1 - start[1] - self.idle_monitor * wall) / ticks
        redis_cpu = (red1 - start[2] - self.idle_redis * wall) / ticks
        return {
            "monitor_us": round(monitor * 1e6, 1),
            "redis_us": round(redis_cpu * 1e6, 1),
            "total_us": round((monitor + redis_cpu) * 1e6, 1),
            "monitor_cores": round((mon1 - start[1]) / wall, 3),
            # everything on the machine: this run's processes, and anything else running
            "machine_busy_cores": round((busy1 - start[3]) / wall, 3),
        }

    def quiet_phase(self) -> None:
        """Ticks that cross no trigger, at the background rate."""
        self.watchers.notes.mark()
        hist0 = tick_histogram(self.monitor.metrics())
        commands0 = redis_commands(self.client)
        start = self.window()
        sent, rate = self.driver.paced(
            self.profile.background_rate, self.profile.quiet_s, self.quiet_tick
        )
        self.settle()
        cpu = self.cpu_per_tick(start, len(sent))
        commands = commands_delta(commands0, redis_commands(self.client), len(sent))
        hist = histogram_delta(hist0, tick_histogram(self.monitor.metrics()))
        latencies, missed = evaluated_latencies(sent, self.watchers.read_notes())
        self.quiet_sent = sent
        self.result["quiet"] = {
            "rate_per_s": round(rate),
            "ticks": len(sent),
            "tick_to_evaluated": summary_ms(latencies),
            "not_evaluated_individually": missed,
            "monitor_histogram": hist,
            "cpu_per_tick": cpu,
            "redis_commands": commands,
        }
        s = self.result["quiet"]["tick_to_evaluated"]
        log(
            f"N={self.n:,}: quiet ticks p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms, "
            f"CPU/tick monitor {cpu['monitor_us']} us + redis {cpu['redis_us']} us"
        )

    def crossing_phase(self) -> None:
        """Background quiet ticks plus ticks that cross 1-3 triggers: tick -> event."""
        self.watchers.notes.mark()
        self.watchers.events.mark()
        every = max(1, self.profile.background_rate // self.profile.cross_rate)
        order = list(self.crossings)

        def make(i: int) -> tuple[str, str, str, int]:
            if i % every == every - 1:
                return order[(i // every) % len(order)].next()
            return self.quiet_tick(i)

        # The keyspace observer is off here: tick -> event is mosquitto_sub's to time, and a
        # third process woken by Redis at every mark would compete for the two cores
        # with the monitor and Redis on exactly the path measured.
        self.client.config_set("notify-keyspace-events", "")
        start = self.window()
        sent, rate = self.driver.paced(self.profile.background_rate, self.profile.cross_s, make)
        gap_ms = round(self.driver.largest_gap_ns / 1e6, 2)
        # every symbol ends where it started (up after down) for the next phase
        for crossing in order:
            if crossing.state:
                sent.append(self.driver.tick(*crossing.next()[:3], expected=crossing.k))
        time.sleep(1.0)
        cpu = self.cpu_per_tick(start, len(sent))
        self.client.config_set("notify-keyspace-events", "Kh")
        events = self.watchers.read_events()
        by_ts: dict[int, list[int]] = collections.defaultdict(list)
        decided: dict[int, int] = {}
        types: collections.Counter[str] = collections.Counter()
        for stamp, event in events:
            by_ts[event["price_ts"]].append(stamp)
            decided[event["price_ts"]] = max(decided.get(event["price_ts"], 0), event["emitted_at"])
            types[event["type"]] += 1
        first, last, to_decided, to_received, incomplete = [], [], [], [], 0
        to_committed, committed_to_received = [], []
        committed_at = self.monitor.committed_at()
        ids_by_ts: dict[int, list[str]] = collections.defaultdict(list)
        for _, event in events:
            ids_by_ts[event["price_ts"]].append(event["event_id"])
        crossing_ticks = [t for t in sent if t.kind in ("down", "up")]
        for tick in crossing_ticks:
            stamps = by_ts.get(tick.ts, [])
            if len(stamps) != tick.expected:
                incomplete += 1
                continue
            first.append(min(stamps) - tick.send_ns)
            last.append(max(stamps) - tick.send_ns)
            logged = [committed_at.get(event_id) for event_id in ids_by_ts[tick.ts]]
            if logged and None not in logged:
                committed = max(stamp for stamp in logged if stamp is not None)
                to_committed.append(committed - tick.send_ns)
                committed_to_received.append(max(stamps) - committed)
            # emitted_at: the monitor's wall clock (ms) when it decided the transition
            decided_ns = decided[tick.ts] * 1_000_000
            to_decided.append(max(decided_ns - tick.send_ns, 0))
            to_received.append(max(max(stamps) - decided_ns, 0))
        self.watchers.read_notes()  # none: the observer was off
        self.result["crossing"] = {
            "rate_per_s": round(rate),
            "driver_largest_gap_ms": gap_ms,
            "crossing_ticks": len(crossing_ticks),
            "events_received": len(events),
            "events_by_type": dict(types),
            "ticks_with_unexpected_event_count": incomplete,
            "tick_to_first_event": summary_ms(first),
            "tick_to_last_event": summary_ms(last),
            "split": {
                # The monitor's part (receive, candidates, decide, commit) and the rest
                # (outbox read, publish, broker, subscriber); the publisher often has
                # the event before the monitor writes its log line, so the second
                # part can be negative.
                "tick_to_committed": summary_ms(to_committed),
                "committed_to_received": summary_ms(committed_to_received),
            },
            "split_ms_resolution": {
                "tick_to_decided": summary_ms(to_decided),
                "decided_to_received": summary_ms(to_received),
            },
            "cpu_per_tick": cpu,
        }
        s = self.result["crossing"]["tick_to_last_event"]
        log(
            f"N={self.n:,}: crossing ticks -> event p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms "
            f"({len(crossing_ticks)} ticks, {len(events)} events, {incomplete} incomplete)"
        )

    def _scan(self, ticks: list[Sent], budget_s: float, minimum: int = 1) -> dict[str, Any]:
        """Full-scan evaluation of ``ticks``: HGETALL + assess + next_status per position."""
        client = redis.Redis.from_url(self.redis_server.url)
        risk = self.settings.risk
        walls, cpus, scanned, changed = [], [], 0, 0
        red0 = cpu_seconds(self.redis_server.pid or 0)
        wall0 = time.perf_counter()
        for tick in ticks:
            contract = self.settings.symbols[tick.symbol]
            mark = Decimal(tick.price)
            c0, t0 = time.process_time(), time.perf_counter_ns()
            records = client.hgetall(KEYS.positions(tick.symbol))
            for raw_id, raw in records.items():
                record = PositionRecord.decode(text(raw_id), tick.symbol, raw)
                state = model_for(contract).assess(record.position, mark)
                if next_status(record.status, state, risk) is not record.status:
                    changed += 1
            walls.append(time.perf_counter_ns() - t0)
            cpus.append(time.process_time() - c0)
            scanned += len(records)
            if len(walls) >= minimum and time.perf_counter() - wall0 > budget_s:
                break
        wall = time.perf_counter() - wall0
        redis_cpu = cpu_seconds(self.redis_server.pid or 0) - red0 - self.idle_redis * wall
        client.close()
        count = len(walls)
        return {
            "ticks": count,
            "positions_scanned_per_tick": round(scanned / max(count, 1)),
            "status_changes": changed,
            "latency": summary_ms(walls),
            "cpu_per_tick": {
                "client_us": round(sum(cpus) / count * 1e6, 1),
                "redis_us": round(max(redis_cpu, 0) / count * 1e6, 1),
                "total_us": round((sum(cpus) + max(redis_cpu, 0)) / count * 1e6, 1),
                "client_us_per_position": round(sum(cpus) / max(scanned, 1) * 1e6, 2),
            },
        }

    @staticmethod
    def _ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
        ours_cpu, theirs_cpu = ours["cpu_per_tick"], theirs["cpu_per_tick"]
        ours_lat = ours["tick_to_evaluated"]["p50_ms"]
        theirs_lat = theirs["latency"]["p50_ms"]
        return {
            "cpu_total": round(theirs_cpu["total_us"] / max(ours_cpu["total_us"], 0.1), 2),
            "cpu_process": round(theirs_cpu["client_us"] / max(ours_cpu["monitor_us"], 0.1), 2),
            "latency_p50": round(theirs_lat / ours_lat, 2) if ours_lat else None,
        }

    def full_scan(self) -> None:
        """The peers' design: every position of the symbol re-evaluated on each tick."""
        ticks = self.quiet_sent[: self.profile.fullscan_ticks]
        self.result["full_scan"] = self._scan(ticks, self.profile.fullscan_budget_s)
        self.result["full_scan"]["ratio"] = self._ratio(
            self.result["quiet"], self.result["full_scan"]
        )
        scan = self.result["full_scan"]
        log(
            f"N={self.n:,}: full scan {scan['positions_scanned_per_tick']} positions/tick: "
            f"p50 {scan['latency']['p50_ms']} ms, CPU {scan['cpu_per_tick']['total_us']} us/tick "
            f"(x{scan['ratio']['cpu_total']} ours)"
        )

    def heavy_symbol(self) -> None:
        """Both designs on the symbol that holds ``burst_share`` of the book."""
        band = band_of(self.client, book.BURST_SYMBOL)
        self.watchers.notes.mark()
        # 25/s: far enough apart that a stall of the monitor's loop does not make the
        # coalescer skip ticks of this one symbol (which would confuse the matching)
        sent, rate = self.driver.paced(
            25,
            self.profile.heavy_s,
            lambda _: (book.BURST_SYMBOL, band.quiet_price(self.rng), "quiet", 0),
        )
        self.settle()
        # 25 ticks/s cannot be told apart from the monitor's idle CPU; a tick's CPU does
        # not depend on the symbol (O(log n) range queries), so the quiet phase's figure
        # stands for it, and commandstats give the candidates script's own Redis time.
        cpu: dict[str, Any] = dict(self.result["quiet"]["cpu_per_tick"])
        latencies, missed = evaluated_latencies(sent, self.watchers.read_notes())
        ours: dict[str, Any] = {
            "symbol": book.BURST_SYMBOL,
            "positions_in_symbol": self.client.hlen(KEYS.positions(book.BURST_SYMBOL)),
            "rate_per_s": round(rate),
            "tick_to_evaluated": summary_ms(latencies),
            "not_evaluated_individually": missed,
            "cpu_per_tick": cpu,
            "cpu_per_tick_source": "quiet phase (too few ticks here to separate from idle CPU)",
        }
        theirs = self._scan(sent, self.profile.fullscan_budget_s, minimum=3)
        self.result["heavy_symbol"] = {
            "liqmon": ours,
            "full_scan": theirs,
            "ratio": self._ratio(ours, theirs),
        }
        log(
            f"N={self.n:,}: {book.BURST_SYMBOL} ({ours['positions_in_symbol']:,} positions): "
            f"liqmon p50 {ours['tick_to_evaluated']['p50_ms']} ms, "
            f"{cpu['total_us']} us CPU; full scan p50 {theirs['latency']['p50_ms']} ms, "
            f"{theirs['cpu_per_tick']['total_us']} us CPU"
        )

    def sustained(self) -> None:
        """Quiet ticks over all symbols at rising rates, until the monitor falls behind.

        ``held``: p99 tick -> evaluated ≤ 10 ms with every tick evaluated (the
        issue's target); ``keeping_up``: p50 ≤ 2 ms and under 0.5 % coalesced
        (the throughput the monitor sustains, whatever its tail). The ramp
        stops at the first rate that is neither.
        """
        levels = []
        held = keeping_up = 0
        for rate in self.profile.ramp_rates:
            time.sleep(0.5)
            self.watchers.notes.mark()
            start = self.window()
            sent, achieved = self.driver.paced(rate, self.profile.ramp_s, self.quiet_tick)
            time.sleep(0.5)
            cpu = self.cpu_per_tick(start, len(sent))
            latencies, missed = evaluated_latencies(sent, self.watchers.read_notes())
            summary = summary_ms(latencies)
            sent_ok = achieved >= 0.95 * rate
            all_evaluated = missed <= 0.005 * len(sent)
            p50, p99 = summary["p50_ms"], summary["p99_ms"]
            ok = p99 is not None and p99 <= 10.0 and all_evaluated and sent_ok
            up = p50 is not None and p50 <= 2.0 and all_evaluated and sent_ok
            levels.append(
                {
                    "target_rate": rate,
                    "achieved_rate": round(achieved),
                    "tick_to_evaluated": summary,
                    "not_evaluated_individually": missed,
                    "driver_largest_gap_ms": round(self.driver.largest_gap_ns / 1e6, 2),
                    "cpu_per_tick": cpu,
                    "held": ok,
                    "keeping_up": up,
                }
            )
            log(
                f"N={self.n:,}: {rate}/s (sent {achieved:,.0f}/s): p50 {p50} p99 {p99} ms, "
                f"{missed} coalesced, driver's longest gap {self.driver.largest_gap_ns / 1e6:.1f} "
                f"ms, monitor {cpu['monitor_cores']} cores, machine "
                f"{cpu['machine_busy_cores']} -> {'held' if ok else 'p99 NOT held'}, "
                f"{'keeping up' if up else 'NOT keeping up'}"
            )
            if ok:
                held = max(held, rate)
            if up:
                keeping_up = max(keeping_up, rate)
            if not (ok or up):
                break
        self.result["sustained"] = {
            "levels": levels,
            "highest_rate_held": held,
            "highest_rate_keeping_up": keeping_up,
        }

    def process_cpu(self) -> dict[str, float]:
        """CPU seconds so far of every process taking part in a tick's way to a subscriber."""
        pids = {
            "monitor": self.monitor.pid,
            "publisher": self.monitor.publisher.pid if self.monitor.publisher else None,
            "redis": self.redis_server.pid,
            "mosquitto": self.mqtt.pid,
            "mosquitto_sub": self.watchers.subscriber.pid,
            "keyspace_observer": self.watchers.observer.pid,
        }
        spent = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        return spent | {"bench_driver": time.process_time()}

    def burst(self) -> None:
        """One tick on the burst symbol that liquidates 10 % of the whole book."""
        model = model_for(self.settings.symbols[book.BURST_SYMBOL])
        risk = self.settings.risk
        liqs, calls = [], []
        for p in self.burst_longs:
            position = Position(
                Side.LONG, Decimal(p["qty"]), Decimal(p["entry_price"]), Decimal(p["margin"])
            )
            liqs.append(model.liquidation_price(position) or Decimal(0))
            calls.append(model.margin_call_price(position, risk.margin_call_ratio) or Decimal(0))
        target = self.n // 10
        ordered = sorted(liqs, reverse=True)
        if len(ordered) <= target:
            raise RuntimeError("the burst symbol has too few longs for a 10 % burst")
        price = ((ordered[target - 1] + ordered[target]) / 2).quantize(Decimal("0.0001"))
        expected_liq = sum(1 for v in liqs if v >= price)
        expected = sum(1 for v in calls if v >= price)
        self.watchers.events.mark()
        hist0 = tick_histogram(self.monitor.metrics())
        cpu0 = self.process_cpu()
        tick = self.driver.tick(book.BURST_SYMBOL, decimal_str(price), "burst", expected)
        # Lines are only counted while the burst arrives (parsing 100,000 JSON
        # payloads would take a core-second from the processes measured); the
        # receive times are mosquitto_sub's own, so parsing afterwards changes
        # no figure.
        marker = b'"price_ts":%d' % tick.ts
        lines: list[bytes] = []
        count = 0
        deadline = time.monotonic() + (60 if self.profile.name == "quick" else 300)
        last_progress = time.monotonic()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            new = self.watchers.events.read()
            if new:
                lines += new
                count += sum(marker in line for line in new)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > 10:
                break
        time.sleep(0.2)
        lines += self.watchers.events.read()
        arrivals = [(s, e) for s, e in parse_events(lines) if e["price_ts"] == tick.ts]
        hist = histogram_delta(hist0, tick_histogram(self.monitor.metrics()))
        cpu = {name: round(spent - cpu0[name], 2) for name, spent in self.process_cpu().items()}
        stamps = sorted(s - tick.send_ns for s, _ in arrivals)
        types = collections.Counter(e["type"] for _, e in arrivals)
        unique = len({e["event_id"] for _, e in arrivals})
        liq_events = [
            e for _, e in sorted(arrivals, key=lambda a: a[0]) if e["type"] == "liquidation"
        ]
        order = spearman(
            list(range(len(liq_events))),
            [-float(e["liquidation_price"] or 0) for e in liq_events],
        )
        last_s = stamps[-1] / 1e9 if stamps else None
        timeline = []
        if stamps:
            step = max(stamps[-1] / 100, 1e6)
            edge, n = step, 0
            for stamp in stamps:
                while stamp > edge:
                    timeline.append((round(edge / 1e9, 4), n))
                    edge += step
                n += 1
            timeline.append((round(edge / 1e9, 4), n))
        self.result["burst"] = {
            "symbol": book.BURST_SYMBOL,
            "price": decimal_str(price),
            "expected_events": expected,
            "expected_liquidations": expected_liq,
            "received": len(arrivals),
            "received_unique": unique,
            "by_type": dict(types),
            "first_event_s": round(stamps[0] / 1e9, 4) if stamps else None,
            "last_event_s": round(last_s, 3) if last_s else None,
            "events_per_s": round(len(arrivals) / last_s) if last_s else None,
            "evaluation_and_commit_s": hist["sum_s"],
            "cpu_seconds_by_process": cpu,
            "order_spearman_arrival_vs_liquidation_price": order,
            "timeline": timeline,
        }
        log(
            f"N={self.n:,}: burst of {expected:,} events ({expected_liq:,} liquidations): "
            f"{unique:,} received, last after {last_s} s ({self.result['burst']['events_per_s']}/s)"
        )

    def ceilings(self) -> dict[str, Any]:
        """The bare servers: EVALSHA of the candidates script, mosquitto QoS 1, one hop."""
        out: dict[str, Any] = {}
        self.client.config_set("notify-keyspace-events", "")
        script = script_source("candidates.lua")
        sha = self.client.script_load(script)
        band = self.quiet[0]
        stored = self.client.hgetall(KEYS.price(band.symbol))
        keys, directions = candidates_call(KEYS, band.symbol)
        args = [
            *directions,
            text(stored[b"mark"]),
            text(stored[b"mark_ts"]),
            repr(float(band.mark)),
        ]
        command = ["EVALSHA", sha, str(len(keys)), *keys, *args]
        ops = self.profile.ceiling_ops
        for name, extra, count in (
            ("one_client", ["-c", "1"], ops),
            ("clients_50", ["-c", "50"], ops * 5),
            ("clients_50_pipeline_16", ["-c", "50", "-P", "16"], ops * 20),
        ):
            done = subprocess.run(
                ["redis-benchmark", "-p", str(self.redis_server.port), "-n", str(count), "--csv",
                 *extra, *command],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row = done.stdout.strip().splitlines()[-1].replace('"', "").split(",")
            out[f"redis_evalsha_{name}"] = {
                "ops_per_s": float(row[-7]),
                "p50_ms": float(row[-4]),
                "p99_ms": float(row[-2]),
            }
        out["redis_evalsha_positions_in_symbol"] = self.client.hlen(KEYS.positions(band.symbol))
        out["redis_round_trip"] = uvloop.run(round_trips(self.redis_server.url))
        out |= mqtt_ceilings(self.mqtt, self.profile, self.workdir)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.publisher.close()
        with contextlib.suppress(Exception):
            self.monitor.stop()
        with contextlib.suppress(Exception):
            self.monitor.stop_publisher()
        with contextlib.suppress(Exception):
            self.watchers.stop()
        with contextlib.suppress(Exception):
            self.client.close()
        self.redis_server.stop()


async def round_trips(url: str, calls: int = 2000) -> dict[str, Any]:
    """One EVALSHA round trip on the monitor's own kind of connection (a lane, see
    monitor.state.channel), back to back and after the client idled 1 ms and 5 ms.

    Back to back, Redis and the client stay on the cores; between ticks both sleep,
    and each round trip then also pays for waking them: the part of tick -> event
    that no code of liqmon's decides.
    """
    client = aioredis.Redis.from_url(url)
    lane = Transport.of(client).lane("round trips")
    sha = await client.script_load("return redis.call('HSET', KEYS[1], 'at', ARGV[1])")
    command = resp_command("EVALSHA", sha, 1, "bench:round-trip", "1")
    out: dict[str, Any] = {}
    try:
        for name, idle_s in (
            ("back_to_back", 0.0),
            ("after_1ms_idle", 0.001),
            ("after_5ms_idle", 0.005),
        ):
            spent = []
            for _ in range(calls):
                if idle_s:
                    await asyncio.sleep(idle_s)
                started = time.perf_counter_ns()
                await lane.execute([command], ["bench:round-trip"])
                spent.append(time.perf_counter_ns() - started)
            out[name] = summary_ms(spent)
    finally:
        await client.aclose()
    return out


def mqtt_ceilings(mqtt: MosquittoServer, profile: Profile, workdir: Path) -> dict[str, Any]:
    """mosquitto_pub -> mosquitto_sub QoS 1 throughput, and one QoS 0 hop's latency."""
    out: dict[str, Any] = {}
    count = profile.ceiling_messages
    payload = b"x" * 700  # about the size of an event
    lines = workdir / "ceiling.txt"
    lines.write_bytes((payload + b"\n") * count)
    stamps = workdir / "ceiling-received.txt"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1", "-t", "bench/ceiling",
         "-C", str(count), "-W", "30", "-F", "%U"],
        stdout=stamps.open("wb"),
    )  # fmt: skip
    time.sleep(0.5)
    started = time.time_ns()
    with lines.open("rb") as stdin:
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1", "-t",
             "bench/ceiling", "-l"],
            stdin=stdin, check=True,
        )  # fmt: skip
    published_s = (time.time_ns() - started) / 1e9
    try:
        sub.wait(timeout=40)
    except subprocess.TimeoutExpired:
        sub.kill()
        sub.wait()
    received = stamps.read_bytes().split()
    last = received[-1].partition(b".") if received else (b"0", b"", b"0")
    seconds = (int(last[0]) * 1_000_000_000 + int(last[2] or 0) - started) / 1e9
    out["mosquitto_qos1_pub_to_sub"] = {
        "messages": count,
        "received": len(received),
        "payload_bytes": len(payload),
        "publisher_seconds": round(published_s, 3),
        "seconds_to_last_received": round(seconds, 3),
        "messages_per_s": round(len(received) / seconds) if seconds > 0 else None,
    }
    # One hop, QoS 0 in, QoS 1 subscription: publish time to mosquitto_sub's own timestamp.
    stamps = workdir / "hop.txt"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1", "-t", "bench/hop",
         "-F", "%U %p", "-C", "2000"],
        stdout=stamps.open("wb"),
    )  # fmt: skip
    time.sleep(0.5)
    publisher = Publisher("127.0.0.1", mqtt.port, f"bench-hop-{os.getpid()}")
    for _ in range(2000):
        publisher.publish("bench/hop", b"%d" % time.time_ns())
        time.sleep(0.001)
    publisher.close()
    try:
        sub.wait(timeout=20)
    except subprocess.TimeoutExpired:
        sub.kill()
    hops = []
    for line in stamps.read_bytes().splitlines():
        stamp, _, sent = line.partition(b" ")
        seconds_part, _, nanos = stamp.partition(b".")
        hops.append(int(seconds_part) * 1_000_000_000 + int(nanos) - int(sent))
    out["mqtt_one_hop_latency"] = summary_ms(hops)
    return out


# -- the run ----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU, memory, OS and the versions of everything measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")  # fmt: skip

    def version(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (done.stdout or done.stderr).strip().splitlines()[0]

    packages = {}
    for name in ("aiomqtt", "paho-mqtt", "redis", "hiredis", "orjson", "prometheus-client",
                 "websockets", "structlog", "uvloop", "msgspec"):  # fmt: skip
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, check=False, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "monitor", "feeds")
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": version(["redis-server", "--version"]),
        "mosquitto": version(["mosquitto", "-h"]),
        "packages": packages,
        "git_commit": commit,
        "uncommitted_changes_in_monitor_or_feeds": len(dirty.splitlines()) if dirty else 0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = FULL if args.full else QUICK
    if args.sizes:
        profile = Profile(**{**profile.__dict__, "sizes": tuple(args.sizes)})
    results: dict[str, Any] = {
        "mode": profile.name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            **{k: v for k, v in profile.__dict__.items() if k != "name"},
            "symbols": args.symbols,
            "burst_share": args.burst_share,
            "seed": args.seed,
            "ticks": "QoS 0 on liqmon/prices/{S}/mark; events received with mosquitto_sub -q 1",
            "broker_set_tcp_nodelay": args.broker_nodelay,
            "publisher": args.publisher,
        },
        "runs": [],
    }
    largest = max(profile.sizes)
    with tempfile.TemporaryDirectory(prefix="liqmon-bench-") as tmp:
        workdir = Path(tmp)
        broker_config = ["set_tcp_nodelay true"] if args.broker_nodelay else []
        with MosquittoServer(
            workdir / "mosquitto", persistence=False, extra_config=broker_config
        ) as mqtt:
            for n in profile.sizes:
                book_dir = workdir / f"n{n}"
                book_dir.mkdir()
                run_ = BookRun(n, profile, args, book_dir, mqtt)
                try:
                    run_.load()
                    run_.start_monitor()
                    run_.baseline()
                    with run_.profiled("quiet"):
                        run_.quiet_phase()
                    with run_.profiled("crossing"):
                        run_.crossing_phase()
                    run_.full_scan()
                    run_.heavy_symbol()
                    if n == largest:
                        if not args.skip_sustained:
                            with run_.profiled("sustained"):
                                run_.sustained()
                        with run_.profiled("burst"):
                            run_.burst()
                    if not run_.monitor.alive():
                        raise RuntimeError(f"the monitor died:\n{run_.monitor.tail()}")
                    stop = run_.monitor.stop()
                    run_.result["state"]["final_stop_s"] = (
                        round(stop, 3) if stop is not None else "killed after 15 s"
                    )
                    if stop is None:
                        run_.result["state"]["stop_hang"] = {
                            "py_spy_dump": run_.monitor.hang_dump.splitlines()[:80],
                            "log_tail": run_.monitor.tail(15).splitlines(),
                        }
                    run_.watchers.stop()
                    if n == largest:
                        log("ceilings: redis-benchmark and mosquitto_pub/sub")
                        results["ceilings"] = run_.ceilings()
                    results["runs"].append(run_.result)
                finally:
                    if args.keep_logs:
                        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                        for path in [*book_dir.glob("monitor-*.log"), *book_dir.glob("*-hang.txt")]:
                            shutil.copy(path, Path(args.keep_logs) / f"n{n}-{path.name}")
                    run_.close()
    results["elapsed_s"] = round(time.monotonic() - STARTED, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10k and 100k positions (default)")
    mode.add_argument("--full", action="store_true", help="10k, 100k and 1M positions")
    parser.add_argument("--sizes", type=int, nargs="+", help="override the book sizes")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--burst-share", type=float, default=0.2,
                        help="share of all positions on the burst symbol")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--broker-nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mosquitto with set_tcp_nodelay true (default; without it Nagle's algorithm "
        "and delayed ACKs hold small packets for up to ~40 ms)",
    )
    parser.add_argument(
        "--publisher",
        choices=("separate", "inline"),
        default="separate",
        help="events published by a `liqmon publish` process beside the monitor (default) "
        "or inside it (mqtt.publisher)",
    )
    parser.add_argument("--skip-sustained", action="store_true")
    parser.add_argument("--out", type=Path, help="results directory (default: dated)")
    parser.add_argument("--profile", help="py-spy record the monitor per phase into this directory")
    parser.add_argument("--keep-logs", help="copy the monitor's logs into this directory")
    args = parser.parse_args()
    results = run(args)
    out = args.out or HERE / "results" / f"{datetime.date.today().isoformat()}-{results['mode']}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report.markdown(results))
    plotted = report.plot(results, out / "plot.png")
    plot_note = ", plot.png" if plotted else " (no matplotlib: no plot)"
    log(f"wrote {out}/results.json, report.md{plot_note}")
    sys.stdout.write(report.markdown(results))


if __name__ == "__main__":
    main()
