"""``liqmon demo``: the seeded book as a pure function, the terminal feed, and the real command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from harness import position_object

from feeds.source import Emit, Reject
from feeds.tick import PriceKind, PriceTick
from monitor.config.loading import load_settings
from monitor.core.margin import Position, Side, assess, liquidation_price
from monitor.core.position import PositionUpdate
from monitor.core.wire import position_from_object
from monitor.devtools.demo import (
    DEMO_MARKETS,
    SCENARIO,
    START_RATIO_MAX,
    EventTicker,
    MirroredSource,
    generate_positions,
    readable,
)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(ROOT / "config" / "liqmon.toml", environ={})


def as_wire(update: PositionUpdate) -> dict[str, object]:
    """The position as a client would send it on ``{prefix}/positions``."""
    return position_object(
        update.id,
        account=update.account,
        symbol=update.symbol,
        side=update.side.value,
        qty=str(update.qty),
        entry_price=str(update.entry_price),
        margin=str(update.margin),
        seq=update.seq,
    )


def test_the_book_is_a_pure_function_of_the_seed() -> None:
    """The same seed gives the same book; another seed gives another one."""
    first = generate_positions(300, seed=11, contracts=SETTINGS.symbols)
    again = generate_positions(300, seed=11, contracts=SETTINGS.symbols)
    other = generate_positions(300, seed=12, contracts=SETTINGS.symbols)
    assert first == again
    assert first != other


def test_every_seeded_position_is_valid_and_opens_healthy() -> None:
    """Each position survives the wire parser unchanged and starts clear of a margin call."""
    book = generate_positions(2000, seed=7, contracts=SETTINGS.symbols)
    assert len({p.id for p in book}) == 2000
    for update in book:
        assert position_from_object(as_wire(update), SETTINGS.symbols) == update
        assert update.qty > 0
        assert update.margin > 0
        assert 1 <= int(update.account.removeprefix("acct-")) <= 500
        contract = SETTINGS.symbols[update.symbol]
        position = Position(update.side, update.qty, update.entry_price, update.margin)
        state = assess(contract, position, DEMO_MARKETS[update.symbol].start)
        assert state.margin_ratio < START_RATIO_MAX
    assert {p.symbol for p in book} == set(DEMO_MARKETS)
    assert {p.side for p in book} == {Side.LONG, Side.SHORT}


def test_the_crash_liquidates_a_good_share_of_the_longs_but_not_all() -> None:
    """At the crash's bottom (~15 % down) many longs' liquidation prices lie above the mark."""
    bottom = Decimal(1)
    for phase in SCENARIO[:2]:
        bottom *= Decimal(1) + Decimal(repr(phase.fraction))
    book = generate_positions(2000, seed=7, contracts=SETTINGS.symbols)
    longs = [p for p in book if p.side is Side.LONG]
    crossed = 0
    for update in longs:
        contract = SETTINGS.symbols[update.symbol]
        position = Position(update.side, update.qty, update.entry_price, update.margin)
        price = liquidation_price(contract, position)
        if price is not None and price >= DEMO_MARKETS[update.symbol].start * bottom:
            crossed += 1
    assert 0.4 < crossed / len(longs) < 0.9


def test_the_ticker_prints_a_sample_and_counts_the_rest() -> None:
    """Of a burst, only the first few events print in full; the window's line counts them all."""
    ticker = EventTicker(sample=2)
    printed = [ticker.offer(kind) for kind in ["liquidation"] * 1500 + ["margin_call"] * 3]
    assert printed.count(True) == 2
    assert ticker.close_window() == (
        "liquidations 1,500 · margin calls 3 · cleared 0 (1,501 not shown)"
    )
    assert ticker.close_window() is None
    assert ticker.offer("margin_call_cleared")
    assert ticker.totals == {"liquidation": 1500, "margin_call": 3, "margin_call_cleared": 1}


