"""The HTTP API against a real daemon, Redis and Mosquitto: ordering, filters, 400s, 404s, events.

Expected orderings are computed here by brute force over every stored
record, so the API's index walk is checked against the plain definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from harness import (
    http_get,
    mqtt_client,
    nodes_holding,
    position_object,
    publish,
    redis_url_of,
    running,
    settings_for,
    settled,
    stored_positions,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.core.margin import ContractKind, Side
from monitor.core.status import Status
from monitor.core.view import describe
from monitor.service.daemon import Daemon
from monitor.state.keys import Keys
from monitor.web import api as api_module
from monitor.web.api import PositionsQuery, distance

MARKS = {"BTCUSDT": Decimal(64000), "ETHUSDT": Decimal(3400), "BTCUSD": Decimal(64000)}
ACCOUNTS = [f"acct-{n}" for n in range(12)]


def make_positions(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Positions over three symbols, leverage 3–60x, entries ±4% around the mark.

    At the opening marks some start in margin call and a few are liquidated on arrival.
    """
    rng = random.Random(seed)
    positions = []
    symbols = list(MARKS)
    for n in range(count):
        symbol = symbols[n % len(symbols)]
        mark = MARKS[symbol]
        side = rng.choice(("long", "short"))
        leverage = Decimal(rng.randint(3, 60))
        entry = (mark * Decimal(rng.randint(9600, 10400)) / 10000).quantize(Decimal("0.1"))
        if symbol == "BTCUSD":
            qty = Decimal(rng.randint(1, 500))
            margin = (qty * 100 / entry / leverage).quantize(Decimal("1e-8"))
        else:
            qty = (Decimal(rng.randint(1, 3000)) / 1000).quantize(Decimal("0.001"))
            margin = (qty * entry / leverage).quantize(Decimal("0.01"))
        positions.append(
            position_object(
                f"p-{n}",
                account=ACCOUNTS[n % len(ACCOUNTS)],
                symbol=symbol,
                side=side,
                qty=str(qty),
                entry_price=str(entry),
                margin=str(margin),
            )
        )
    return positions


@contextlib.asynccontextmanager
async def seeded(
    redis_url: str,
    mqtt_url: str,
    prefix: str,
    count: int,
    cluster: bool = False,
    token: str | None = None,
    **changes: Any,
) -> AsyncIterator[tuple[Daemon, Any]]:
    """A running daemon with marks and ``count`` positions stored; yields it and an MQTT client.

    With ``cluster``, ``redis_url`` is a Redis Cluster's, over whose nodes the symbols spread;
    with ``token``, the HTTP endpoint requires it; ``changes`` replace settings.
    """
    settings = settings_for(redis_url, mqtt_url, prefix, cluster, **changes)
    settings = replace(settings, http=replace(settings.http, token=token))
    if cluster:
        assert len(nodes_holding(redis_url, [Keys(prefix).positions(s) for s in MARKS])) > 1
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        for symbol, mark in MARKS.items():
            await publish(client, f"{prefix}/prices/{symbol}/index", {"price": str(mark), "ts": 1})
            await publish(client, f"{prefix}/prices/{symbol}/mark", {"price": str(mark), "ts": 1})
        for symbol in MARKS:
            await settled(daemon, symbol, 1)
        positions = make_positions(count)
        for start in range(0, count, 1000):
            await publish(client, f"{prefix}/positions", positions[start : start + 1000])
        for symbol in MARKS:
            await stored_positions(daemon, symbol, sum(p["symbol"] == symbol for p in positions))
        yield daemon, client


