"""``liqmon stress`` and ``liqmon map``: what liquidates at a price, and where, from the CLI.

The same reads and figures as ``GET /api/stress`` and ``GET /api/liquidation-map``
(:mod:`monitor.web.stress`), printed as lines or, with ``--json``, as the
document the endpoint answers. A refused query is the endpoint's 400 message
(exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson

from monitor.config.model import Settings


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``stress`` and ``map`` with ``command`` (main's helper)."""
    stress = command("stress", "what liquidates, and what it costs, if the mark goes to a price")
    stress.add_argument(
        "--symbol",
        help="a symbol, or several separated by commas with --move (default: every one)",
    )
    at = stress.add_mutually_exclusive_group(required=True)
    at.add_argument("--price", help="the price to stress at (one symbol)")
    at.add_argument("--move", help="the move from each mark: -0.1 is 10 %% down")
    stress.add_argument("--json", action="store_true", help="print GET /api/stress's document")

    mapping = command("map", "open positions by liquidation price, in buckets [low, high)")
    mapping.add_argument("--symbol", required=True, help="a symbol of the configuration")
    mapping.add_argument("--low", required=True, help="the lowest price mapped")
    mapping.add_argument("--high", required=True, help="the end of the range (excluded)")
    mapping.add_argument("--step", required=True, help="the width of a bucket")
    mapping.add_argument(
        "--json", action="store_true", help="print GET /api/liquidation-map's document"
    )


def dispatch(settings: Settings, args: argparse.Namespace) -> None:
    """Run ``stress`` or ``map``."""
    if args.command == "stress":
        document = asyncio.run(_stress(settings, args))
        _print(document, args.json, _stress_lines)
    else:
        document = asyncio.run(_map(settings, args))
        _print(document, args.json, _map_lines)


async def _stress(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from monitor.service.loading import open_read_model
    from monitor.web.api import Api
    from monitor.web.stress import stress_documents, stress_query

    query = stress_query(list(settings.symbols), args.symbol, args.price, args.move)
    reads = open_read_model(settings)
    try:
        api = Api(reads, settings.symbols, risk=settings.risk)
        return {"stress": await stress_documents(api, query)}
    finally:
        await reads.aclose()


async def _map(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from monitor.service.loading import open_read_model
    from monitor.web.api import Api, check_symbol
    from monitor.web.stress import map_document, parse_price

    symbol = check_symbol(args.symbol, list(settings.symbols))
    low, high = parse_price("low", args.low), parse_price("high", args.high)
    step = parse_price("step", args.step)
    reads = open_read_model(settings)
    try:
        api = Api(reads, settings.symbols, risk=settings.risk)
        return await map_document(api, symbol, low, high, step)
    finally:
        await reads.aclose()


def _print(
    document: dict[str, Any], as_json: bool, lines: Callable[[dict[str, Any]], list[str]]
) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for line in lines(document):
        sys.stdout.write(line + "\n")


def _stress_lines(document: dict[str, Any]) -> list[str]:
    """One block per symbol: the price, then liquidated, margin call and shortfall."""
    lines = []
    for item in document["stress"]:
        liquidated, called = item["liquidated"], item["margin_call"]
        lines += [
            f"{item['symbol']} at {item['price']} (mark {item['mark'] or '-'})",
            f"  liquidated   {liquidated['count']:>9,}  notional {liquidated['notional']}"
            f"  margin {liquidated['margin']}",
            f"  margin call  {called['count']:>9,}  notional {called['notional']}",
            f"  shortfall    {item['shortfall']}",
        ]
    return lines


MAP_COLUMNS = ("low", "high", "longs", "long_notional", "shorts", "short_notional")


def _map_lines(document: dict[str, Any]) -> list[str]:
    """A table of the buckets that hold a position, lowest first."""
    rows = [list(MAP_COLUMNS)] + [
        [
            bucket["low"],
            bucket["high"],
            str(bucket["long"]["count"]),
            bucket["long"]["notional"],
            str(bucket["short"]["count"]),
            bucket["short"]["notional"],
        ]
        for bucket in document["buckets"]
        if bucket["long"]["count"] or bucket["short"]["count"]
    ]
    widths = [max(len(row[n]) for row in rows) for n in range(len(MAP_COLUMNS))]
    table = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    shown = len(rows) - 1
    return [
        *table,
        f"({shown} of {len(document['buckets'])} buckets hold a position;"
        f" mark {document['mark'] or '-'})",
    ]
