"""The ``liqmon`` command line: run, calc, positions, watch, demo.

Every command reads the same TOML configuration (``--config``, default
``config/liqmon.toml``). Bad arguments exit with status 2 and one line on
stderr; a bad configuration names the file, key and problem.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from monitor.config import DEFAULT_PATH, Settings, load_settings
from monitor.errors import ConfigError, Rejection
from monitor.margin import Position, Side, assess, bankruptcy_price, liquidation_price, ratio_price
from monitor.status import Status, next_status
from monitor.wire import (
    MAX_DIGITS,
    check_name,
    decimal_str,
    in_range,
    load_json,
    position_from_object,
)

if TYPE_CHECKING:
    from monitor.console import LoadSummary


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"liqmon: error: {message}\n")
    raise SystemExit(2)


def _decimal_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    if not in_range(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range (at most {MAX_DIGITS} digits before or after the point)"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="liqmon", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="TOML configuration")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("run", help="run the monitor daemon")

    publish = commands.add_parser(
        "publish", help="publish the outbox's events (beside monitors with mqtt.publisher=separate)"
    )
    publish.add_argument(
        "--name",
        default="publisher",
        help="this publisher's name, distinct per process (client id {mqtt.client_id}-NAME)",
    )
    publish.add_argument(
        "--http-port", type=int, help="serve /healthz, /readyz and /metrics on this port"
    )

    calc = commands.add_parser("calc", help="liquidation, margin-call and bankruptcy prices")
    calc.add_argument("--symbol", required=True)
    calc.add_argument("--side", required=True, choices=[s.value for s in Side])
    calc.add_argument("--qty", required=True, type=_decimal_arg)
    calc.add_argument("--entry", required=True, type=_decimal_arg)
    calc.add_argument("--margin", required=True, type=_decimal_arg)
    calc.add_argument("--mark", type=_decimal_arg)

    positions = commands.add_parser("positions", help="load, list and show positions")
    actions = positions.add_subparsers(dest="action", required=True, parser_class=_Parser)
    load = actions.add_parser("load", help="bulk-load a JSON Lines file of positions")
    load.add_argument("file", type=Path)
    load.add_argument(
        "--batch",
        type=_positive_int,
        default=20_000,
        help="positions read, decided and committed together (per worker)",
    )
    load.add_argument(
        "--workers",
        type=_positive_int,
        help="processes loading in parallel, each a share of the position ids "
        "(default: one per CPU, at most 4, for files over 4 MiB; else 1)",
    )
    listing = actions.add_parser("list", help="positions, closest to liquidation first")
    listing.add_argument("--symbol")
    listing.add_argument(
        "--at-risk", action="store_true", help="only margin calls and liquidations"
    )
    listing.add_argument("--limit", type=int, default=50)
    show = actions.add_parser("show", help="one position, with its prices and state")
    show.add_argument("id")

    watch = commands.add_parser("watch", help="print events as they arrive")
    watch.add_argument("--account", default="+")
    watch.add_argument("--symbol", default="+")
    watch.add_argument(
        "--type", default="+", choices=["+", "margin_call", "margin_call_cleared", "liquidation"]
    )
    watch.add_argument("--json", action="store_true", help="one JSON event per line")
    watch.add_argument("--count", type=int, default=0, help="exit after this many events")

    replay = commands.add_parser("replay", help="publish recorded ticks to the price topics")
    replay.add_argument("file", type=Path, help="JSON Lines or CSV recording")
    replay.add_argument(
        "--speed", type=float, default=1.0, help="N× recorded pace; 0 = as fast as possible"
    )

    record = commands.add_parser("record", help="write the configured [[sources]] to a file")
    record.add_argument("file", type=Path, help="JSON Lines (.jsonl) or CSV (.csv)")
    record.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")

    demo = commands.add_parser("demo", help="local Redis and broker, seeded book, a crash")
    demo.add_argument("--positions", type=int, default=10_000)
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``liqmon`` command."""
    args = build_parser().parse_args(argv)
    from monitor import log

    log.configure()
    if args.command == "demo":
        from monitor.demo import run_demo

        raise SystemExit(run_demo(args))
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        _fail(str(error))
    if args.command == "calc":
        _calc(settings, args)
    elif args.command == "run":
        _run_daemon(_run(settings))
    elif args.command == "publish":
        try:
            check_name("--name", args.name)
        except Rejection as rejection:
            _fail(rejection.detail)
        _run_daemon(_publish(settings, args.name, args.http_port))
    elif args.command == "positions" and args.action == "load":
        _load(settings, args)
    elif args.command == "positions":
        asyncio.run(_positions(settings, args))
    elif args.command == "watch":
        asyncio.run(_watch(settings, args))
    elif args.command == "replay":
        from monitor.recording import replay

        if not args.file.exists():
            _fail(f"{args.file}: no such file")
        if args.speed < 0:
            _fail("--speed must not be negative")
        asyncio.run(replay(settings, args.file, args.speed or None))
    elif args.command == "record":
        from monitor.recording import record

        if not settings.sources:
            _fail(f"{settings.source}: no [[sources]] configured to record")
        asyncio.run(record(list(settings.sources), args.file, args.duration))


