"""``liqmon demo``: the whole product on one machine, with nothing to configure.

What it does, in order:

1. starts a private ``redis-server`` and ``mosquitto`` on free ports in a
   temporary directory (:mod:`monitor.devtools.embedded`) and points the configuration
   at them;
2. sets an opening mark per symbol, then seeds a book of positions drawn by
   :func:`generate_positions` (a pure function of the seed) through the same
   bulk loader as ``liqmon positions load``;
3. runs the monitor daemon in-process on a synthetic market that follows
   :data:`SCENARIO`: a short squeeze, a crash and a recovery, ~25 s in all;
4. subscribes to ``{prefix}/events/#`` like any alert subscriber would,
   de-duplicates on ``event_id`` and prints the events as they arrive, a few
   per second in full plus a one-line count per second, so a burst of
   thousands of liquidations does not flood the terminal;
5. on ``--duration`` elapsed, Ctrl-C or SIGTERM: prints a summary, stops the
   daemon and both servers, and removes the temporary directory.

The inverse symbols (BTCUSD, ETHUSD) follow the price path of their linear
twins (:class:`MirroredSource`), so one crash hits both books.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from types import FrameType
from typing import TextIO

import aiomqtt
import orjson

from feeds.source import Emit, PriceSource, Reject
from feeds.synthetic import Jump, SyntheticSource
from feeds.tick import PriceKind, PriceTick
from monitor.bus.tool_client import make_client
from monitor.config.loading import DEFAULT_PATH, EXAMPLE_PATH, load_settings
from monitor.config.model import Settings
from monitor.core import topics
from monitor.core.errors import ConfigError
from monitor.core.margin import Contract, ContractKind, Position, Side
from monitor.core.models import model_for
from monitor.core.position import PositionUpdate
from monitor.core.seen import SeenEvents, format_event
from monitor.devtools.embedded import EmbeddedServerError, MosquittoServer, RedisServer
from monitor.service.daemon import Daemon
from monitor.service.loading import LoadSummary, load_positions, open_store
from monitor.telemetry import log

__all__ = [
    "DEMO_MARKETS",
    "SCENARIO",
    "DemoMarket",
    "EventTicker",
    "MirroredSource",
    "Phase",
    "generate_positions",
    "run_demo",
]

# -- the market and the book ------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoMarket:
    """How the demo trades one symbol.

    ``start`` is the opening price (its exponent is the tick size), ``lot`` the
    quantity step of a linear contract (inverse positions are whole
    contracts), ``weight`` the share of the book, and ``tracks`` the symbol
    whose price path this one follows (an inverse perpetual and its linear
    twin move together).
    """

    start: Decimal
    lot: Decimal
    weight: float
    tracks: str | None = None


DEMO_MARKETS: Mapping[str, DemoMarket] = {
    "BTCUSDT": DemoMarket(Decimal("64000.0"), Decimal("0.001"), 0.35),
    "ETHUSDT": DemoMarket(Decimal("3400.00"), Decimal("0.01"), 0.25),
    "SOLUSDT": DemoMarket(Decimal("150.00"), Decimal("0.1"), 0.15),
    "BTCUSD": DemoMarket(Decimal("64000.0"), Decimal(1), 0.15, tracks="BTCUSDT"),
    "ETHUSD": DemoMarket(Decimal("3400.00"), Decimal(1), 0.10, tracks="ETHUSDT"),
}
"""The symbols the demo knows; configured symbols not listed here are left idle."""


@dataclass(frozen=True, slots=True)
class Phase:
    """One scheduled move of every price, with the line announced when it starts."""

    at_s: float
    fraction: float
    over_s: float
    label: str

    def jump(self) -> Jump:
        """The synthetic market's form of this phase."""
        return Jump(at_s=self.at_s, fraction=self.fraction, over_s=self.over_s)


