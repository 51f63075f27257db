"""`liqmon tiers import` and `liqmon tiers fetch`, run as the installed command.

`fetch` asks a real HTTP server on a free local port that answers the venues'
endpoints with the venue files (``--base-url`` points the command at it), so
the requests, their parameters and Binance's signature are checked as a venue
would check them. Errors are one stderr line and a documented exit status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from monitor.cli.main import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE
from monitor.devtools.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
VENUES = REPO / "config" / "venues"
LIQMON = Path(sys.executable).parent / "liqmon"
BINANCE = str(VENUES / "binance-usdm-leverageBracket.json")
BYBIT = str(VENUES / "bybit-inverse-risk-limit.json")
HYPERLIQUID = str(VENUES / "hyperliquid-meta.json")
KEY, SECRET = "test-key", "test-secret"


def liqmon(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed command from the repository root, without LIQMON_ settings."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    return subprocess.run(
        [str(LIQMON), *args],
        cwd=REPO,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tiers(arguments: str, *more: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``liqmon tiers`` with ``arguments`` (split at spaces), then ``more`` as they are."""
    return liqmon("tiers", *arguments.split(), *more, **env)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command, without a traceback."""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def symbols(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``[symbols.NAME]`` tables a successful command printed."""
    assert 0 == done.returncode, done.stderr
    parsed: dict[str, Any] = tomllib.loads(done.stdout)["symbols"]
    return parsed


Route = Callable[[str, dict[str, list[str]], Any, bytes], tuple[int, Any]]


@dataclass
class Venue:
    """A local HTTP server answering venue endpoints; records every request it is asked."""

    url: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    asked: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, method: str, path: str, route: Route) -> None:
        """Answer ``method path`` with ``route(path, query, headers, body)``."""
        self.routes[(method, path)] = route


