"""``liqmon tiers import`` and ``liqmon tiers fetch``: venues' tier tables as liqmon TOML.

Both print ``[symbols.NAME]`` tables on stdout, to paste into (or ``include``
beside) the configuration; the reading and checking is
:mod:`monitor.config.tiers`. ``import`` reads a file holding a venue's response
body; ``fetch`` asks the venue's public endpoint (Binance's is signed: an API
key and secret, from the options or ``LIQMON_BINANCE_API_KEY`` and
``LIQMON_BINANCE_API_SECRET``). Every request has a deadline (``--timeout``,
the whole round trip, not just each read).

Exit status: 0 printed; 1 the document cannot be used (not the venue's format,
a table the venue's model refuses, a symbol it does not list) or the venue
answered an error; 2 bad arguments (a missing file or option); 3 the venue
could not be reached in time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from monitor.cli.main import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, CommandError
from monitor.config.tiers import (
    VENUES,
    TierDocumentError,
    check_model,
    contract_terms,
    load_document,
    margin_table_ids,
    parse_tables,
    render,
    symbol_table,
)
from monitor.core.errors import Rejection
from monitor.core.margin import ContractKind
from monitor.core.wire import check_name

if TYPE_CHECKING:
    import httpx

EPILOG = f"""exit status:
  0    the tables were printed
  {EXIT_FAILURE}    the document cannot be used (not the venue's format, a table the venue's
       model refuses, a symbol it does not list), or the venue answered an error
  {EXIT_USAGE}    bad arguments: a missing file, --contract-size, --taker-fee or API key
  {EXIT_UNREACHABLE}    (fetch) the venue could not be reached within --timeout"""

BASE_URLS = {
    ("binance", ContractKind.LINEAR): "https://fapi.binance.com",
    ("binance", ContractKind.INVERSE): "https://dapi.binance.com",
    ("bybit", ContractKind.LINEAR): "https://api.bybit.com",
    ("bybit", ContractKind.INVERSE): "https://api.bybit.com",
    ("okx", ContractKind.LINEAR): "https://www.okx.com",
    ("okx", ContractKind.INVERSE): "https://www.okx.com",
    ("gate", ContractKind.LINEAR): "https://api.gateio.ws/api/v4",
    ("gate", ContractKind.INVERSE): "https://api.gateio.ws/api/v4",
    ("hyperliquid", ContractKind.LINEAR): "https://api.hyperliquid.xyz",
}
"""Each venue's public REST origin (Gate's with its ``/api/v4`` prefix)."""

API_KEY_VARIABLE = "LIQMON_BINANCE_API_KEY"
API_SECRET_VARIABLE = "LIQMON_BINANCE_API_SECRET"
MAX_PAGES = 200
"""Bybit and Gate list every symbol in pages; more than this many is a venue gone wrong."""
GATE_PAGE = 100


def _symbol_arg(text: str) -> tuple[str, str]:
    """``NAME=VENUE_SYMBOL``, or ``VENUE_SYMBOL`` to keep the venue's name."""
    name, _, venue_symbol = text.partition("=")
    if not venue_symbol:
        name, venue_symbol = text, text
    try:
        check_name("--symbol NAME", name)
    except Rejection as rejection:
        raise argparse.ArgumentTypeError(rejection.detail) from None
    return name, venue_symbol


def _rate_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction from 0 to below 1")
    return value


