"""The liqmon command line: run, publish, calc, positions, watch, replay, record, tiers, demo.

Every command but ``tiers`` reads the same TOML configuration (``--config FILE``,
before or after the command; default ``config/liqmon.toml``). A failure a user can meet
prints one line on stderr, saying what went wrong and what to do, and exits
with one of the documented statuses (:data:`EXIT_CODES`); :func:`explain` is
the one place that maps the exceptions behind them to that line and status.
An exception it does not know is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import multiprocessing
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from decimal import Decimal, InvalidOperation
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import orjson

from monitor.config.loading import DEFAULT_PATH, load_settings
from monitor.config.model import Settings
from monitor.core.errors import ConfigError, Rejection, RequestFailed, UsageError, leaves
from monitor.core.margin import Position, Side
from monitor.core.models import model_for
from monitor.core.status import Status, next_status
from monitor.core.wire import (
    MAX_DIGITS,
    check_name,
    decimal_str,
    in_range,
    load_json,
    position_from_object,
)

if TYPE_CHECKING:
    from monitor.core.position import PositionUpdate
    from monitor.service.loading import LoadSummary

EXIT_OK = 0
EXIT_FAILURE = 1
"""The command ran and failed: lines rejected, an unknown id, a port in use."""
EXIT_USAGE = 2
"""Bad arguments or a bad configuration: nothing was done."""
EXIT_UNREACHABLE = 3
"""Redis or the MQTT broker could not be reached."""
EXIT_INTERRUPTED = 130
"""Stopped with Ctrl-C (128 + SIGINT, as shells report it)."""
EXIT_BROKEN_PIPE = 141
"""The reader of stdout went away (``liqmon positions list | head``): 128 + SIGPIPE."""

EXIT_CODES = f"""exit status:
  {EXIT_OK}    success
  {EXIT_FAILURE}    failure: lines rejected, unknown position id, HTTP port in use, ...
  {EXIT_USAGE}    bad arguments or configuration
  {EXIT_UNREACHABLE}    Redis or the MQTT broker unreachable
  {EXIT_INTERRUPTED}  stopped with Ctrl-C"""


class CommandError(RequestFailed):
    """A failure a command found itself: the line to print and the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _fail(message: str) -> NoReturn:
    raise CommandError(message, EXIT_USAGE)


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