async def brute_force(
    daemon: Daemon, symbols: list[str]
) -> list[tuple[Decimal, str, dict[str, Any]]]:
    """Every stored position with its exact distance, closest first (None last)."""
    rows = []
    for symbol in symbols:
        contract = daemon.settings.symbols[symbol]
        quote = await daemon.store.quote(symbol)
        assert quote is not None
        for record in await daemon.store.all_records(symbol):
            document = describe(contract, record, quote)
            liq = document["liquidation_price"]
            exact = distance(record.side, quote.mark, Decimal(liq)) if liq else Decimal("Infinity")
            rows.append((exact, record.id, document))
    rows.sort(key=lambda row: row[0])
    return rows


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_positions_listing_is_the_exact_closest_set_with_filters(
    request: pytest.FixtureRequest, mqtt_url: str, prefix: str, cluster: bool
) -> None:
    """/api/positions equals a brute-force ordering over every record, for each filter."""
    redis_url = redis_url_of(request, cluster)
    async with seeded(redis_url, mqtt_url, prefix, 1500, cluster) as (daemon, _):
        everything = await brute_force(daemon, list(MARKS))
        open_rows = [r for r in everything if r[2]["status"] in ("healthy", "margin_call")]
        assert any(r[2]["status"] == "margin_call" for r in open_rows)

        for limit in (1, 7, 50, 300):  # 300: several pages of one trigger set
            status, body, _ = await http_get(daemon, f"/api/positions?limit={limit}")
            assert status == 200
            assert [r[1] for r in open_rows[:limit]] == [p["id"] for p in body["positions"]]
            assert body["count"] == limit and body["complete"] is True

        status, body, _ = await http_get(daemon, "/api/positions?symbol=ETHUSDT&limit=20")
        expected = [r[1] for r in open_rows if r[2]["symbol"] == "ETHUSDT"][:20]
        assert [p["id"] for p in body["positions"]] == expected

        status, body, _ = await http_get(daemon, "/api/positions?account=acct-3&limit=15")
        expected = [r[1] for r in open_rows if r[2]["account"] == "acct-3"][:15]
        assert [p["id"] for p in body["positions"]] == expected

        status, body, _ = await http_get(daemon, "/api/positions?at_risk=true&limit=1000")
        expected = [r[1] for r in open_rows if r[2]["status"] == "margin_call"]
        assert [p["id"] for p in body["positions"]] == expected
        assert {p["status"] for p in body["positions"]} == {"margin_call"}

        status, body, _ = await http_get(
            daemon, "/api/positions?status=healthy&symbol=BTCUSD&limit=10"
        )
        expected = [
            r[1] for r in open_rows if r[2]["status"] == "healthy" and r[2]["symbol"] == "BTCUSD"
        ][:10]
        assert [p["id"] for p in body["positions"]] == expected

        liquidated = [r[1] for r in everything if r[2]["status"] == "liquidated"]
        status, body, _ = await http_get(daemon, "/api/positions?status=liquidated&limit=1000")
        assert liquidated, "some positions are liquidated on arrival"
        assert sorted(liquidated) == sorted(p["id"] for p in body["positions"])

        row = open_rows[0][2]
        status, one, _ = await http_get(daemon, f"/api/positions/{row['id']}")
        assert (200, row) == (status, one)