SCENARIO: tuple[Phase, ...] = (
    Phase(4.0, +0.04, 1.0, "SHORT SQUEEZE: +4% in 1 s (the most leveraged shorts go first)"),
    Phase(8.0, -0.18, 3.0, "CRASH: -18% over 3 s"),
    Phase(16.0, +0.15, 3.0, "RECOVERY: +15% over 3 s"),
)
SHOW_S = 25.0
"""Seconds of market after which the scenario is over (the walk goes on if asked)."""

INTERVAL_S = 0.1
"""One market step (a mark and an index tick per symbol) every 100 ms."""

DAILY_VOL = 0.8
"""A nervous market: about 0.09 % standard deviation per step."""

ACCOUNTS = 500
NOTIONAL_USD = (100.0, 300_000.0)
"""Notional of a position at entry, drawn log-uniformly (a few whales, many minnows)."""
LEVERAGE = (2.0, 50.0)
"""Leverage drawn log-uniformly, capped at the venue's maximum for the position's tier."""
ENTRY_SPREAD = 0.01
"""Entries scatter around the opening price (log-normal, 1 % standard deviation)."""
START_RATIO_MAX = Decimal("0.5")
"""Every seeded position starts well clear of a margin call (MM / MB below this)."""


def generate_positions(
    count: int,
    seed: int,
    contracts: Mapping[str, Contract],
    markets: Mapping[str, DemoMarket] = DEMO_MARKETS,
) -> list[PositionUpdate]:
    """A deterministic book of ``count`` positions (same seed, same book).

    Symbols are those both configured (with the default binance model) and in
    ``markets``, drawn by weight;
    accounts ``acct-1`` … ``acct-500``; sides evenly. Leverage is log-uniform
    in 2–50x, so an 18 % crash liquidates most longs above ~5x while the rest
    ride it out, some inside a margin call. Linear quantities are in base
    units (a multiple of the lot), inverse ones in contracts of
    ``contract_size`` USD with the margin in coin. Each position is healthy at
    the opening price (margin ratio below :data:`START_RATIO_MAX`), so seeding
    emits no event; the show's events all come from price moves.
    """
    # The draws size positions in Binance's units and tiers (base units, brackets).
    symbols = [
        symbol
        for symbol in markets
        if symbol in contracts and model_for(contracts[symbol]).venue == "binance"
    ]
    if not symbols:
        raise ValueError(
            f"none of the demo symbols ({', '.join(markets)}) is configured "
            f"(with venue binance); "
            f"configured: {', '.join(contracts)}"
        )
    weights = [markets[symbol].weight for symbol in symbols]
    rng = random.Random(seed)
    book = []
    for number in range(1, count + 1):
        symbol = rng.choices(symbols, weights)[0]
        side = Side.LONG if rng.random() < 0.5 else Side.SHORT
        account = f"acct-{rng.randint(1, ACCOUNTS)}"
        position = _draw_position(rng, contracts[symbol], markets[symbol], side)
        book.append(
            PositionUpdate(
                id=f"p-{number}",
                account=account,
                symbol=symbol,
                side=side,
                qty=position.qty,
                entry_price=position.entry_price,
                margin=position.margin,
                seq=1,
            )
        )
    return book


def _draw_position(
    rng: random.Random, contract: Contract, market: DemoMarket, side: Side
) -> Position:
    """Size, entry and margin of one position, redrawn until it opens healthy."""
    tick = Decimal(1).scaleb(min(0, int(market.start.as_tuple().exponent)))
    for _ in range(20):
        notional_usd = math.exp(rng.uniform(*map(math.log, NOTIONAL_USD)))
        leverage = math.exp(rng.uniform(*map(math.log, LEVERAGE)))
        entry = (market.start * Decimal(repr(math.exp(rng.gauss(0.0, ENTRY_SPREAD))))).quantize(
            tick
        )
        position = _sized(contract, market, side, entry, notional_usd, leverage)
        if position is not None:
            return position
    # Practically unreachable; 2x at the opening price is healthy on any sane tier table.
    fallback = _sized(contract, market, side, market.start, NOTIONAL_USD[0], 2.0)
    if fallback is None:
        raise ValueError(f"{contract.symbol}: cannot draw a healthy demo position")
    return fallback