def _integer_arg(
    minimum: int, requirement: str, maximum: int | None = None
) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` (to ``maximum``), else ``requirement``
    says why."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text!r} {requirement}")
        return value

    return parse


_positive_int = _integer_arg(1, "must be a positive integer")
_count_arg = _integer_arg(0, "must not be negative")
_port_arg = _integer_arg(1, "must be a port number (1 to 65535)", 65535)


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, not negative")
    return value


def _version() -> str:
    try:
        return metadata.version("liqmon")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        from monitor import __version__

        return __version__


DAEMON_EPILOG = """It needs Redis ([redis] url) and the MQTT broker ([mqtt] url); the environment
overrides the file with LIQMON_REDIS_URL, LIQMON_MQTT_URL and LIQMON_HTTP_PORT.
While either is down it keeps retrying and reports not ready on /readyz.
SIGTERM or Ctrl-C stops it gracefully (exit status 0)."""

CONFIG_HELP = f"TOML configuration file (default: {DEFAULT_PATH}); before or after the command"


def _add_config(parser: argparse.ArgumentParser) -> None:
    """``--config`` after a command too; it overrides one given before the command."""
    parser.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=CONFIG_HELP
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(
        prog="liqmon",
        description="liqmon watches mark prices, keeps every position's margin state in Redis\n"
        "and publishes margin calls and liquidations to MQTT.",
        epilog=EXIT_CODES + "\n\n'liqmon COMMAND --help' describes a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_PATH, metavar="FILE", help=CONFIG_HELP
    )
    parser.add_argument("--version", action="version", version=f"liqmon {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="commands", metavar="COMMAND"
    )

    def command(name: str, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        _add_config(sub)
        return sub

    run = command("run", "run the monitor daemon (prices in, events out, HTTP API on [http] port)")
    run.epilog = DAEMON_EPILOG
    run.formatter_class = argparse.RawDescriptionHelpFormatter

    publish = command(
        "publish", "publish the outbox's events (beside monitors with mqtt.publisher=separate)"
    )
    publish.epilog = DAEMON_EPILOG
    publish.formatter_class = argparse.RawDescriptionHelpFormatter
    publish.add_argument(
        "--name",
        default="publisher",
        help="this publisher's name, distinct per process (client id {mqtt.client_id}-NAME)",
    )
    publish.add_argument(
        "--http-port", type=_port_arg, help="serve /healthz, /readyz and /metrics on this port"
    )

    calc = command("calc", "liquidation, margin-call and bankruptcy prices of one position")
    calc.add_argument("--symbol", required=True, help="a symbol of the configuration")
    calc.add_argument(
        "--side", required=True, choices=[s.value for s in Side], help="long or short"
    )
    calc.add_argument(
        "--qty",
        required=True,
        type=_decimal_arg,
        help="size in the venue's unit (base units; contracts on okx and gate, and if inverse)",
    )
    calc.add_argument("--entry", required=True, type=_decimal_arg, help="entry price")
    funds = calc.add_mutually_exclusive_group(required=True)
    funds.add_argument(
        "--margin",
        type=_decimal_arg,
        help="isolated margin as the symbol's venue reports it (settlement currency)",
    )
    funds.add_argument(
        "--leverage", type=_decimal_arg, help="derive the isolated margin the venue's way"
    )
    calc.add_argument("--mark", type=_decimal_arg, help="also assess the position at this mark")

    positions = command("positions", "load, list and show positions; declare them reloaded")
    actions = positions.add_subparsers(
        dest="action", required=True, parser_class=_Parser, title="actions", metavar="ACTION"
    )
    load = command("load", "bulk-load a JSON Lines file of positions", actions)
    load.add_argument("file", type=Path, help="JSON Lines, one position per line")
    load.add_argument(
        "--batch",
        type=_positive_int,
        default=LOAD_BATCH,
        help=f"positions read, decided and committed together, per worker (default: {LOAD_BATCH})",
    )
    load.add_argument(
        "--workers",
        type=_positive_int,
        help="processes loading in parallel, each a share of the position ids "
        "(default: one per CPU, at most 4, for files over 4 MiB; else 1)",
    )
    listing = command(
        "list", "open positions, closest to liquidation first (as GET /api/positions)", actions
    )
    listing.add_argument("--symbol", help="only this symbol's positions")
    selection = listing.add_mutually_exclusive_group()
    selection.add_argument("--at-risk", action="store_true", help="only positions in margin call")
    selection.add_argument(
        "--status",
        choices=[s.value for s in Status],
        help="only positions in this status (default: the open ones, healthy and margin_call)",
    )
    listing.add_argument(
        "--limit", type=_positive_int, default=50, help="show at most this many (default: 50)"
    )
    listing.add_argument(
        "--json", action="store_true", help="print the JSON document GET /api/positions answers"
    )
    show = command("show", "one position as JSON, with its prices and state", actions)
    show.add_argument("id", help="the position's id")
    command(
        "reloaded",
        "declare the book loaded again after Redis lost its data (monitors become ready)",
        actions,
    )

    watch = command("watch", "print events as they arrive (Ctrl-C to stop)")
    watch.add_argument("--account", default="+", help="only this account's events")
    watch.add_argument("--symbol", default="+", help="only this symbol's events")
    watch.add_argument(
        "--type",
        default="+",
        choices=["+", "margin_call", "margin_call_cleared", "liquidation", "funding_applied"],
        help="only events of this type (default: + = any)",
    )
    watch.add_argument("--json", action="store_true", help="one JSON event per line")
    watch.add_argument(
        "--count", type=_count_arg, default=0, help="exit after this many events (0: never)"
    )

    replay = command("replay", "publish recorded ticks to the price topics")
    replay.add_argument("file", type=Path, help="JSON Lines or CSV recording")
    replay.add_argument(
        "--speed",
        type=_seconds_arg,
        default=1.0,
        help="N times the recorded pace; 0 = as fast as possible (default: 1)",
    )

    record = command("record", "write the configured [[sources]] ticks to a file")
    record.add_argument("file", type=Path, help="JSON Lines (.jsonl) or CSV (.csv)")
    record.add_argument(
        "--duration", type=_seconds_arg, default=0, help="seconds; 0 = until Ctrl-C"
    )

    from monitor.cli.tiers import add_arguments as add_tiers_arguments

    tiers = command("tiers", "tier tables in a venue's own format, as [symbols.NAME] TOML")
    add_tiers_arguments(tiers)

    from monitor.cli import alerts as alerts_cli

    alerts_cli.register(command, _Parser)

    from monitor.cli import stress as stress_cli

    stress_cli.register(command)

    demo = command("demo", "local Redis and broker, a seeded book, a market crash")
    demo.add_argument(
        "--positions", type=_positive_int, default=10_000, help="positions to seed (default: 10000)"
    )
    demo.add_argument("--duration", type=_seconds_arg, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the book and market")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``liqmon`` command."""
    settings: Settings | None = None
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        from monitor.telemetry import log

        log.configure()
        if args.command == "demo":
            from monitor.devtools.demo import run_demo

            raise SystemExit(run_demo(args))
        if args.command == "tiers":  # needs no configuration
            from monitor.cli.tiers import run as run_tiers

            run_tiers(args)
            sys.stdout.flush()
            return
        settings = load_settings(args.config)
        _dispatch(settings, args)
        sys.stdout.flush()  # here, so a reader gone away is explained like any failure
    except BaseException as error:  # explain() re-raises what it does not know
        known = explain(error, settings, getattr(args, "command", None))
        if known is None:
            raise
        line, status = known
        if line:
            sys.stderr.write(f"liqmon: error: {line}\n")
        raise SystemExit(status) from None


def _dispatch(settings: Settings, args: argparse.Namespace) -> None:
    if args.command == "calc":
        _calc(settings, args)
    elif args.command == "run":
        _run_daemon(_run(settings))
    elif args.command == "publish":
        check_name("--name", args.name)
        _run_daemon(_publish(settings, args.name, args.http_port))
    elif args.command == "positions" and args.action == "load":
        _load(settings, args)
    elif args.command == "positions" and args.action == "reloaded":
        _reloaded(settings)
    elif args.command == "positions":
        asyncio.run(_positions(settings, args))
    elif args.command == "watch":
        asyncio.run(_watch(settings, args))
    elif args.command == "alerts":
        from monitor.cli import alerts as alerts_cli

        alerts_cli.dispatch(settings, args)
    elif args.command in ("stress", "map"):
        from monitor.cli import stress as stress_cli

        stress_cli.dispatch(settings, args)
    elif args.command == "replay":
        from monitor.cli.recording import replay

        if not args.file.exists():
            _fail(f"{args.file}: no such file")
        asyncio.run(replay(settings, args.file, args.speed or None))
    elif args.command == "record":
        from monitor.cli.recording import record

        if not settings.sources:
            _fail(f"{settings.source}: no [[sources]] configured to record")
        asyncio.run(record(list(settings.sources), args.file, args.duration))


# -- known failures: one line and an exit status -------------------------------


def explain(
    error: BaseException, settings: Settings | None, command: str | None = None
) -> tuple[str | None, int] | None:
    """The line (None: stay quiet) and exit status of a failure users meet; None for a bug.

    ``settings`` (once loaded) and ``command`` make the line name what to change.

    An exception group (a TaskGroup's) is explained by its first leaf when every
    leaf is known: one unknown leaf keeps the whole traceback.
    """
    known = [_explain_one(leaf, settings, command) for leaf in leaves(error)]
    if not known or any(outcome is None for outcome in known):
        return None
    interrupted = [outcome for outcome in known if outcome and outcome[1] == EXIT_INTERRUPTED]
    return interrupted[0] if interrupted else known[0]


def _explain_one(
    error: BaseException, settings: Settings | None, command: str | None
) -> tuple[str | None, int] | None:
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError
    from redis import exceptions as redis_errors

    from monitor.bus.protocol import MqttError
    from monitor.web.api import ApiError

    if isinstance(error, SystemExit):
        return None
    if isinstance(error, CommandError):
        return error.message, error.status
    if isinstance(error, KeyboardInterrupt):
        return None, EXIT_INTERRUPTED
    if isinstance(error, Rejection):  # an argument checked like an input (a --name)
        return error.detail, EXIT_USAGE
    if isinstance(error, UsageError):  # the configuration (file, environment) to fix
        return str(error), EXIT_USAGE
    if isinstance(error, ApiError):
        hint = "; 'liqmon positions list' shows the ids" if error.status == 404 else ""
        return error.message + hint, EXIT_FAILURE if error.status == 404 else EXIT_USAGE
    if isinstance(error, redis_errors.AuthenticationError):
        return (
            f"Redis at {_where(settings, 'redis')} refused the credentials ({_reason(error)}): "
            f"fix the user:password of {_setting(settings, '[redis] url', 'LIQMON_REDIS_URL')}",
            EXIT_USAGE,
        )
    redis_down = (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.ClusterDownError,
        redis_errors.SlotNotCoveredError,
        redis_errors.RedisClusterException,
    )
    if isinstance(error, redis_down):
        return (
            f"cannot reach Redis at {_where(settings, 'redis')} ({_reason(error)}): start it, "
            f"or point {_setting(settings, '[redis] url', 'LIQMON_REDIS_URL')} at it",
            EXIT_UNREACHABLE,
        )
    if isinstance(error, MqttConnectError):
        return (
            f"the MQTT broker at {_where(settings, 'mqtt')} refused the connection ({error}): "
            f"check the user:password of {_setting(settings, '[mqtt] url', 'LIQMON_MQTT_URL')}",
            EXIT_USAGE,
        )
    if isinstance(error, aiomqtt.MqttError | MqttError):
        return (
            f"cannot reach the MQTT broker at {_where(settings, 'mqtt')} ({_reason(error)}): "
            f"start it, or point {_setting(settings, '[mqtt] url', 'LIQMON_MQTT_URL')} at it",
            EXIT_UNREACHABLE,
        )
    if isinstance(error, BrokenPipeError):
        # Whatever is still buffered for the closed pipe must not fail again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None, EXIT_BROKEN_PIPE
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        address = re.search(r"\('([^']*)', (\d+)\)", str(error))
        where = f"{address[1]}:{address[2]}" if address else "the HTTP port"
        setting = (
            "--http-port"
            if command == "publish"
            else _setting(settings, "[http] port", "LIQMON_HTTP_PORT")
        )
        return (
            f"cannot listen on {where}: the address is already in use; stop the process "
            f"holding it, or choose another port ({setting})",
            EXIT_FAILURE,
        )
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}", EXIT_FAILURE
    return None


def _setting(settings: Settings | None, key: str, variable: str) -> str:
    """Where a value came from, to fix it there: the environment variable if set, else the file."""
    if os.environ.get(variable):
        return variable
    source = settings.source if settings is not None else "the configuration"
    return f"{key} in {source} (or {variable})"


def _where(settings: Settings | None, service: str) -> str:
    """host:port of Redis or the broker (never the credentials the URL may carry)."""
    if settings is None:
        return "the configured address"
    url = urlsplit(settings.redis.url if service == "redis" else settings.mqtt.url)
    if url.hostname is None:  # unix:///path/to/redis.sock
        return url.path
    return f"{url.hostname}:{url.port}" if url.port else url.hostname


def _reason(error: BaseException) -> str:
    """The cause in a few words: ``Connection refused`` rather than redis-py's sentence."""
    text = str(error)
    match = re.search(r"(?:\[Errno \d+\] |Error \d+ connecting to \S+ )(.+?)\.?$", text)
    if match:
        text = match[1]
    if "Connect call failed" in text or "Connection refused" in text:
        return "connection refused"
    return text.rstrip(".") or type(error).__name__


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
    from monitor.service.daemon import Daemon

    # A process of its own: its long-lived heap may be frozen (see Daemon).
    daemon = Daemon(settings, list(settings.sources), freeze_heap_after_s=5.0)
    daemon.install_signal_handlers()
    await daemon.run()


async def _publish(settings: Settings, name: str, http_port: int | None) -> None:
    from monitor.service.daemon import PublisherDaemon

    publisher = PublisherDaemon(settings, name, http_port)
    publisher.install_signal_handlers()
    await publisher.run()


def _calc(settings: Settings, args: argparse.Namespace) -> None:
    contract = settings.symbols.get(args.symbol)
    if contract is None:
        _fail(f"unknown symbol {args.symbol!r}; configured: {', '.join(settings.symbols)}")
    model = model_for(contract)
    result: dict[str, Any] = {
        "symbol": args.symbol,
        "venue": model.venue,
        "contract": contract.kind.value,
    }
    margin = args.margin
    if margin is None:
        margin = model.isolated_margin(args.qty, args.entry, args.leverage)
        result["margin"] = decimal_str(margin)
    position = Position(Side(args.side), args.qty, args.entry, margin)
    risk = settings.risk
    result |= {
        "liquidation_price": _opt(model.liquidation_price(position)),
        "bankruptcy_price": _opt(model.bankruptcy_price(position)),
        "margin_call_price": _opt(model.margin_call_price(position, risk.margin_call_ratio)),
    }
    if args.mark is not None:
        state = model.assess(position, args.mark)
        status = next_status(Status.HEALTHY, state, risk)
        result |= {
            "mark_price": decimal_str(args.mark),
            "notional": decimal_str(state.notional),
            "unrealized_pnl": decimal_str(state.unrealized_pnl),
            "maintenance_margin": decimal_str(state.maintenance_margin),
            "margin_balance": decimal_str(state.margin_balance),
            "margin_ratio": decimal_str(state.margin_ratio),
            "venue_ratio": decimal_str(state.venue_ratio),
            "status": "liquidatable" if status is Status.LIQUIDATED else status.value,
        }
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


def _opt(value: Decimal | None) -> str | None:
    return decimal_str(value) if value is not None else None


def _load(settings: Settings, args: argparse.Namespace) -> None:
    """``positions load``: exit status 1 when a line was rejected or a version not stored."""
    from monitor.service.loading import REJECTIONS_SHOWN, load_positions

    if not args.file.exists():
        _fail(f"{args.file}: no such file")
    workers = args.workers or default_load_workers(args.file.stat().st_size)
    if workers == 1:
        _collect_less()
        summary = asyncio.run(load_positions(settings, _jsonl(args.file, settings), args.batch))
    else:
        summary = _load_in_parallel(settings, args.file, args.batch, workers)
    problems = []
    if summary.rejected:
        lines = "line was" if summary.rejected == 1 else "lines were"
        listed = (
            "listed" if summary.rejected <= REJECTIONS_SHOWN else f"the first {REJECTIONS_SHOWN}"
        )
        problems.append(
            f"{summary.rejected:,} {lines} rejected ({listed} above, all in the dead-letter "
            "stream): fix them and load them again"
        )
    if summary.failed:
        problems.append(f"{summary.failed:,} positions could not be stored (see the log)")
    if problems:
        raise CommandError("; ".join(problems))
    from monitor.service.loading import mark_reloaded

    epoch, marked = asyncio.run(mark_reloaded(settings))
    if marked and epoch is not None:
        sys.stderr.write(
            f"Redis lost its data before this load: generation {epoch.generation} marked "
            "reloaded; monitors report ready again\n"
        )


def _reloaded(settings: Settings) -> None:
    """``positions reloaded``: the book lost with Redis's data is loaded again (by a
    position source answering the re-sync request, or by hand)."""
    from monitor.service.loading import mark_reloaded

    epoch, marked = asyncio.run(mark_reloaded(settings))
    if epoch is None:
        raise CommandError(
            "Redis holds no epoch: no liqmon process has started on it since it was "
            "emptied; start 'liqmon run' (it notices a loss while running)"
        )
    if marked:
        sys.stdout.write(
            f"generation {epoch.generation} marked reloaded; monitors report ready again\n"
        )
    else:
        sys.stdout.write(
            f"nothing to do: Redis's data has not been lost since generation "
            f"{epoch.generation} began\n"
        )


def _collect_less() -> None:
    """Tune the cyclic garbage collector for a bulk load.

    A position costs a few dozen short-lived objects and no reference cycles;
    with the default thresholds the collector runs every 700 allocations and
    keeps re-scanning every imported module's objects, about 15 % of a load's
    CPU. What exists now is frozen out of its scans, and it runs less often.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


LOAD_BATCH = 100_000
"""Positions a load worker reads, decides and commits together: each symbol's share of a
batch costs its own two script calls, so a large batch over many symbols costs Redis
less per position."""

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
    from monitor.service.loading import REJECTIONS_SHOWN, LoadSummary

    started = time.perf_counter()
    # Forked, where the platform can: a worker then starts with this process's
    # modules and settings (a spawned one imports everything again); nothing
    # here holds a thread, a lock or a connection yet.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
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
    from monitor.service.loading import load_positions
    from monitor.telemetry import log

    log.configure()
    _collect_less()

    def count(applied: int) -> None:
        _counts[share] = applied

    lines = _jsonl(path, settings, share, shares)
    return asyncio.run(load_positions(settings, lines, batch, progress=False, on_batch=count))


async def _positions(settings: Settings, args: argparse.Namespace) -> None:
    from monitor.cli.positions import list_positions, show_position
    from monitor.web.api import positions_query

    if args.action == "show":
        await show_position(settings, args.id)
        return
    if args.symbol is not None and args.symbol not in settings.symbols:
        _fail(f"unknown symbol {args.symbol!r}; configured: {', '.join(settings.symbols)}")
    query = positions_query(
        list(settings.symbols),
        symbol=args.symbol,
        status=Status(args.status) if args.status else None,
        at_risk=args.at_risk,
        limit=args.limit,
    )
    await list_positions(settings, query, args.json)


def _jsonl(
    path: Path, settings: Settings, share: int = 0, shares: int = 1
) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, PositionUpdate or Rejection) for each non-blank line.

    With ``shares`` > 1, only the lines of share ``share``: those whose position
    id hashes to it (lines without a readable id belong to share 0).
    """
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                if not line.strip():  # blank: asked only when it does not decode
                    continue
                if share == 0:
                    yield number, line, Rejection("malformed_json", str(error))
                continue
            if shares > 1 and _share_of(obj, shares) != share:
                continue
            try:
                yield number, line, _position(line, obj, settings)
            except Rejection as rejection:
                yield number, line, rejection


def _share_of(obj: Any, shares: int) -> int:
    """The worker share a decoded line belongs to: by a hash of its position id."""
    position_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(position_id, str):
        return 0
    return zlib.crc32(position_id.encode("utf-8", "surrogatepass")) % shares


def _position(line: bytes, obj: Any, settings: Settings) -> PositionUpdate:
    """The position on a decoded line; raises its Rejection.

    orjson reads a JSON number with a fraction or an exponent as a float, and
    no field takes a float (each refuses one), so a line holding one is always
    refused at first: it is then judged again read with exact decimals, which
    is what it is judged on. Lines without one are decoded once.
    """
    try:
        return position_from_object(obj, settings.symbols)
    except Rejection:
        if isinstance(obj, dict) and float in map(type, obj.values()):  # never a subclass
            return position_from_object(load_json(line, len(line)), settings.symbols)
        raise


async def _watch(settings: Settings, args: argparse.Namespace) -> None:
    from monitor.cli.watch import watch

    for name, value in (("account", args.account), ("symbol", args.symbol)):
        if value != "+":
            check_name(name, value)
    await watch(settings, args.account, args.symbol, args.type, as_json=args.json, count=args.count)
