"""The API against its own OpenAPI document: fuzzed by schemathesis, wrong methods, coverage.

A real daemon with a book of positions serves; schemathesis reads
``/openapi.json`` from it and sends generated requests, valid and invalid, to
every operation, checking each answer (``--checks all``): no 5xx, every status,
content type, header and body as documented, invalid input refused, valid input
accepted, and a 401 without the token.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from fastapi.routing import APIRoute
from harness import http_get, running, settings_for
from test_http_api import seeded

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
TOKEN = "t0ken-for-the-fuzzer"
FUZZER_CONFIG = """
# Each parameter of /api/positions is valid alone, but at_risk=true with a status
# other than margin_call is a contradiction (a 400), which no OpenAPI schema of
# independent query parameters can express.
[[operations]]
include-path = "/api/positions"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404]

# price and move are each valid alone but exclusive, a price needs one symbol, and
# low must lie below high with at most 2000 buckets: no schema of independent
# parameters says so.
[[operations]]
include-path = "/api/stress"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 409]

[[operations]]
include-path = "/api/liquidation-map"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403]
# Independent random low, high and step mostly break those rules, so most generated
# queries are 400s, which schemathesis would warn about (validation_mismatch).
warnings = false
"""
API_PATHS = {
    "/api/positions",
    "/api/positions/{position_id}",
    "/api/events",
    "/api/symbols",
    "/api/stress",
    "/api/liquidation-map",
}


def send(url: str, method: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a ``method`` request to ``url``."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def test_schemathesis_finds_nothing_against_the_openapi_document(
    redis_url: str, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """Every check of schemathesis passes on every operation of a daemon with a book and a
    token: no server error, every answer as documented."""
    async with seeded(redis_url, mqtt_url, prefix, 300, token=TOKEN) as (daemon, _):
        url = f"http://127.0.0.1:{daemon.http.bound_port}/openapi.json"
        config = tmp_path / "schemathesis.toml"
        config.write_text(FUZZER_CONFIG, encoding="utf-8")
        fuzzer = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            url,
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--generation-database",
            "none",
            "--seed",
            "5",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(100):
            output, _ = await fuzzer.communicate()
    report = output.decode(errors="replace")
    assert 0 == fuzzer.returncode, report
    assert "Tested: 9" in report and "No issues found" in report, report


async def test_wrong_methods_are_405_with_allow_and_every_api_path_is_described(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """POST, PUT, DELETE, PATCH and HEAD on a GET path are a 405 naming GET in ``Allow``, as an
    error document; /openapi.json lists every API path with GET, and no docs UI is served."""
    async with running(settings_for(redis_url, mqtt_url, prefix)) as daemon:
        base = f"http://127.0.0.1:{daemon.http.bound_port}"
        answers = {
            (method, path): await asyncio.to_thread(send, f"{base}{path}", method)
            for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD")
            for path in ("/api/positions", "/api/positions/p-1", "/healthz", "/metrics", "/")
        }
        status, document, content_type = await http_get(daemon, "/openapi.json")
        docs = [(await http_get(daemon, path))[0] for path in ("/docs", "/redoc")]
    assert {405} == {status for status, _, _ in answers.values()}
    assert {"GET"} == {headers["Allow"] for _, headers, _ in answers.values()}
    _, headers, body = answers["POST", "/api/positions"]
    assert "application/json" == headers["Content-Type"]
    assert "nosniff" == headers["X-Content-Type-Options"]
    assert {"error": "method POST not allowed on /api/positions (allowed: GET)"} == orjson.loads(
        body
    )
    assert (200, "application/json") == (status, content_type)
    paths = document["paths"]
    served = {
        route.path_format
        for route in daemon.http.app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/api/")
    }
    assert API_PATHS == served
    assert API_PATHS | {"/healthz", "/readyz", "/metrics"} == set(paths)
    assert all(set(paths[path]) == {"get"} for path in API_PATHS)
    parameters = {p["name"]: p["schema"] for p in paths["/api/positions"]["get"]["parameters"]}
    assert ("integer", 1, 1000) == (
        parameters["limit"]["type"],
        parameters["limit"]["minimum"],
        parameters["limit"]["maximum"],
    )
    assert list(daemon.settings.symbols) == parameters["symbol"]["enum"]
    assert "422" not in paths["/api/positions"]["get"]["responses"]
    assert [404, 404] == docs
