"""``liqmon alerts``: run the alert forwarder, or send a route's dead letters again.

    liqmon alerts [--name NAME] [--http-port PORT]   forward events through [[alerts.routes]]
    liqmon alerts retry ROUTE                        send ROUTE's dead letters again

Errors are explained by :func:`monitor.cli.main.explain` like every command's:
a route's secret missing from the environment or an unknown route is a
configuration problem (exit 2), Redis or the broker unreachable exit 3,
dead letters still failing exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from collections.abc import Callable
from typing import Any

from monitor.cli.main import CommandError, _integer_arg, _run_daemon
from monitor.config.model import Settings

_port_or_any = _integer_arg(0, "must be a port number (0: any free one, to 65535)", 65535)

ALERTS_EPILOG = """Each route reads the broker through a persistent session of its own (client id
{mqtt.client_id}-alerts-NAME-ROUTE) and acknowledges an event only once its sink
accepted it or it was dead-lettered. Secrets come from the environment variables
the routes' *_env keys name. SIGTERM or Ctrl-C stops it (exit status 0)."""


def register(command: Callable[..., argparse.ArgumentParser], parser_class: type[Any]) -> None:
    """Add ``alerts`` and ``alerts retry`` with ``command`` (main's helper)."""
    alerts = command(
        "alerts", "forward events and price alerts to webhooks, chat, e-mail and PagerDuty"
    )
    alerts.epilog = ALERTS_EPILOG
    alerts.formatter_class = argparse.RawDescriptionHelpFormatter
    alerts.add_argument(
        "--name",
        default="alerts",
        help="this forwarder's name, distinct per process (client ids "
        "{mqtt.client_id}-alerts-NAME-ROUTE; default: alerts)",
    )
    alerts.add_argument(
        "--http-port",
        type=_port_or_any,
        help="serve /healthz, /readyz and /metrics on this port (default: [alerts] http_port)",
    )
    actions = alerts.add_subparsers(
        dest="alerts_action", parser_class=parser_class, title="actions", metavar="ACTION"
    )
    retry = command("retry", "send a route's dead letters again, oldest first", actions)
    retry.add_argument("route", help="the route's name ([[alerts.routes]] name)")


def dispatch(settings: Settings, args: argparse.Namespace) -> None:
    """Run the command ``args`` names (exit 1 when dead letters are still failing)."""
    if getattr(args, "alerts_action", None) == "retry":
        from monitor.alerts.forwarder import retry_route

        delivered, failing = asyncio.run(retry_route(settings, args.route))
        sys.stdout.write(f"{args.route}: {delivered} delivered, {len(failing)} still failing\n")
        for line in failing:
            sys.stdout.write(f"  {line}\n")
        if failing:
            raise CommandError(f"{args.route}: {len(failing)} dead letters still failing")
        return
    _run_daemon(_forward(settings, args.name, args.http_port))


async def _forward(settings: Settings, name: str, http_port: int | None) -> None:
    from monitor.alerts.forwarder import Forwarder

    forwarder = Forwarder(settings, name, http_port)
    forwarder.install_signal_handlers()
    try:
        await forwarder.run()
    except* OSError as errors:
        taken = [
            error
            for error in errors.exceptions
            if isinstance(error, OSError) and error.errno == errno.EADDRINUSE
        ]
        if not taken:
            raise
        where = forwarder.http.host, forwarder.http.port
        raise CommandError(
            f"cannot listen on {where[0]}:{where[1]}: the address is already in use; stop the "
            f"process holding it, or choose another port (--http-port, or [alerts] http_port "
            f"in {settings.source})"
        ) from None
