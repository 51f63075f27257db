"""Only this server's own pages (and allow-listed ones) may read the book, over /api and /ws.

A web page open in the operator's browser must not read positions, neither
by opening ``/ws`` from its own origin (browsers let any page open a
websocket anywhere; the server sees its ``Origin``) nor through DNS rebinding
(its own name resolving to 127.0.0.1, so the request's ``Host`` is its name).
Every test runs a real daemon against real Redis and Mosquitto.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import replace

import orjson
import pytest
import websockets
from harness import running, settings_for
from websockets.asyncio.client import connect
from websockets.typing import Origin

from monitor.config.loading import parse_settings
from monitor.config.model import HttpSettings
from monitor.core.errors import ConfigError
from monitor.core.origins import Admission

ATTACKER = "https://attacker.example"


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` with extra headers (an explicit Host replaces urllib's): status, headers,
    body."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def feed_status(port: int, origin: str | None, host: str = "127.0.0.1") -> int:
    """Open ``/ws`` on 127.0.0.1:``port`` as a page from ``origin`` addressing ``host``:
    101 when the hello arrives, else the refusal's HTTP status."""
    try:
        async with connect(
            f"ws://{host}:{port}/ws",
            host="127.0.0.1",
            port=port,
            origin=Origin(origin) if origin else None,
            proxy=None,
            open_timeout=5,
        ) as feed:
            hello = orjson.loads(await asyncio.wait_for(feed.recv(), timeout=5))
            assert "hello" == hello["type"]
            return 101
    except websockets.exceptions.InvalidStatus as refused:
        return refused.response.status_code


async def test_a_foreign_origin_cannot_open_the_live_feed(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A page from attacker.example gets a 403 on /ws; the page's own origin gets the feed."""
    async with running(settings_for(redis_url, mqtt_url, prefix)) as daemon:
        port = daemon.http.bound_port
        assert port is not None
        own = await feed_status(port, f"http://127.0.0.1:{port}")
        by_name = await feed_status(port, f"http://localhost:{port}", host="localhost")
        no_origin = await feed_status(port, None)  # not a browser: nothing to protect against
        foreign = await feed_status(port, ATTACKER)
        other_port = await feed_status(port, f"http://127.0.0.1:{port + 1}")
        null = await feed_status(port, "null")
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/ws", origin=Origin(ATTACKER), proxy=None
            ) as feed:
                await feed.recv()
        except websockets.exceptions.InvalidStatus as refused:
            body = orjson.loads(refused.response.body or b"{}")
    assert (101, 101, 101) == (own, by_name, no_origin)
    assert (403, 403, 403) == (foreign, other_port, null)
    assert "origin 'https://attacker.example' is not allowed" in body["error"]
    assert "allowed_origins" in body["error"]


async def test_a_foreign_host_cannot_read_the_api_page_or_feed(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """DNS rebinding (Host: attacker.example) gets a 403 on /api, / and /ws; probes still answer."""
    async with running(settings_for(redis_url, mqtt_url, prefix)) as daemon:
        port = daemon.http.bound_port
        assert port is not None
        base = f"http://127.0.0.1:{port}"
        foreign = {"Host": f"attacker.example:{port}"}
        statuses = {
            path: (await asyncio.to_thread(fetch, f"{base}{path}", foreign))[0]
            for path in ("/api/positions", "/api/symbols", "/", "/healthz", "/readyz", "/metrics")
        }
        _, headers, body = await asyncio.to_thread(fetch, f"{base}/api/positions", foreign)
        own = [
            (await asyncio.to_thread(fetch, f"{base}/api/positions", {"Host": host}))[0]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}")
        ]
        feed = await feed_status(port, f"http://attacker.example:{port}", host="attacker.example")
    assert {
        "/api/positions": 403,
        "/api/symbols": 403,
        "/": 403,
        "/healthz": 200,
        "/readyz": 200,
        "/metrics": 200,
    } == statuses
    assert "application/json" == headers["Content-Type"]
    error = orjson.loads(body)["error"]
    assert "host 'attacker.example' is not allowed" in error and "allowed_hosts" in error
    assert [200, 200, 200, 200] == own
    assert 403 == feed