async def test_account_filter_reports_an_incomplete_walk(
    redis_url: str, mqtt_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account that matches none of the closest positions exhausts the budget: complete=false."""
    async with seeded(redis_url, mqtt_url, prefix, 600) as (daemon, _):
        monkeypatch.setattr(api_module, "FILTER_BUDGET", 20)
        status, body, _ = await http_get(
            daemon, "/api/positions?account=nobody&symbol=BTCUSDT&limit=5"
        )
        assert (200, [], False) == (status, body["positions"], body["complete"])


async def test_the_walk_pages_through_equal_trigger_prices(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """300 identical longs share one trigger score across many pages; the three of another
    account, last in Redis' order, are still found, and nothing is read twice."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    same = {"symbol": "BTCUSDT", "side": "long", "qty": "0.1", "entry_price": "64000"}
    positions = [
        {**same, "id": f"p-{n:03}", "account": "acct-x", "margin": "640", "seq": 1}
        for n in range(300)
    ] + [
        {**same, "id": f"p-z{n}", "account": "acct-y", "margin": "640", "seq": 1} for n in range(3)
    ]
    async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "64000", "ts": 1})
        await settled(daemon, "BTCUSDT", 1)
        await publish(client, f"{prefix}/positions", positions)
        await stored_positions(daemon, "BTCUSDT", len(positions))
        status, body, _ = await http_get(daemon, "/api/positions?account=acct-y&limit=3")
        assert (200, True) == (status, body["complete"])
        assert ["p-z0", "p-z1", "p-z2"] == sorted(p["id"] for p in body["positions"])
        # Equal distances never satisfy the stop rule early: the walk reads every page once.
        api = daemon.http.api
        assert api is not None
        reads: list[str] = []
        read = api._read

        async def counted(contract: Any, ids: Any, quote: Any) -> Any:
            reads.extend(ids)
            return await read(contract, ids, quote)

        api._read = counted  # type: ignore[method-assign]
        query = PositionsQuery(("BTCUSDT",), account="acct-x", limit=40)
        listing = await api.positions(query)
        assert (40, True) == (len(listing.rows), listing.complete)
        assert (303, 303) == (len(reads), len(set(reads)))