def _sized(
    contract: Contract,
    market: DemoMarket,
    side: Side,
    entry: Decimal,
    notional_usd: float,
    leverage: float,
) -> Position | None:
    """The position of that size and leverage, or None if it would not open healthy."""
    if contract.kind is ContractKind.LINEAR:
        qty = (Decimal(repr(notional_usd)) / entry).quantize(market.lot, ROUND_DOWN)
        qty = max(qty, market.lot)
        notional = qty * entry
        margin_step = Decimal("0.01")
    else:
        qty = Decimal(max(1, round(notional_usd / float(contract.contract_size))))
        notional = qty * contract.contract_size / entry
        margin_step = Decimal("1e-8")
    bracket = contract.bracket_for(notional)
    # Venues cap leverage per tier at about 1 / (2 · maintenance rate).
    cap = 1 / (2 * float(bracket.mmr + contract.close_fee_rate))
    leverage = max(1, min(round(leverage), math.floor(cap)))
    margin = (notional / leverage).quantize(margin_step, ROUND_UP)
    position = Position(side, qty, entry, margin)
    state = model_for(contract).assess(position, market.start)
    return position if state.margin_ratio < START_RATIO_MAX else None


Observer = Callable[[PriceTick], None]


class MirroredSource:
    """A price source that re-emits each tick under the symbols routed from it.

    ``routes`` maps a symbol of ``inner`` to the configured symbols that
    follow it (``{"BTCUSDT": ["BTCUSDT", "BTCUSD"]}``); inner symbols without a
    route are dropped. ``observe`` sees every tick emitted, before the daemon
    does (the demo's price board).
    """

    def __init__(
        self,
        inner: PriceSource,
        routes: Mapping[str, Sequence[str]],
        observe: Observer | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.routes = {symbol: tuple(targets) for symbol, targets in routes.items()}
        self.observe = observe

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Run the inner source until cancelled (safe at any point)."""

        async def forward(tick: PriceTick) -> None:
            for symbol in self.routes.get(tick.symbol, ()):
                routed = tick if symbol == tick.symbol else replace(tick, symbol=symbol)
                if self.observe is not None:
                    self.observe(routed)
                await emit(routed)

        await self.inner.run(forward, reject)


def demo_source(
    symbols: Sequence[str],
    seed: int,
    markets: Mapping[str, DemoMarket] = DEMO_MARKETS,
    phases: Sequence[Phase] = SCENARIO,
    observe: Observer | None = None,
) -> MirroredSource:
    """The scenario's market for ``symbols``: one random walk per tracked price path."""
    routes: dict[str, list[str]] = {}
    for symbol in symbols:
        path = markets[symbol].tracks or symbol
        if path not in symbols:  # the twin is not configured: walk on its own
            path = symbol
        routes.setdefault(path, []).append(symbol)
    synthetic = SyntheticSource(
        {path: markets[path].start for path in routes},
        seed=seed,
        daily_vol=DAILY_VOL,
        interval_s=INTERVAL_S,
        jumps=[phase.jump() for phase in phases],
        basis_bp=2.0,
        speed=1.0,
        name="synthetic",
    )
    return MirroredSource(synthetic, routes, observe)


# -- what the terminal shows ------------------------------------------------

_LABELS = {
    "liquidation": "liquidations",
    "margin_call": "margin calls",
    "margin_call_cleared": "cleared",
}


class EventTicker:
    """Rate-limits the event feed: ``sample`` full lines per window, counts for the rest.

    Pure bookkeeping (no I/O, no clock): :meth:`offer` says whether to print
    an event, :meth:`close_window` returns the window's one-line count.
    """

    def __init__(self, sample: int = 5) -> None:
        self.sample = sample
        self.totals: Counter[str] = Counter()
        self.window: Counter[str] = Counter()
        self.shown = 0

    def offer(self, event_type: str) -> bool:
        """Count one event; True if it is among the window's printed sample."""
        self.totals[event_type] += 1
        self.window[event_type] += 1
        if self.shown < self.sample:
            self.shown += 1
            return True
        return False

    def close_window(self) -> str | None:
        """``liquidations 1,234 · margin calls 567 · cleared 89`` for the window, then reset.

        None when the window had no event.
        """
        if not self.window:
            return None
        line = counts_line(self.window)
        hidden = self.window.total() - self.shown
        if hidden:
            line += f" ({hidden:,} not shown)"
        self.window = Counter()
        self.shown = 0
        return line


def counts_line(counts: Mapping[str, int]) -> str:
    """Event counts in a fixed order, e.g. ``liquidations 3 · margin calls 1 · cleared 0``."""
    return " · ".join(f"{label} {counts.get(kind, 0):,}" for kind, label in _LABELS.items())


@dataclass
class Board:
    """What the show knows of the market: opening and latest marks, steps, phases announced."""

    out: TextIO
    phases: Sequence[Phase]
    first_ts_ms: int | None = None
    opening: dict[str, Decimal] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    mark_ticks: int = 0
    started_at: float | None = None
    announced: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, tick: PriceTick) -> None:
        """Called for every tick the market emits; announces a phase as it begins."""
        if self.first_ts_ms is None:
            self.first_ts_ms = tick.ts_ms
            self.started_at = time.monotonic()
            self.started.set()
        if tick.kind is not PriceKind.MARK:
            return
        self.mark_ticks += 1
        self.opening.setdefault(tick.symbol, tick.price)
        self.marks[tick.symbol] = tick.price
        market_s = (tick.ts_ms - self.first_ts_ms) / 1000
        while self.announced < len(self.phases) and market_s >= self.phases[self.announced].at_s:
            phase = self.phases[self.announced]
            say(self.out, f"\n[t+{market_s:4.1f}s] >>> {phase.label}")
            self.announced += 1

    def elapsed_s(self) -> float:
        """Seconds since the market's first tick (0 before it)."""
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def prices(self, symbols: Sequence[str]) -> str:
        """``BTCUSDT 61,234.5 (-4.3%)`` for each of ``symbols`` with a mark."""
        parts = []
        for symbol in symbols:
            mark, opening = self.marks.get(symbol), self.opening.get(symbol)
            if mark is None or opening is None:
                continue
            change = (mark / opening - 1) * 100
            parts.append(f"{symbol} {mark:,} ({change:+.1f}%)")
        return "  ".join(parts)