@pytest.fixture
def venue() -> Iterator[Venue]:
    """A venue server on a free local port, stopped after the test."""
    port = free_port()
    server_venue = Venue(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            server_venue.asked.append((method, parts.path, query))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            route = server_venue.routes.get((method, parts.path))
            if route is None:
                status, document = 404, {"message": f"no route {method} {parts.path}"}
            else:
                status, document = route(parts.query, query, self.headers, body)
            payload = document if isinstance(document, bytes) else json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on what was asked instead."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="venue-server", daemon=True)
    thread.start()
    try:
        yield server_venue
    finally:
        server_venue.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------- import


def test_import_prints_the_shipped_binance_tables() -> None:
    """Every symbol of the file, as ``[symbols.NAME]`` with venue and today's brackets."""
    printed = symbols(tiers("import --venue binance", BINANCE))
    assert ["BTCUSDT", "ETHUSDT", "SOLUSDT"] == list(printed)
    assert "binance" == printed["BTCUSDT"]["venue"]
    first = printed["BTCUSDT"]["brackets"][0]
    assert {"notional_cap": "50000", "mmr": "0.004", "cum": "0"} == first


def test_import_prints_the_shipped_gate_table_with_its_fee() -> None:
    """Gate's tiers keep their deductions; the contract size and taker fee given are written."""
    done = tiers(
        "import --venue gate --contract-size 0.0001 --taker-fee 0.00075",
        str(VENUES / "gate-usdt-risk_limit_tiers.json"),
    )
    table = symbols(done)["BTC_USDT"]
    assert ("0.0001", "0.00075") == (table["contract_size"], table["taker_fee_rate"])
    assert {"risk_limit": "2000000", "maintenance_rate": "0.02", "deduction": "10835"} == (
        table["tiers"][5]
    )


def test_import_renames_the_symbols_asked_for() -> None:
    """``--symbol NAME=VENUE_SYMBOL`` prints only those, under liqmon's names."""
    printed = symbols(tiers("import --venue hyperliquid --symbol BTC-PERP=BTC", HYPERLIQUID))
    expected = {
        "venue": "hyperliquid",
        "contract": "linear",
        "tiers": [{"lower_bound": "0", "max_leverage": 50}],
    }
    assert {"BTC-PERP": expected} == printed


def test_import_needs_no_configuration_file(tmp_path: Path) -> None:
    """The command reads no configuration: it runs from a directory without one."""
    done = subprocess.run(
        [str(LIQMON), "tiers", "import", "--venue", "bybit", BYBIT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert {
        "venue": "bybit",
        "contract": "inverse",
        "contract_size": "1",
        "tiers": [{"risk_limit_value": "150", "mmr": "0.005", "mm_deduction": "0"}],
    } == symbols(done)["BTCUSD"]


def test_import_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A file that does not exist: one line, status 2."""
    done = tiers("import --venue okx", str(tmp_path / "none.json"))
    assert EXIT_USAGE == done.returncode
    assert one_line(done).endswith("none.json: no such file")


def test_import_of_another_venues_file_names_the_expected_format() -> None:
    """Bybit's response read as OKX's: one line saying what was expected, status 1."""
    done = tiers("import --venue okx --contract-size 0.01", BYBIT)
    assert EXIT_FAILURE == done.returncode
    assert "not an OKX position-tiers response" in one_line(done)


def test_import_names_the_bracket_that_breaks_the_recurrence(tmp_path: Path) -> None:
    """A maintenance amount off Binance's recurrence: the symbol and bracket, status 1."""
    document = json.loads((VENUES / "binance-usdm-leverageBracket.json").read_text())
    document[2]["brackets"][3]["cum"] = 8000
    path = tmp_path / "brackets.json"
    path.write_text(json.dumps(document))
    done = tiers("import --venue binance", str(path))
    assert EXIT_FAILURE == done.returncode
    line = one_line(done)
    assert "SOLUSDT: bracket 4: cum is 8000, but notionalFloor" in line
    assert "is 8380" in line


def test_import_of_a_symbol_the_file_lacks_lists_what_it_has() -> None:
    """A venue symbol not in the file: what the file lists, status 1."""
    done = tiers("import --venue binance --symbol XRPUSDT", BINANCE)
    assert EXIT_FAILURE == done.returncode
    assert one_line(done).endswith("no 'XRPUSDT'; it lists BTCUSDT, ETHUSDT, SOLUSDT")


def test_import_of_a_bad_symbol_name_is_a_usage_error() -> None:
    """A liqmon name with a character topics cannot carry: argparse's line, status 2."""
    done = tiers("import --venue binance --symbol BTC/USDT=BTCUSDT", BINANCE)
    assert EXIT_USAGE == done.returncode
    assert "--symbol NAME 'BTC/USDT' must be" in one_line(done)


def test_import_of_okx_tiers_needs_the_taker_fee(tmp_path: Path) -> None:
    """OKX adds the taker fee to its maintenance rate: without --taker-fee, status 2."""
    path = tmp_path / "okx.json"
    path.write_text(
        json.dumps(
            {
                "code": "0",
                "msg": "",
                "data": [
                    {
                        "instFamily": "BTC-USDT",
                        "instId": "",
                        "uly": "BTC-USDT",
                        "tier": "1",
                        "minSz": "0",
                        "maxSz": "2000",
                        "mmr": "0.004",
                        "imr": "0.008",
                        "maxLever": "125",
                    }
                ],
            }
        )
    )
    done = tiers("import --venue okx --contract-size 0.01", str(path))
    assert EXIT_USAGE == done.returncode
    assert one_line(done).startswith("liqmon: error: okx BTC-USDT: --taker-fee is required")


def test_import_of_one_name_twice_is_a_usage_error() -> None:
    """Two tables under one liqmon name: refused before anything is printed, status 2."""
    done = tiers("import --venue binance --symbol A=BTCUSDT --symbol A=ETHUSDT", BINANCE)
    assert EXIT_USAGE == done.returncode
    assert "--symbol A is given twice" in one_line(done)
    assert "" == done.stdout


def test_import_of_not_json_names_the_file(tmp_path: Path) -> None:
    """A body that is not JSON: the file and why, status 1."""
    path = tmp_path / "page.html"
    path.write_text("<html>502 Bad Gateway</html>")
    done = tiers("import --venue gate --contract-size 1", str(path))
    assert EXIT_FAILURE == done.returncode
    assert "page.html: not JSON" in one_line(done)


# ---------------------------------------------------------------------------- fetch


def binance_route() -> Route:
    """leverageBracket, answered only for a request signed with the test key and secret."""
    body = json.loads((VENUES / "binance-usdm-leverageBracket.json").read_text())

    def route(raw: str, query: dict[str, list[str]], headers: Any, _: bytes) -> Any:
        signed, _, signature = raw.rpartition("&signature=")
        expected = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if headers.get("X-MBX-APIKEY") != KEY or signature != expected:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        if "symbol" in query:
            return 200, next(row for row in body if row["symbol"] == query["symbol"][0])
        return 200, body

    return route


def test_fetch_binance_signs_the_request_and_prints_the_tables(venue: Venue) -> None:
    """A signed request (key header, HMAC of the query) gets the brackets, printed as TOML."""
    venue.answer("GET", "/fapi/v1/leverageBracket", binance_route())
    done = tiers(
        "fetch --venue binance --symbol ETHUSDT --base-url",
        venue.url,
        LIQMON_BINANCE_API_KEY=KEY,
        LIQMON_BINANCE_API_SECRET=SECRET,
    )
    printed = symbols(done)
    assert ["ETHUSDT"] == list(printed)
    assert {"mmr": "0.5", "cum": "280506450"} == printed["ETHUSDT"]["brackets"][-1]
    assert done.stdout.startswith("# binance tier tables fetched by liqmon tiers fetch at ")
    [(method, path, query)] = venue.asked
    assert ("GET", "/fapi/v1/leverageBracket", ["ETHUSDT"]) == (method, path, query["symbol"])


def test_fetch_coin_m_asks_the_dapi_v2_brackets(venue: Venue) -> None:
    """--contract inverse asks COIN-M's /dapi/v2/leverageBracket; quantities are in coin."""
    body = [{"symbol": "BTCUSD_PERP", "brackets": [
        {"bracket": 1, "initialLeverage": 125, "qtyCap": 5, "qtyFloor": 0,
         "maintMarginRatio": 0.004, "cum": 0.0},
        {"bracket": 2, "initialLeverage": 100, "qtyCap": 10, "qtyFloor": 5,
         "maintMarginRatio": 0.005, "cum": 0.005}]}]  # fmt: skip
    venue.answer("GET", "/dapi/v2/leverageBracket", lambda raw, query, headers, _: (200, body))
    done = tiers(
        "fetch --venue binance --contract inverse --contract-size 100 --symbol BTCUSD=BTCUSD_PERP "
        f"--api-key {KEY} --api-secret {SECRET} --base-url",
        venue.url,
    )
    assert {
        "venue": "binance",
        "contract": "inverse",
        "contract_size": "100",
        "brackets": [
            {"notional_cap": "5", "mmr": "0.004", "cum": "0"},
            {"mmr": "0.005", "cum": "0.005"},
        ],
    } == symbols(done)["BTCUSD"]
    assert [("GET", "/dapi/v2/leverageBracket")] == [(m, p) for m, p, _ in venue.asked]


def test_fetch_binance_with_a_wrong_secret_reports_binances_answer(venue: Venue) -> None:
    """Binance refusing the signature: its status and message, status 1."""
    venue.answer("GET", "/fapi/v1/leverageBracket", binance_route())
    done = tiers(
        "fetch --venue binance --base-url", venue.url, "--api-key", KEY, "--api-secret", "wrong"
    )
    assert EXIT_FAILURE == done.returncode
    assert "answered HTTP 401" in one_line(done)
    assert "Invalid API-key" in one_line(done)


def test_fetch_binance_without_keys_says_the_endpoint_is_signed(venue: Venue) -> None:
    """No key or secret: nothing is asked; one line naming both ways to give them, status 2."""
    done = tiers("fetch --venue binance --base-url", venue.url)
    assert EXIT_USAGE == done.returncode
    assert "signed: pass --api-key and --api-secret (or set LIQMON_BINANCE_API_KEY" in one_line(
        done
    )
    assert [] == venue.asked


def test_fetch_bybit_follows_the_page_cursor(venue: Venue) -> None:
    """Every page of risk limits is asked for, with the category, and printed together."""
    first = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "linear",
            "list": [
                {
                    "id": 1,
                    "symbol": "BTCUSDT",
                    "riskLimitValue": "2000000",
                    "maintenanceMargin": "0.005",
                    "initialMargin": "0.01",
                    "isLowestRisk": 1,
                    "maxLeverage": "100.00",
                    "mmDeduction": "",
                },
            ],
            "nextPageCursor": "page2",
        },
    }
    second = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "linear",
            "list": [
                {
                    "id": 1,
                    "symbol": "ETHUSDT",
                    "riskLimitValue": "1000000",
                    "maintenanceMargin": "0.005",
                    "initialMargin": "0.01",
                    "isLowestRisk": 1,
                    "maxLeverage": "100.00",
                    "mmDeduction": "",
                },
            ],
            "nextPageCursor": "",
        },
    }
    venue.answer(
        "GET",
        "/v5/market/risk-limit",
        lambda raw, query, headers, body: (200, second if query.get("cursor") else first),
    )
    printed = symbols(tiers("fetch --venue bybit --base-url", venue.url))
    assert ["BTCUSDT", "ETHUSDT"] == list(printed)
    assert [{"category": ["linear"]}, {"category": ["linear"], "cursor": ["page2"]}] == [
        query for _, _, query in venue.asked
    ]