def test_readable_rounds_only_for_display() -> None:
    """Liquidation price to 6 significant digits, ratio to 3 places; Infinity stays."""
    event = {
        "mark_price": "63654.6",
        "liquidation_price": "63717.16867469879",
        "margin_ratio": "Infinity",
    }
    shown = readable(event)
    assert shown["liquidation_price"] == "63717.2"
    assert shown["margin_ratio"] == "Infinity"
    assert readable({"margin_ratio": "0.81234"})["margin_ratio"] == "0.812"
    assert readable({"liquidation_price": "0.0123456789"})["liquidation_price"] == "0.0123457"
    assert readable({"liquidation_price": None}) == {"liquidation_price": None}
    assert event["liquidation_price"] == "63717.16867469879"


class _Scripted:
    """A price source that emits a fixed list of ticks."""

    name = "scripted"

    def __init__(self, ticks: list[PriceTick]) -> None:
        self.ticks = ticks

    async def run(self, emit: Emit, reject: Reject) -> None:
        for tick in self.ticks:
            await emit(tick)


async def test_mirrored_source_copies_a_path_to_its_inverse_twin() -> None:
    """A BTCUSDT tick is emitted as BTCUSDT and BTCUSD; an unrouted symbol is dropped."""
    ticks = [
        PriceTick("BTCUSDT", PriceKind.MARK, Decimal("64000.0"), 1, "synthetic"),
        PriceTick("XRPUSDT", PriceKind.MARK, Decimal("0.5"), 1, "synthetic"),
    ]
    seen: list[PriceTick] = []
    emitted: list[PriceTick] = []

    async def emit(tick: PriceTick) -> None:
        emitted.append(tick)

    async def reject(source: str, reason: str, raw: bytes) -> None:
        raise AssertionError(reason)

    source = MirroredSource(_Scripted(ticks), {"BTCUSDT": ["BTCUSDT", "BTCUSD"]}, seen.append)
    await source.run(emit, reject)
    assert [(t.symbol, t.price) for t in emitted] == [
        ("BTCUSDT", Decimal("64000.0")),
        ("BTCUSD", Decimal("64000.0")),
    ]
    assert seen == emitted


# -- the real command ----------------------------------------------------------


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) redis-server or mosquitto."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and (b"redis-server" in cmdline or b"mosquitto" in cmdline)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _count(output: str, label: str) -> int:
    match = re.search(rf"^\s+{label}\s+([\d,]+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in the summary:\n{output[-2000:]}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_liqmon_demo_runs_the_show_and_leaves_nothing_running() -> None:
    """`liqmon demo --duration 20` exits 0 with liquidations and margin calls, its servers gone."""
    command = [
        str(Path(sys.executable).parent / "liqmon"),
        "demo",
        "--duration",
        "20",
        "--positions",
        "2000",
    ]
    env = {**os.environ, "LIQMON_LOG_FORMAT": "console"}
    env.pop("LIQMON_LOG_LEVEL", None)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    address = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "http://127.0.0.1:" in line:
                address.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert address.wait(30), "".join(lines)
        url = re.search(r"http://127\.0\.0\.1:\d+/", "".join(lines))
        assert url
        with urllib.request.urlopen(url.group(0) + "healthz", timeout=5) as response:
            assert response.status == 200
        try:
            code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the demo still ran after 90 s; its output:\n" + "".join(lines)[-4000:])
    finally:
        if process.poll() is None:  # SIGTERM first: the demo stops its servers on it
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        reader.join(5)
        process.stdout.close()
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert _count(output, "liquidations") > 0
    assert _count(output, "margin calls") > 0
    pids = [int(pid) for pid in re.findall(r"started (?:redis-server|mosquitto) pid (\d+)", output)]
    assert len(pids) == 2, output[:1000]
    assert [pid for pid in pids if _alive(pid)] == []
    workdir = re.search(r"working directory (\S+)", output)
    assert workdir
    assert not Path(workdir.group(1)).exists()
    assert _processes_mentioning(workdir.group(1)) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_liqmon_demo_runs_outside_a_checkout(tmp_path: Path) -> None:
    """From a directory with no config/liqmon.toml (as after pip install), the demo runs on
    the example installed with the package."""
    command = [str(Path(sys.executable).parent / "liqmon"), "demo", "--duration", "1"]
    env = {**os.environ, "LIQMON_LOG_FORMAT": "console"}
    done = subprocess.run(
        [*command, "--positions", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"liqmon demo: config {ROOT / 'monitor' / 'config' / 'liqmon.toml'},")
    assert "nothing left running" in done.stdout