def readable(event: Mapping[str, object]) -> dict[str, object]:
    """The event with its liquidation price at 6 significant digits and its ratio at 3 decimals.

    Exact values have up to 28 significant digits, which is right on the wire
    and unreadable in a terminal; only the display is rounded.
    """
    shown = dict(event)
    for key, digits in (("liquidation_price", None), ("margin_ratio", 3)):
        try:
            value = Decimal(str(event[key]))
        except (KeyError, ArithmeticError):  # absent, or not a number (None)
            continue
        if value.is_finite() and value:
            places = digits if digits is not None else 5 - value.adjusted()
            shown[key] = str(value.quantize(Decimal(1).scaleb(-places)))
    return shown


def say(out: TextIO, text: str) -> None:
    """Write one line and flush (the output is often a pipe)."""
    out.write(text + "\n")
    out.flush()


# -- the show -----------------------------------------------------------------


@dataclass
class Results:
    """What the summary reports."""

    seeded: LoadSummary | None = None
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    mark_ticks_emitted: int = 0
    mark_ticks_evaluated: int = 0
    market_s: float = 0.0
    interrupted: bool = False


class Show:
    """One run of the demo against servers that are already up."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        seed: int,
        duration_s: float,
        out: TextIO,
    ) -> None:
        self.settings = settings
        self.count = count
        self.seed = seed
        self.duration_s = duration_s
        self.out = out
        self.symbols = [symbol for symbol in DEMO_MARKETS if symbol in settings.symbols]
        self.board = Board(out, SCENARIO)
        self.ticker = EventTicker()
        self.seen = SeenEvents()
        self.results = Results()
        self.stop = asyncio.Event()
        self.arrived = asyncio.Event()

    async def run(self) -> Results:
        """Seed, run the market and the monitor until the duration, Ctrl-C or SIGTERM.

        Cancelling is safe: the daemon is stopped by its own task group.
        """
        self._install_signal_handlers()
        await self._seed()
        if self.stop.is_set():
            self.results.interrupted = True
            return self.results
        prefix = self.settings.mqtt.topic_prefix
        watcher = make_client(
            self.settings.mqtt, f"liqmon-demo-watch-{uuid.uuid4().hex[:8]}", persistent=False
        )
        source = demo_source(self.symbols, self.seed, observe=self.board.observe)
        daemon = Daemon(self.settings, [source])
        async with watcher:
            # Subscribed before the market starts, so no event is missed.
            await watcher.subscribe(topics.all_events(prefix), qos=1)
            async with asyncio.TaskGroup() as group:
                running = group.create_task(daemon.run(), name="daemon")
                reader = group.create_task(self._read_events(watcher), name="events")
                reporter = group.create_task(self._report(), name="report")
                await self._until_ready(daemon, running)
                say(
                    self.out,
                    f"monitor running; dashboard and API at "
                    f"http://{self.settings.http.host}:{daemon.http.bound_port}/ "
                    f"(/healthz, /readyz, /metrics)",
                )
                self._announce_plan()
                await self._until_stopped()
                reporter.cancel()
                say(self.out, "\nstopping: draining the monitor's outbox ...")
                daemon.stopping.set()
                await running
                await self._until_quiet()
                reader.cancel()
        self._collect(daemon)
        return self.results

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def on_signal() -> None:
            if self.stop.is_set() and main is not None:
                main.cancel()  # a second Ctrl-C: stop waiting for a clean drain
            self.results.interrupted = True
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

    async def _seed(self) -> None:
        started = time.perf_counter()
        book = generate_positions(self.count, self.seed, self.settings.symbols)
        longs = sum(1 for p in book if p.side is Side.LONG)
        say(
            self.out,
            f"generated {len(book):,} positions ({longs:,} long, {len(book) - longs:,} short) "
            f"over {', '.join(self.symbols)} in {time.perf_counter() - started:.1f} s",
        )
        await self._open_market()
        self.results.seeded = await load_positions(
            self.settings, ((n, b"", update) for n, update in enumerate(book, 1)), 1000
        )

    async def _open_market(self) -> None:
        """Store an opening mark and index per symbol, so seeding evaluates against them."""
        store = open_store(self.settings)
        ts_ms = time.time_ns() // 1_000_000 - 1000  # older than the market's first tick
        try:
            for symbol in self.symbols:
                start = DEMO_MARKETS[symbol].start
                await store.accept_mark(symbol, start, ts_ms)
                await store.accept_index(symbol, start, ts_ms)
        finally:
            await store.client.aclose()
        prices = ", ".join(f"{s} {DEMO_MARKETS[s].start:,}" for s in self.symbols)
        say(self.out, f"opening marks: {prices}")

    async def _until_ready(self, daemon: Daemon, running: asyncio.Task[None]) -> None:
        async with asyncio.timeout(30):
            while failing := await daemon.failing():
                if running.done():
                    running.result()
                    raise RuntimeError(f"the monitor stopped before it was ready: {failing}")
                await asyncio.sleep(0.05)

    def _announce_plan(self) -> None:
        plan = "; ".join(f"t+{p.at_s:.0f}s {p.label.split(':')[0].lower()}" for p in SCENARIO)
        until = f"stops after {self.duration_s:g} s" if self.duration_s else "runs until Ctrl-C"
        say(
            self.out,
            f"market: a step every {INTERVAL_S * 1000:.0f} ms; {plan}; {until}\n"
            f"events print as they arrive ({self.ticker.sample} per second in full, "
            f"then a count per second)\n",
        )

    async def _until_stopped(self) -> None:
        async with asyncio.timeout(30):
            await self.board.started.wait()
        if not self.duration_s:
            await self.stop.wait()
            return
        remaining = self.duration_s - self.board.elapsed_s()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, remaining)):
                await self.stop.wait()

    async def _until_quiet(self, quiet_s: float = 0.5, limit_s: float = 5.0) -> None:
        """Let the last published events arrive (none for ``quiet_s``, at most ``limit_s``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while await self._arrives_within(quiet_s):
                    pass
        line = self.ticker.close_window()
        if line:
            say(self.out, f"[t+{self.board.elapsed_s():4.0f}s] last events: {line}")

    async def _arrives_within(self, seconds: float) -> bool:
        """True if an event arrives within ``seconds``."""
        self.arrived.clear()
        try:
            async with asyncio.timeout(seconds):
                await self.arrived.wait()
        except TimeoutError:
            return False
        return True

    async def _read_events(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.arrived.set()
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if not self.seen.first_time(str(event.get("event_id"))):
                self.results.duplicates += 1
                continue
            kind = str(event.get("type"))
            self.results.received[kind] += 1
            if self.ticker.offer(kind):
                say(
                    self.out,
                    f"[t+{self.board.elapsed_s():4.1f}s] {format_event(readable(event))}",
                )

    async def _report(self) -> None:
        """Once a second: the window's event counts and prices (always during the scenario)."""
        await self.board.started.wait()
        linear = [s for s in self.symbols if self.settings.symbols[s].kind is ContractKind.LINEAR]
        second = 1
        over_announced = False
        while True:
            started_at = self.board.started_at or time.monotonic()
            await asyncio.sleep(max(0.0, started_at + second - time.monotonic()))
            line = self.ticker.close_window()
            in_scenario = second <= SHOW_S
            if line or in_scenario:
                counts = f"{line} in the last second" if line else "no events"
                say(self.out, f"[t+{second:3d}s] {self.board.prices(linear)} | {counts}")
            if not in_scenario and not over_announced and not self.duration_s:
                over_announced = True
                say(self.out, "\nthe scenario is over; the market keeps walking. Ctrl-C to stop.")
            second += 1

    def _collect(self, daemon: Daemon) -> None:
        self.results.queued = {
            sample.labels["type"]: int(sample.value)
            for metric in daemon.metrics.events.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        self.results.mark_ticks_emitted = self.board.mark_ticks
        self.results.mark_ticks_evaluated = int(
            sum(
                sample.value
                for metric in daemon.metrics.ticks_evaluated.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )
        self.results.market_s = self.board.elapsed_s()


def summary_lines(results: Results, total_s: float) -> Iterator[str]:
    """The closing summary; one ``name  value`` per line (tests read them)."""
    yield "\nsummary"
    seeded = results.seeded
    if seeded is not None:
        yield f"  positions seeded      {seeded.applied:,} in {seeded.seconds:.1f} s"
    for kind, label in (
        ("liquidation", "liquidations"),
        ("margin_call", "margin calls"),
        ("margin_call_cleared", "margin calls cleared"),
    ):
        received = results.received.get(kind, 0)
        queued = results.queued.get(kind, 0)
        note = "" if received == queued else f" (the monitor queued {queued:,})"
        yield f"  {label:<21} {received:,}{note}"
    yield f"  duplicates dropped    {results.duplicates:,}"
    coalesced = results.mark_ticks_emitted - results.mark_ticks_evaluated
    yield (
        f"  mark ticks            {results.mark_ticks_emitted:,} emitted, "
        f"{results.mark_ticks_evaluated:,} evaluated"
        + (" (the rest coalesced)" if coalesced > 0 else "")
    )
    yield f"  time                  {results.market_s:.1f} s of market, {total_s:.1f} s in all"
    if results.interrupted:
        yield "  ended by              a signal (Ctrl-C or SIGTERM)"


# -- entry point --------------------------------------------------------------


def _config_path(path: Path) -> Path:
    """The default path is relative to the working directory; where it is missing (outside
    a checkout, from an installed package), the example installed with the package."""
    if path == DEFAULT_PATH and not path.exists():
        return EXAMPLE_PATH
    return path


def _pointed_at(settings: Settings, redis: RedisServer, mosquitto: MosquittoServer) -> Settings:
    return replace(
        settings,
        redis=replace(settings.redis, url=redis.url),
        mqtt=replace(settings.mqtt, url=mosquitto.url, client_id="liqmon-demo-monitor"),
        http=replace(settings.http, host="127.0.0.1", port=0),  # the OS picks a free port
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside the block, restored after it."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``liqmon demo``; returns the exit status (0, or 1 on failure, 2 on bad input)."""
    started = time.perf_counter()
    if args.positions < 1 or args.duration < 0:
        say(sys.stderr, "liqmon: error: --positions must be >= 1 and --duration >= 0")
        return 2
    # Hundreds of events a second would drown the show in log lines: warnings only,
    # unless LIQMON_LOG_LEVEL says otherwise.
    log.configure(level="warning")
    # The monitor keeps hundreds of QoS 1 publishes in flight on purpose; aiomqtt
    # warns about every one beyond 10 on its "mqtt" logger.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    path = _config_path(args.config)
    try:
        settings = load_settings(path, environ={})
    except ConfigError as error:
        say(sys.stderr, f"liqmon: error: {error}")
        return 2
    if not any(symbol in settings.symbols for symbol in DEMO_MARKETS):
        say(
            sys.stderr,
            f"liqmon: error: {path}: configure at least one of {', '.join(DEMO_MARKETS)}",
        )
        return 2
    # Until the event loop takes over, SIGTERM unwinds like Ctrl-C, so the servers
    # started below are always stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="liqmon-demo-") as workdir:
            say(out, f"liqmon demo: config {path}, working directory {workdir}")
            redis = RedisServer(Path(workdir) / "redis")
            mosquitto = MosquittoServer(Path(workdir) / "mosquitto")
            try:
                redis.start()
                say(out, f"started redis-server pid {redis.pid} on {redis.url}")
                mosquitto.start()
                say(out, f"started mosquitto pid {mosquitto.pid} on {mosquitto.url}")
                show = Show(
                    _pointed_at(settings, redis, mosquitto),
                    args.positions,
                    args.seed,
                    args.duration,
                    out,
                )
                results = asyncio.run(show.run())
            except EmbeddedServerError as error:
                say(sys.stderr, f"liqmon: error: {error}")
                return 1
            except asyncio.CancelledError:  # a second Ctrl-C while draining
                say(sys.stderr, "liqmon demo: stopped without waiting for the drain")
                return 130
            except Exception:
                traceback.print_exc()
                say(sys.stderr, "liqmon demo: failed (above); servers stopped")
                return 1
            finally:
                pids = f"mosquitto pid {mosquitto.pid}, redis-server pid {redis.pid}"
                # Already stopping: a further Ctrl-C or SIGTERM must not cut it short.
                with _signals_ignored():
                    mosquitto.stop()
                    redis.stop()
            for line in summary_lines(results, time.perf_counter() - started):
                say(out, line)
            say(out, f"stopped the monitor, {pids}; nothing left running")
    except KeyboardInterrupt:
        say(sys.stderr, "liqmon demo: interrupted during set-up; servers stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