def _run_daemon(main: Coroutine[Any, Any, None]) -> None:
    """A long-running command on uvloop where it is installed (Linux and macOS wheels).

    uvloop takes about a fifth off every event-loop hop of a tick. The short
    switch interval bounds how long the loop waits for the GIL when the
    /metrics renderer runs in its thread (default 5 ms: half the p99 budget).
    """
    sys.setswitchinterval(0.001)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)
            return
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    except ConfigError as error:  # found once a server answered, e.g. Redis may evict
        _fail(str(error))


async def _run(settings: Settings) -> None:
    from monitor.daemon import Daemon

    # A process of its own: its long-lived heap may be frozen (see Daemon).
    daemon = Daemon(settings, list(settings.sources), freeze_heap_after_s=5.0)
    daemon.install_signal_handlers()
    await daemon.run()


async def _publish(settings: Settings, name: str, http_port: int | None) -> None:
    from monitor.daemon import PublisherDaemon

    publisher = PublisherDaemon(settings, name, http_port)
    publisher.install_signal_handlers()
    await publisher.run()


def _calc(settings: Settings, args: argparse.Namespace) -> None:
    contract = settings.symbols.get(args.symbol)
    if contract is None:
        _fail(f"unknown symbol {args.symbol!r}; configured: {', '.join(settings.symbols)}")
    position = Position(Side(args.side), args.qty, args.entry, args.margin)
    risk = settings.risk
    result: dict[str, Any] = {
        "symbol": args.symbol,
        "contract": contract.kind.value,
        "liquidation_price": _opt(liquidation_price(contract, position)),
        "bankruptcy_price": _opt(bankruptcy_price(contract, position)),
        "margin_call_price": _opt(ratio_price(contract, position, risk.margin_call_ratio)),
    }
    if args.mark is not None:
        try:
            state = assess(contract, position, args.mark)
        except ValueError as error:
            _fail(str(error))
        status = next_status(Status.HEALTHY, state, risk)
        result |= {
            "mark_price": decimal_str(args.mark),
            "notional": decimal_str(state.notional),
            "unrealized_pnl": decimal_str(state.unrealized_pnl),
            "maintenance_margin": decimal_str(state.maintenance_margin),
            "margin_balance": decimal_str(state.margin_balance),
            "margin_ratio": decimal_str(state.margin_ratio),
            "status": "liquidatable" if status is Status.LIQUIDATED else status.value,
        }
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


def _opt(value: Decimal | None) -> str | None:
    return decimal_str(value) if value is not None else None


def _load(settings: Settings, args: argparse.Namespace) -> None:
    """``positions load``: exit status 1 when a version could not be stored."""
    from monitor.console import load_positions

    if not args.file.exists():
        _fail(f"{args.file}: no such file")
    workers = args.workers or default_load_workers(args.file.stat().st_size)
    if workers == 1:
        _collect_less()
        summary = asyncio.run(load_positions(settings, _jsonl(args.file, settings), args.batch))
    else:
        summary = _load_in_parallel(settings, args.file, args.batch, workers)
    if summary.failed:
        raise SystemExit(1)