def _size_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _url_arg(text: str) -> str:
    if urlsplit(text).scheme not in ("http", "https") or not urlsplit(text).hostname:
        raise argparse.ArgumentTypeError(f"{text!r} must be an http:// or https:// URL")
    return text


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def add_arguments(tiers: argparse.ArgumentParser) -> None:
    """``tiers import`` and ``tiers fetch`` under the ``tiers`` command's parser.

    They take no ``--config``: they read no configuration, they write some.
    """
    tiers.epilog = EPILOG
    tiers.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = tiers.add_subparsers(
        dest="action", required=True, parser_class=type(tiers), title="actions", metavar="ACTION"
    )

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    reading = action("import", "print [symbols.NAME] tables from a venue's response body")
    reading.add_argument(
        "file", type=Path, metavar="FILE", help="the JSON body the venue's endpoint returned"
    )
    asking = action("fetch", "print [symbols.NAME] tables from the venue's public endpoint")
    for sub in (reading, asking):
        sub.add_argument("--venue", required=True, choices=VENUES, help="whose format")
        sub.add_argument(
            "--symbol",
            action="append",
            type=_symbol_arg,
            default=[],
            metavar="NAME=VENUE_SYMBOL",
            help="a table to print, as liqmon's NAME (repeat; default: every symbol listed, "
            "under the venue's name)",
        )
        sub.add_argument(
            "--contract",
            choices=[kind.value for kind in ContractKind],
            help="linear or inverse (default: what the document says, else linear)",
        )
        sub.add_argument(
            "--contract-size",
            type=_size_arg,
            metavar="C",
            help="OKX ctVal, Gate quanto_multiplier, a COIN-M contract's USD size",
        )
        sub.add_argument(
            "--taker-fee",
            type=_rate_arg,
            metavar="F",
            help="taker fee rate added to the maintenance rate (required for okx and gate; "
            "binance: optional)",
        )
    asking.add_argument(
        "--base-url",
        type=_url_arg,
        metavar="URL",
        help="the venue's REST origin (default: its public one; tests point it home)",
    )
    asking.add_argument(
        "--timeout",
        type=_seconds_arg,
        metavar="S",
        default=10.0,
        help="seconds each request may take, whole (default: 10)",
    )
    asking.add_argument(
        "--api-key", metavar="K", help=f"binance: the API key (or {API_KEY_VARIABLE})"
    )
    asking.add_argument(
        "--api-secret", metavar="S", help=f"binance: the API secret (or {API_SECRET_VARIABLE})"
    )


def run(args: argparse.Namespace) -> None:
    """Print the tables ``args`` ask for on stdout (``CommandError`` on failure)."""
    kind = ContractKind(args.contract) if args.contract else None
    if args.action == "import":
        if not args.file.is_file():
            raise CommandError(f"{args.file}: no such file", EXIT_USAGE)
        origin = str(args.file)
        document = _document(args.file.read_bytes(), origin)
        header = f"# {args.venue} tier tables from {origin}, imported by liqmon tiers import"
    else:
        origin = f"{args.venue}'s response"
        document = asyncio.run(fetch_document(args, kind or ContractKind.LINEAR))
        taken = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        header = f"# {args.venue} tier tables fetched by liqmon tiers fetch at {taken}"
    sys.stdout.write(header + "\n\n" + emit(args, kind, document, origin))


def _document(body: bytes, origin: str) -> Any:
    try:
        return load_document(body, origin)
    except TierDocumentError as error:
        raise CommandError(str(error), EXIT_FAILURE) from None


def emit(args: argparse.Namespace, kind: ContractKind | None, document: Any, origin: str) -> str:
    """The TOML for the selected symbols of a decoded ``document``."""
    try:
        tables = parse_tables(args.venue, document)
    except TierDocumentError as error:
        raise CommandError(f"{origin}: {error}", EXIT_FAILURE) from None
    chosen: list[tuple[str, str]] = args.symbol or [(symbol, symbol) for symbol in tables]
    if not chosen:
        raise CommandError(f"{origin}: lists no {args.venue} symbol", EXIT_FAILURE)
    names = [name for name, _ in chosen]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CommandError(f"--symbol {twice[0]} is given twice", EXIT_USAGE)
    output: dict[str, Any] = {}
    comments: dict[str, str] = {}
    for name, venue_symbol in chosen:
        table = tables.get(venue_symbol)
        if table is None:
            listed = ", ".join(list(tables)[:10]) + (", ..." if len(tables) > 10 else "")
            raise CommandError(
                f"{origin}: no {venue_symbol!r}; it lists {listed or 'nothing'}", EXIT_FAILURE
            )
        if not args.symbol:
            try:
                check_name("symbol", name)
            except Rejection:
                raise CommandError(
                    f"{origin}: {venue_symbol!r} is not a liqmon symbol name; name it with "
                    f"--symbol NAME={venue_symbol}",
                    EXIT_USAGE,
                ) from None
        try:
            terms = contract_terms(table, kind, args.contract_size, args.taker_fee)
        except TierDocumentError as error:
            raise CommandError(str(error), EXIT_USAGE) from None
        try:
            check_model(name, table, terms)
        except TierDocumentError as error:
            raise CommandError(f"{origin}: {error}", EXIT_FAILURE) from None
        output[name] = symbol_table(table, terms)
        tiers = len(table.tiers)
        comments[name] = f"{venue_symbol} on {args.venue}, {tiers} tier{'s' if tiers > 1 else ''}"
    return render(output, comments)