async def test_bad_requests_are_400_and_unknown_ids_404(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Every malformed parameter gets a 400 naming the problem; unknown ids and paths a 404."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with running(settings) as daemon:
        cases = {
            "/api/positions?limit=0": "limit must be an integer from 1 to 1000",
            "/api/positions?limit=abc": "limit must be an integer",
            "/api/positions?limit=1001": "limit must be an integer from 1 to 1000",
            "/api/positions?limit=-5": "limit must be an integer",
            "/api/positions?symbol=DOGEUSDT": "unknown symbol 'DOGEUSDT'",
            "/api/positions?status=zombie": "status must be one of healthy, margin_call",
            "/api/positions?at_risk=maybe": "at_risk must be true or false",
            "/api/positions?at_risk=true&status=healthy": "at_risk=true lists positions in margin",
            "/api/positions?colour=red": "unknown parameter 'colour'",
            "/api/positions?limit=5&limit=6": "parameter 'limit' given more than once",
            "/api/positions?account=" + "a" * 65: "account must be at most 64 characters",
            "/api/events?type=explosion": "type must be one of",
            "/api/events?limit=100000": "limit must be an integer from 1 to 1000",
            "/api/symbols?x=1": "unknown parameter 'x' (expected: none)",
            "/api/positions/p-1?x=1": "unknown parameter 'x'",
        }
        for path, message in cases.items():
            status, body, content_type = await http_get(daemon, path)
            assert (400, "application/json") == (status, content_type), path
            assert message in body["error"], (path, body)
        for path in ("/api/positions/nope", "/api/positions/p%2F1", "/api/nothing", "/nothing"):
            status, body, _ = await http_get(daemon, path)
            assert 404 == status, path
            assert "error" in body
        status, body, _ = await http_get(daemon, "/api/positions?symbol=&account=&limit=")
        assert (200, []) == (status, body["positions"])


async def test_events_appear_after_a_liquidation(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A crash liquidates longs; /api/events lists them, newest first, filterable by type."""
    async with seeded(redis_url, mqtt_url, prefix, 300) as (daemon, client):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 2})
        await settled(daemon, "BTCUSDT", 2)
        liquidated = {
            r.id
            for r in await daemon.store.all_records("BTCUSDT")
            if r.status is Status.LIQUIDATED and r.side is Side.LONG
        }
        assert liquidated
        async with asyncio.timeout(10):
            while True:
                status, body, _ = await http_get(daemon, "/api/events?type=liquidation&limit=1000")
                listed = {e["payload"]["position_id"] for e in body["events"]}
                if listed >= liquidated:
                    break
                await asyncio.sleep(0.05)
        assert 200 == status
        event = next(e for e in body["events"] if e["payload"]["mark_price"] == "60000")
        assert {"id", "published_at", "event_id", "type", "symbol", "topic", "payload"} == set(
            event
        )
        assert (
            event["topic"] == f"{prefix}/events/{event['payload']['account']}/BTCUSDT/liquidation"
        )
        assert event["payload"]["mark_price"] == "60000"
        ids = [e["id"] for e in body["events"]]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
        status, body, _ = await http_get(daemon, "/api/events?limit=3")
        assert (200, 3) == (status, body["count"])
        # The crash also moved the mark 6% from the index: the guards' alert is listed too.
        status, body, _ = await http_get(daemon, "/api/events?type=price_deviation")
        assert ["BTCUSDT"] == [e["symbol"] for e in body["events"]]
        assert body["events"][0]["payload"]["detail"]["mark"] == "60000"


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_symbols_report_prices_and_feed_state(
    request: pytest.FixtureRequest, mqtt_url: str, prefix: str, cluster: bool
) -> None:
    """/api/symbols: stored mark and index, the guards' feed view, and position counts."""
    redis_url = redis_url_of(request, cluster)
    async with seeded(redis_url, mqtt_url, prefix, 300, cluster) as (daemon, _):
        status, body, _ = await http_get(daemon, "/api/symbols")
        assert 200 == status
        by_symbol = {s["symbol"]: s for s in body["symbols"]}
        assert list(by_symbol) == list(daemon.settings.symbols)
        btc = by_symbol["BTCUSDT"]
        assert ("64000", 1, "64000", 1) == (
            btc["mark"],
            btc["mark_ts"],
            btc["index"],
            btc["index_ts"],
        )
        assert btc["contract"] == "linear" and by_symbol["BTCUSD"]["contract"] == "inverse"
        assert btc["feed"]["stale"] is False and btc["feed"]["holding"] is False
        assert 0 <= btc["feed"]["age_s"] < 30
        quiet = [s for s in body["symbols"] if s["symbol"] not in MARKS]
        assert all(s["mark"] is None and s["feed"]["age_s"] is None for s in quiet)
        counts = body["positions"]["BTCUSDT"]
        assert 100 == counts["total"]
        assert counts["total"] == counts["healthy"] + counts["margin_call"] + counts["other"]
        assert daemon.settings.symbols["BTCUSD"].kind is ContractKind.INVERSE


async def test_metrics_parse_with_the_prometheus_parser(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """/metrics is valid text exposition and carries liqmon's families, including the new ones."""
    async with seeded(redis_url, mqtt_url, prefix, 300) as (daemon, _):
        async with asyncio.timeout(5):  # liqmon_positions is sampled once a second
            while True:
                status, text, content_type = await http_get(daemon, "/metrics")
                families = {f.name: f for f in text_string_to_metric_families(text)}
                samples = families["liqmon_positions"].samples
                if sum(s.value for s in samples if s.labels["symbol"] == "BTCUSDT") == 100:
                    break
                await asyncio.sleep(0.1)
        assert 200 == status and content_type.startswith("text/plain; version=0.0.4")
        for name in (
            "liqmon_ticks_received",
            "liqmon_ticks_evaluated",
            "liqmon_events",
            "liqmon_tick_evaluation_seconds",
            "liqmon_outbox_length",
            "liqmon_positions",
            "liqmon_dashboard_clients",
            "liqmon_dashboard_dropped_messages",
        ):
            assert name in families, name
        positions = {
            (s.labels["symbol"], s.labels["status"]): s.value
            for s in families["liqmon_positions"].samples
        }
        assert sum(v for (symbol, _), v in positions.items() if symbol == "BTCUSDT") == 100


async def test_metrics_pass_promtool(redis_url: str, mqtt_url: str, prefix: str) -> None:
    """``promtool check metrics`` accepts /metrics (lint included)."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus'); the parser test still ran")
    settings = settings_for(redis_url, mqtt_url, prefix)
    async with running(settings) as daemon:
        _, text, _ = await http_get(daemon, "/metrics")
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (0, "") == (checked.returncode, checked.stdout + checked.stderr)