async def test_allow_listed_hosts_and_origins_work(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """With ``allowed_hosts`` and ``allowed_origins`` set, those names and origins get the book
    (and an allow-listed origin may read the API cross-origin); others stay refused."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    http = replace(
        settings.http,
        allowed_hosts=("liqmon.internal",),
        allowed_origins=("https://ops.example",),
    )
    async with running(replace(settings, http=http)) as daemon:
        port = daemon.http.bound_port
        assert port is not None
        base = f"http://127.0.0.1:{port}/api/symbols"
        named = await asyncio.to_thread(fetch, base, {"Host": f"liqmon.internal:{port}"})
        cross = await asyncio.to_thread(
            fetch, base, {"Host": f"liqmon.internal:{port}", "Origin": "https://ops.example"}
        )
        still_foreign = await asyncio.to_thread(fetch, base, {"Host": "attacker.example"})
        feed = await feed_status(port, "https://ops.example", host="liqmon.internal")
        foreign_feed = await feed_status(port, ATTACKER, host="liqmon.internal")
    assert 200 == named[0] and "Access-Control-Allow-Origin" not in named[1]
    assert 200 == cross[0]
    assert "https://ops.example" == cross[1]["Access-Control-Allow-Origin"]
    assert "Origin" == cross[1]["Vary"]
    assert 403 == still_foreign[0]
    assert (101, 403) == (feed, foreign_feed)


def test_the_config_reads_and_checks_the_allow_lists() -> None:
    """``[http] allowed_hosts`` and ``allowed_origins`` are read lower-cased; a malformed entry
    is one line naming the key."""
    base = {"symbols": {"BTCUSDT": {"contract": "linear", "brackets": [{"mmr": "0.004"}]}}}
    document = {
        **base,
        "http": {
            "allowed_hosts": ["Liqmon.Internal", "10.0.0.5"],
            "allowed_origins": ["https://Ops.Example", "http://grafana.lan:3000/"],
        },
    }
    http = parse_settings(document, "c.toml", {}).http
    assert ("liqmon.internal", "10.0.0.5") == http.allowed_hosts
    assert ("https://ops.example", "http://grafana.lan:3000") == http.allowed_origins
    assert ((), ()) == (HttpSettings().allowed_hosts, HttpSettings().allowed_origins)
    bad = [
        ({"allowed_origins": ["ops.example"]}, "http.allowed_origins[0]"),
        ({"allowed_origins": ["https://ops.example/path"]}, "http.allowed_origins[0]"),
        ({"allowed_origins": "https://ops.example"}, "http.allowed_origins"),
        ({"allowed_hosts": ["bad host"]}, "http.allowed_hosts[0]"),
        ({"allowed_hosts": ["liqmon.internal:8321"]}, "http.allowed_hosts[0]"),
    ]
    for http_doc, key in bad:
        with pytest.raises(ConfigError) as problem:
            parse_settings({**base, "http": http_doc}, "c.toml", {})
        assert str(problem.value).startswith(f"c.toml: {key}: "), problem.value
        assert "\n" not in str(problem.value)


def test_admission_rules() -> None:
    """Names must be local, the bind host or listed (IP literals pass: rebinding needs a
    name); an Origin must be the request's own host and port (a Host without a port
    implies the Origin's default port) or listed."""
    policy = Admission.build("0.0.0.0", ("liqmon.internal",), ("https://ops.example",))
    hosts = {
        "127.0.0.1:8321": True,
        "localhost": True,
        "LOCALHOST.:8321": True,
        "dash.localhost": True,
        "[::1]:8321": True,
        "10.0.0.5:8321": True,
        "liqmon.internal": True,
        "attacker.example": False,
        "liqmon.internal.attacker.example": False,
        "": False,
        "127.0.0.1:notaport": False,
    }
    seen = {host: policy.refusal(host, None) is None for host in hosts}
    origins = {
        "http://127.0.0.1:8321": True,
        "https://ops.example": True,
        "https://ops.example:443": True,
        "http://ops.example": False,
        "https://attacker.example": False,
        "null": False,
        "http://127.0.0.1:8322": False,
    }
    seen_origins = {origin: policy.refusal("127.0.0.1:8321", origin) is None for origin in origins}
    own_default_port = Admission.build("liqmon.internal", (), ())
    assert hosts == seen
    assert origins == seen_origins
    assert own_default_port.refusal("liqmon.internal", "http://liqmon.internal") is None
    assert own_default_port.refusal("liqmon.internal", "https://liqmon.internal") is None
    assert own_default_port.refusal("liqmon.internal", "http://liqmon.internal:8080") is not None