def test_fetch_okx_asks_each_family_for_isolated_swaps(venue: Venue) -> None:
    """One request per instrument family, isolated swap tiers, printed under liqmon's names."""
    rows = {
        "BTC-USDT": [
            {
                "instFamily": "BTC-USDT",
                "instId": "",
                "uly": "BTC-USDT",
                "tier": "1",
                "minSz": "0",
                "maxSz": "2000",
                "mmr": "0.004",
                "imr": "0.008",
                "maxLever": "125",
            }
        ],
        "ETH-USDT": [
            {
                "instFamily": "ETH-USDT",
                "instId": "",
                "uly": "ETH-USDT",
                "tier": "1",
                "minSz": "0",
                "maxSz": "5000",
                "mmr": "0.005",
                "imr": "0.01",
                "maxLever": "100",
            }
        ],
    }
    venue.answer(
        "GET",
        "/api/v5/public/position-tiers",
        lambda raw, query, headers, body: (
            200,
            {"code": "0", "msg": "", "data": rows[query["instFamily"][0]]},
        ),
    )
    done = tiers(
        "fetch --venue okx --symbol BTCUSDT=BTC-USDT --symbol ETHUSDT=ETH-USDT "
        "--contract-size 0.01 --taker-fee 0.0005 --base-url",
        venue.url,
    )
    printed = symbols(done)
    assert [{"min_size": "0", "max_size": "5000", "mmr": "0.005"}] == printed["ETHUSDT"]["tiers"]
    assert "0.0005" == printed["BTCUSDT"]["taker_fee_rate"]
    assert [
        {"instType": ["SWAP"], "tdMode": ["isolated"], "instFamily": ["BTC-USDT"]},
        {"instType": ["SWAP"], "tdMode": ["isolated"], "instFamily": ["ETH-USDT"]},
    ] == [query for _, _, query in venue.asked]