# ---------------------------------------------------------------------------- fetch


async def fetch_document(args: argparse.Namespace, kind: ContractKind) -> Any:
    """The venue's response for the symbols asked, merged into one document of its format.

    Cancelling it is safe: it holds nothing but the HTTP client it closes.
    """
    import httpx

    base = (args.base_url or BASE_URLS.get((args.venue, kind)) or "").rstrip("/")
    if not base:
        raise CommandError(f"{args.venue} has no {kind.value} contracts", EXIT_USAGE)
    venue_symbols = [venue_symbol for _, venue_symbol in args.symbol]
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout) as client:
        requester = _Requester(client, args.timeout, args.venue)
        if args.venue == "binance":
            return await _fetch_binance(requester, args, kind, venue_symbols)
        if args.venue == "bybit":
            return await _fetch_bybit(requester, kind, venue_symbols)
        if args.venue == "okx":
            return await _fetch_okx(requester, venue_symbols)
        if args.venue == "gate":
            return await _fetch_gate(requester, kind, venue_symbols)
        return await _fetch_hyperliquid(requester)


class _Requester:
    """One request at a time, each under a deadline; failures become one-line errors."""

    def __init__(self, client: httpx.AsyncClient, timeout_s: float, venue: str) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.venue = venue

    async def __call__(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        query: str | None = None,
    ) -> Any:
        import httpx

        where = str(self.client.base_url).rstrip("/") + path
        url = f"{path}?{query}" if query is not None else path
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.client.request(
                    method, url, params=params, json=body, headers=headers
                )
        except (TimeoutError, httpx.TimeoutException):  # the deadline, or httpx's own per read
            raise CommandError(
                f"{self.venue} did not answer {method} {where} within {self.timeout_s:g} s "
                "(--timeout)",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.TransportError as error:
            reason = str(error) or type(error).__name__
            raise CommandError(
                f"cannot reach {self.venue} at {where} ({reason}); check the network or --base-url",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.HTTPError as error:  # the answer could not be read (decoding, redirects)
            reason = str(error) or type(error).__name__
            raise CommandError(f"{method} {where}: {reason}", EXIT_FAILURE) from None
        if response.status_code >= 400:
            raise CommandError(
                f"{method} {where} answered HTTP {response.status_code}: "
                f"{' '.join(response.text[:200].split())}",
                EXIT_FAILURE,
            )
        return _document(response.content, f"{method} {where}")


async def _fetch_binance(
    request: _Requester, args: argparse.Namespace, kind: ContractKind, symbols: list[str]
) -> Any:
    """``GET /fapi/v1/leverageBracket`` (or ``/dapi/v2`` for COIN-M), signed with HMAC SHA256.

    Binance's "SIGNED (TRADE, USER_DATA ...) Endpoint security": ``timestamp``
    and ``signature`` (the hex HMAC SHA256 of the query string under the secret)
    in the query, the key in the ``X-MBX-APIKEY`` header.
    """
    key = args.api_key or os.environ.get(API_KEY_VARIABLE)
    secret = args.api_secret or os.environ.get(API_SECRET_VARIABLE)
    if not key or not secret:
        raise CommandError(
            "Binance's leverageBracket endpoint is signed: pass --api-key and --api-secret "
            f"(or set {API_KEY_VARIABLE} and {API_SECRET_VARIABLE}); a read-only key will do",
            EXIT_USAGE,
        )
    path = "/fapi/v1/leverageBracket" if kind is ContractKind.LINEAR else "/dapi/v2/leverageBracket"
    params = {"timestamp": str(int(time.time() * 1000)), "recvWindow": "5000"}
    if len(symbols) == 1:
        params["symbol"] = symbols[0]
    query = urlencode(params)
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return await request(
        "GET", path, query=f"{query}&signature={signature}", headers={"X-MBX-APIKEY": key}
    )


async def _fetch_bybit(request: _Requester, kind: ContractKind, symbols: list[str]) -> Any:
    """``GET /v5/market/risk-limit`` for each symbol (or all), following ``nextPageCursor``."""
    rows: list[Any] = []
    asked: list[str | None] = [*symbols] or [None]
    for symbol in asked:
        cursor = ""
        for _ in range(MAX_PAGES):
            params = {"category": kind.value}
            if symbol is not None:
                params["symbol"] = symbol
            if cursor:
                params["cursor"] = cursor
            page = await request("GET", "/v5/market/risk-limit", params=params)
            result = page.get("result") if isinstance(page, dict) else None
            if not isinstance(result, dict) or page.get("retCode") != 0:
                return page  # not a page of rows: the parser names what it is
            listed = result.get("list")
            rows.extend(listed if isinstance(listed, list) else [])
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                break
        else:
            raise CommandError(f"bybit listed more than {MAX_PAGES} pages", EXIT_FAILURE)
    return {"retCode": 0, "retMsg": "OK", "result": {"category": kind.value, "list": rows}}


async def _fetch_okx(request: _Requester, families: list[str]) -> Any:
    """``GET /api/v5/public/position-tiers`` per instrument family, isolated swaps."""
    if not families:
        raise CommandError(
            "okx answers one instrument family per request: name them with --symbol "
            "(e.g. --symbol BTCUSDT=BTC-USDT)",
            EXIT_USAGE,
        )
    rows: list[Any] = []
    for family in families:
        params = {"instType": "SWAP", "tdMode": "isolated", "instFamily": family}
        page = await request("GET", "/api/v5/public/position-tiers", params=params)
        if not isinstance(page, dict) or str(page.get("code")) != "0":
            return page
        data = page.get("data")
        rows.extend(data if isinstance(data, list) else [])
    return {"code": "0", "msg": "", "data": rows}


async def _fetch_gate(request: _Requester, kind: ContractKind, contracts: list[str]) -> Any:
    """``GET /futures/{settle}/risk_limit_tiers``, per contract or every contract by pages."""
    path = f"/futures/{'usdt' if kind is ContractKind.LINEAR else 'btc'}/risk_limit_tiers"
    rows: list[Any] = []
    for contract in contracts:
        page = await request("GET", path, params={"contract": contract})
        if not isinstance(page, list):
            return page
        rows.extend(page)
    if contracts:
        return rows
    for number in range(MAX_PAGES):
        params = {"limit": str(GATE_PAGE), "offset": str(number * GATE_PAGE)}
        page = await request("GET", path, params=params)
        if not isinstance(page, list):
            return page
        rows.extend(page)
        if len(page) < GATE_PAGE:
            return rows
    raise CommandError(f"gate listed more than {MAX_PAGES} pages", EXIT_FAILURE)


async def _fetch_hyperliquid(request: _Requester) -> Any:
    """``POST /info {"type": "meta"}``, then each tiered margin table it refers to but lacks."""
    meta = await request("POST", "/info", body={"type": "meta"})
    for ident in margin_table_ids(meta):
        table = await request("POST", "/info", body={"type": "marginTable", "id": ident})
        meta.setdefault("marginTables", []).append([Decimal(ident), table])
    return meta