def _collect_less() -> None:
    """Tune the cyclic garbage collector for a bulk load.

    A position costs a few dozen short-lived objects and no reference cycles;
    with the default thresholds the collector runs every 700 allocations and
    keeps re-scanning every imported module's objects, about 15 % of a load's
    CPU. What exists now is frozen out of its scans, and it runs less often.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


PARALLEL_LOAD_BYTES = 4 << 20
"""Files smaller than this (about 25,000 positions) load in one process: starting
more costs about as long as loading them."""


def default_load_workers(size_bytes: int) -> int:
    """Worker processes for a file: one per usable CPU (at most 4: one Redis serves
    them all), or 1 for a small file."""
    if size_bytes < PARALLEL_LOAD_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cpus or 1))


def _load_in_parallel(settings: Settings, path: Path, batch: int, workers: int) -> LoadSummary:
    """Load ``path`` with ``workers`` processes, each taking the ids that hash to it.

    Every version of a position goes to the same worker, which applies them in
    file order like a single process does; each line is read by every worker
    but parsed, validated, dead-lettered or loaded by exactly one.
    """
    from monitor.console import REJECTIONS_SHOWN, LoadSummary

    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    applied = context.Array("q", workers, lock=False)
    tty = sys.stderr.isatty()
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_share_counts, initargs=(applied,)
    ) as pool:
        futures = [
            pool.submit(_load_share, settings, path, batch, share, workers)
            for share in range(workers)
        ]
        while wait(futures, timeout=0.5).not_done:
            if tty:
                total = sum(applied)
                rate = total / max(time.perf_counter() - started, 1e-9)
                sys.stderr.write(f"\rloaded {total:,} positions ({rate:,.0f}/s)")
        parts = [future.result() for future in futures]
    rejections = sorted(r for part in parts for r in part.first_rejections)[:REJECTIONS_SHOWN]
    summary = LoadSummary(
        applied=sum(part.applied for part in parts),
        ignored=sum(part.ignored for part in parts),
        rejected=sum(part.rejected for part in parts),
        events=sum(part.events for part in parts),
        seconds=time.perf_counter() - started,
        failed=sum(part.failed for part in parts),
        first_rejections=tuple(rejections),
    )
    lines = "".join(message + "\n" for _, message in rejections)
    sys.stderr.write(("\r" if tty else "") + lines + summary.report())
    return summary


_counts: Any = None
"""In a load worker: the shared applied counts, one slot per worker."""


def _share_counts(counts: Any) -> None:
    global _counts  # noqa: PLW0603 (set once per worker process)
    _counts = counts


def _load_share(settings: Settings, path: Path, batch: int, share: int, shares: int) -> LoadSummary:
    """One worker's part of a parallel load (runs in its own process)."""
    from monitor import log
    from monitor.console import load_positions

    log.configure()
    _collect_less()

    def count(applied: int) -> None:
        _counts[share] = applied

    lines = _jsonl(path, settings, share, shares)
    return asyncio.run(load_positions(settings, lines, batch, progress=False, on_batch=count))


async def _positions(settings: Settings, args: argparse.Namespace) -> None:
    from monitor.console import list_positions, show_position

    if args.action == "list":
        if args.symbol is not None and args.symbol not in settings.symbols:
            _fail(f"unknown symbol {args.symbol!r}; configured: {', '.join(settings.symbols)}")
        await list_positions(settings, args.symbol, args.at_risk, args.limit)
    elif not await show_position(settings, args.id):
        _fail(f"no position with id {args.id!r}")


def _jsonl(
    path: Path, settings: Settings, share: int = 0, shares: int = 1
) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, PositionUpdate or Rejection) for each non-blank line.

    With ``shares`` > 1, only the lines of share ``share``: those whose position
    id hashes to it (lines without a readable id belong to share 0).
    """
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                if share == 0:
                    yield number, line, Rejection("malformed_json", str(error))
                continue
            if shares > 1 and _share_of(obj, shares) != share:
                continue
            try:
                if isinstance(obj, dict):
                    # orjson reads numbers as floats; re-read exact decimals from the text.
                    obj = _exact(line, obj)
                yield number, line, position_from_object(obj, settings.symbols)
            except Rejection as rejection:
                yield number, line, rejection


def _share_of(obj: Any, shares: int) -> int:
    """The worker share a decoded line belongs to: by a hash of its position id."""
    position_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(position_id, str):
        return 0
    return zlib.crc32(position_id.encode("utf-8", "surrogatepass")) % shares


def _exact(line: bytes, obj: dict[str, Any]) -> dict[str, Any]:
    if float in map(type, obj.values()):  # orjson makes floats, never a subclass
        exact: dict[str, Any] = load_json(line, len(line))
        return exact
    return obj


async def _watch(settings: Settings, args: argparse.Namespace) -> None:
    from monitor.subscriber import watch

    for name, value in (("account", args.account), ("symbol", args.symbol)):
        if value != "+":
            try:
                check_name(name, value)
            except Rejection as rejection:
                _fail(rejection.detail)
    await watch(settings, args.account, args.symbol, args.type, as_json=args.json, count=args.count)