def test_fetch_gate_pages_through_every_contract(venue: Venue) -> None:
    """Without --symbol every contract's tiers are read page by page until a short page."""
    full = [
        {
            "tier": n,
            "risk_limit": str(1000 * n),
            "initial_rate": "0.01",
            "maintenance_rate": "0.005",
            "leverage_max": "100",
            "contract": f"C{n}_USDT",
            "deduction": "0",
        }
        for n in range(1, 101)
    ]
    last = [
        {
            "tier": 1,
            "risk_limit": "500000",
            "initial_rate": "0.01",
            "maintenance_rate": "0.005",
            "leverage_max": "100",
            "contract": "BTC_USDT",
            "deduction": "0",
        }
    ]
    venue.answer(
        "GET",
        "/futures/usdt/risk_limit_tiers",
        lambda raw, query, headers, body: (200, full if query["offset"] == ["0"] else last),
    )
    done = tiers("fetch --venue gate --contract-size 0.0001 --taker-fee 0 --base-url", venue.url)
    printed = symbols(done)
    assert 101 == len(printed)
    assert [{"risk_limit": "500000", "maintenance_rate": "0.005", "deduction": "0"}] == (
        printed["BTC_USDT"]["tiers"]
    )
    assert [["0"], ["100"]] == [query["offset"] for _, _, query in venue.asked]


def test_fetch_hyperliquid_asks_for_the_margin_tables_meta_lacks(venue: Venue) -> None:
    """meta first, then each tiered margin table it refers to but does not hold."""
    meta = {
        "universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 40, "marginTableId": 56}],
        "marginTables": [],
    }
    table = {
        "description": "tiered 40x",
        "marginTiers": [
            {"lowerBound": "0.0", "maxLeverage": 40},
            {"lowerBound": "150000000.0", "maxLeverage": 20},
        ],
    }
    bodies: list[Any] = []

    def info(raw: str, query: Any, headers: Any, body: bytes) -> tuple[int, Any]:
        request = json.loads(body)
        bodies.append(request)
        return 200, meta if request["type"] == "meta" else table

    venue.answer("POST", "/info", info)
    printed = symbols(tiers("fetch --venue hyperliquid --base-url", venue.url))
    expected = [
        {"lower_bound": "0", "max_leverage": 40},
        {"lower_bound": "150000000", "max_leverage": 20},
    ]
    assert expected == printed["BTC"]["tiers"]
    assert [{"type": "meta"}, {"type": "marginTable", "id": 56}] == bodies


def test_fetch_from_a_venue_nobody_answers_is_unreachable() -> None:
    """Nothing listening: one line naming the address, status 3."""
    url = f"http://127.0.0.1:{free_port()}"
    done = tiers("fetch --venue hyperliquid --base-url", url)
    assert EXIT_UNREACHABLE == done.returncode
    assert one_line(done).startswith(f"liqmon: error: cannot reach hyperliquid at {url}/info")


def test_fetch_from_a_venue_that_never_answers_stops_at_the_deadline(venue: Venue) -> None:
    """A venue that holds the request: given up after --timeout, status 3."""

    def hold(raw: str, query: Any, headers: Any, body: bytes) -> tuple[int, Any]:
        venue.release.wait()
        return 200, {}

    venue.answer("POST", "/info", hold)
    done = tiers("fetch --venue hyperliquid --base-url", venue.url, "--timeout", "0.5")
    assert EXIT_UNREACHABLE == done.returncode
    assert "did not answer POST" in one_line(done)
    assert "within 0.5 s (--timeout)" in one_line(done)


def test_fetch_of_a_venue_error_page_reports_the_status(venue: Venue) -> None:
    """An HTTP error answer that is not JSON: the status and the start of the body, status 1."""
    venue.answer(
        "GET",
        "/v5/market/risk-limit",
        lambda raw, query, headers, body: (502, b"<html>\n<h1>502 Bad Gateway</h1>\n</html>"),
    )
    done = tiers("fetch --venue bybit --base-url", venue.url)
    assert EXIT_FAILURE == done.returncode
    assert "answered HTTP 502: <html> <h1>502 Bad Gateway</h1> </html>" in one_line(done)


def test_fetch_from_a_base_url_that_is_not_one_is_a_usage_error() -> None:
    """--base-url must be an http(s) URL: argparse's line, status 2, nothing asked."""
    done = tiers("fetch --venue bybit --base-url ftp://example.invalid")
    assert EXIT_USAGE == done.returncode
    assert "'ftp://example.invalid' must be an http:// or https:// URL" in one_line(done)


def test_fetch_okx_without_a_family_is_a_usage_error() -> None:
    """OKX answers one family per request: without --symbol nothing is asked, status 2."""
    done = tiers("fetch --venue okx --contract-size 0.01")
    assert EXIT_USAGE == done.returncode
    assert "name them with --symbol" in one_line(done)
