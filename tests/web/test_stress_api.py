"""``/api/stress`` and ``/api/liquidation-map`` against a real daemon, Redis and Mosquitto.

The endpoints answer from the daemon's liquidation book (:mod:`monitor.state.books`);
here every stored record is read and the figures are computed position by position
(:mod:`monitor.core.stress`, itself checked against an independent reference in
tests/core/test_stress.py). They must agree to the last digit at many prices,
both sides, linear and inverse, before and after a crash that liquidates,
new versions and closes.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from decimal import Context, Decimal
from typing import Any

import orjson
import pytest
from harness import http_get, position_object, publish, running, settled, until
from test_http_api import MARKS, make_positions, seeded

from monitor.core.models import model_for
from monitor.core.status import Status
from monitor.core.stress import liquidation_map, stress
from monitor.core.wire import position_from_object
from monitor.devtools.stalls import timed
from monitor.service.daemon import Daemon
from monitor.web import stress as web_stress

MOVES = ["-0.5", "-0.2", "-0.1", "-0.05", "-0.02", "-0.01", "0", "0.01", "0.03", "0.1", "0.3"]


async def expected_stress(daemon: Daemon, symbol: str, price: Decimal) -> dict[str, Any]:
    """The stress document from every stored record, position by position."""
    contract = daemon.settings.symbols[symbol]
    quote = await daemon.store.quote(symbol)
    records = await daemon.store.all_records(symbol)
    return stress(contract, records, price, daemon.settings.risk).document(
        quote.mark if quote is not None else None
    )


async def expected_map(
    daemon: Daemon, symbol: str, low: Decimal, high: Decimal, step: Decimal
) -> list[dict[str, object]]:
    """The map's buckets from every stored record."""
    contract = daemon.settings.symbols[symbol]
    records = await daemon.store.all_records(symbol)
    return [bucket.document() for bucket in liquidation_map(contract, records, low, high, step)]


async def check_everything(daemon: Daemon) -> int:
    """Every symbol at every move: /api/stress (by price and by move) and two maps agree
    with the position-by-position figures; how many positions were counted liquidated."""
    liquidated = 0
    for symbol in MARKS:
        quote = await daemon.store.quote(symbol)
        assert quote is not None
        for move in MOVES:
            price = quote.mark * (1 + Decimal(move))
            expected = await expected_stress(daemon, symbol, price)
            status, by_price, _ = await http_get(
                daemon, f"/api/stress?symbol={symbol}&price={price}"
            )
            assert 200 == status, by_price
            assert {**expected, "move": None} == by_price["stress"][0]
            status, by_move, _ = await http_get(daemon, f"/api/stress?symbol={symbol}&move={move}")
            assert {**expected, "move": move} == by_move["stress"][0]
            liquidated += expected["liquidated"]["count"]  # type: ignore[index]
        mark = quote.mark
        cent = Decimal("0.01")
        for low_f, high_f, buckets in (("0.5", "1.5", 40), ("0.93", "1.0713", 997)):
            low = (mark * Decimal(low_f)).quantize(cent)
            high = (mark * Decimal(high_f)).quantize(cent)
            step = (mark / buckets).quantize(cent)
            status, document, _ = await http_get(
                daemon, f"/api/liquidation-map?symbol={symbol}&low={low}&high={high}&step={step}"
            )
            assert 200 == status, document
            assert await expected_map(daemon, symbol, low, high, step) == document["buckets"]
    return liquidated


async def test_stress_and_map_match_a_position_by_position_computation_through_a_crash(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """At many prices, before and after a 6 % crash, new versions and closes, the endpoints
    give exactly the figures every stored record gives."""
    async with seeded(redis_url, mqtt_url, prefix, 900) as (daemon, client):
        assert await check_everything(daemon) > 0
        records = await daemon.store.all_records("BTCUSDT")
        opened = [r for r in records if r.status in (Status.HEALTHY, Status.MARGIN_CALL)]
        versions = [
            position_object(
                r.id,
                account=r.account,
                symbol="BTCUSDT",
                side=r.side.value,
                qty="0" if n % 2 else str(r.qty),
                entry_price=str(r.entry_price),
                margin=str(r.margin * 2),
                seq=r.seq + 1,
            )
            for n, r in enumerate(opened[:40])
        ]
        await publish(client, f"{prefix}/positions", versions)

        async def versions_stored() -> bool:
            stored = {r.id: r.seq for r in await daemon.store.all_records("BTCUSDT")}
            return all(stored[v["id"]] == v["seq"] for v in versions) and daemon.idle()

        await until(versions_stored)
        for symbol, mark in MARKS.items():
            crashed = (mark * Decimal("0.94")).quantize(Decimal("0.1"))
            await publish(
                client, f"{prefix}/prices/{symbol}/index", {"price": str(crashed), "ts": 2}
            )
            await publish(
                client, f"{prefix}/prices/{symbol}/mark", {"price": str(crashed), "ts": 2}
            )
        for symbol in MARKS:
            await settled(daemon, symbol, 2)
        gone = [
            r
            for r in await daemon.store.all_records("BTCUSDT")
            if r.status in (Status.LIQUIDATED, Status.CLOSED)
        ]
        assert len(gone) > 20
        await check_everything(daemon)


async def test_two_monitors_and_a_redis_cluster_answer_alike(
    cluster_url: str, mqtt_url: str, prefix: str
) -> None:
    """Two monitors share the symbols by leases over a Redis Cluster: each writes the
    symbols it holds, and each answers every symbol from its own book, kept current by
    the change logs the other writes. Through a crash that liquidates, both give the
    figures every stored record gives."""
    async with (
        seeded(cluster_url, mqtt_url, prefix, 600, cluster=True) as (first, client),
        running(
            replace(first.settings, mqtt=replace(first.settings.mqtt, client_id=f"{prefix}-2"))
        ) as second,
    ):
        daemons = (first, second)
        symbols = list(MARKS)
        await until(lambda: all(any(d.leases.owns(s) for s in symbols) for d in daemons))
        for daemon in daemons:
            assert await check_everything(daemon) > 0
        for symbol, mark in MARKS.items():
            crashed = {"price": str((mark * Decimal("0.95")).quantize(Decimal("0.1"))), "ts": 2}
            await publish(client, f"{prefix}/prices/{symbol}/index", crashed)
            await publish(client, f"{prefix}/prices/{symbol}/mark", crashed)

        async def crashed_everywhere() -> bool:
            quotes = [await first.store.quote(symbol) for symbol in symbols]
            marked = all(q is not None and q.mark_ts_ms >= 2 for q in quotes)
            return marked and all(daemon.idle() for daemon in daemons)

        await until(crashed_everywhere)
        for daemon in daemons:
            assert await check_everything(daemon) > 0


async def test_a_book_still_being_filed_is_a_503_that_says_how_far(
    redis_url: str, mqtt_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stress or a map that cannot wait for its symbol's book to be filed is refused with
    a 503 saying so; the filing goes on, and once it is done the same query answers."""
    async with seeded(redis_url, mqtt_url, prefix, 300) as (daemon, _):
        monkeypatch.setattr(web_stress, "BOOK_WAIT_S", 0)
        path = "/api/stress?symbol=BTCUSDT&move=-0.1"
        status, document, _ = await http_get(daemon, path)
        assert 503 == status
        assert document["error"].startswith("the liquidation book of BTCUSDT is being filed (")
        assert document["error"].endswith("positions so far): try again in a few seconds")
        monkeypatch.setattr(web_stress, "BOOK_WAIT_S", 5.0)
        status, document, _ = await http_get(daemon, path)
        assert 200 == status
        expected = await expected_stress(daemon, "BTCUSDT", MARKS["BTCUSDT"] * Decimal("0.9"))
        assert {**expected, "move": "-0.1"} == document["stress"][0]


async def test_stress_exactly_at_stored_positions_thresholds(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """At a stored position's own liquidation, margin-call and bankruptcy price, and one
    28-digit step either side (where a float score could round the wrong way), the
    endpoint counts what every stored record says."""
    digits = Context(prec=28)
    async with seeded(redis_url, mqtt_url, prefix, 300) as (daemon, _):
        checked = 0
        for symbol in MARKS:
            contract = daemon.settings.symbols[symbol]
            model = model_for(contract)
            records = await daemon.store.all_records(symbol)
            opened = [r for r in records if r.status in (Status.HEALTHY, Status.MARGIN_CALL)]
            for record in opened[::9]:
                for threshold in (
                    model.liquidation_price(record),
                    model.margin_call_price(record, daemon.settings.risk.margin_call_ratio),
                    model.bankruptcy_price(record),
                ):
                    if threshold is None:
                        continue
                    for price in (
                        threshold,
                        digits.next_plus(threshold),
                        digits.next_minus(threshold),
                    ):
                        expected = await expected_stress(daemon, symbol, price)
                        path = f"/api/stress?symbol={symbol}&price={price}"
                        status, document, _ = await http_get(daemon, path)
                        assert (200, {**expected, "move": None}) == (status, document["stress"][0])
                        checked += 1
    assert checked > 150


async def test_several_symbols_with_one_move_and_the_refusals(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """One move over every symbol answers each that has a mark, in turn; contradictory or impossible
    queries are 400s that say what is wrong."""
    async with seeded(redis_url, mqtt_url, prefix, 60) as (daemon, _):
        status, document, _ = await http_get(daemon, "/api/stress?move=-0.1")
        symbols = [item["symbol"] for item in document["stress"]]
        two = await http_get(daemon, "/api/stress?move=-0.1&symbol=BTCUSD,ETHUSDT")
        answers = {
            path: await http_get(daemon, path)
            for path in (
                "/api/stress?symbol=BTCUSDT&price=1&move=0.1",
                "/api/stress?price=60000",
                "/api/stress?symbol=BTCUSDT,ETHUSDT&price=60000",
                "/api/stress?symbol=BTCUSDT&price=0",
                "/api/stress?symbol=BTCUSDT&move=-1",
                "/api/stress?symbol=NOPE&move=0.1",
                "/api/stress?symbol=SOLUSDT&move=0.1",
                "/api/liquidation-map?symbol=BTCUSDT&low=2&high=1&step=1",
                "/api/liquidation-map?symbol=BTCUSDT&low=1&high=100000&step=0.5",
            )
        }
    assert 200 == status
    assert [symbol for symbol in daemon.settings.symbols if symbol in MARKS] == symbols
    assert ["BTCUSD", "ETHUSDT"] == [item["symbol"] for item in two[1]["stress"]]
    unmarked = answers.pop("/api/stress?symbol=SOLUSDT&move=0.1")
    assert (409, {"error": "no mark stored for SOLUSDT yet: give a price"}) == unmarked[:2]
    assert {400} == {status for status, _, _ in answers.values()}
    messages = [document["error"] for _, document, _ in answers.values()]
    assert messages == [
        "give exactly one of price and move",
        "a price needs one symbol",
        "a price needs one symbol (a move may name several)",
        "price must be a positive decimal, got '0'",
        "move must be a decimal above -1 and at most 10, got '-1'",
        messages[5],
        "low must be below high, got 2 and 1",
        "199998 buckets: at most 2000 (widen the step)",
    ]
    assert "unknown symbol 'NOPE'" in messages[5]


async def test_a_whole_book_stress_map_or_listing_does_not_hold_up_the_ticks(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A stress or a map over nearly every position of a 60,000-position symbol, computed
    in the daemon's own event loop, does not hold up its ticks: the book is filed with the
    loop given back as it goes, and answers from it cost its cells. So do listings, which
    read up to thousands of records a page, give the loop back. Several maps at once are
    answered alike."""
    async with seeded(redis_url, mqtt_url, prefix, 0) as (daemon, _):
        contract = daemon.settings.symbols["BTCUSDT"]
        positions = make_positions(180_000)
        updates = [
            position_from_object(p, daemon.settings.symbols)
            for p in positions
            if p["symbol"] == "BTCUSDT"
        ]
        for start in range(0, len(updates), 5000):
            await daemon.engine.apply_updates(updates[start : start + 5000])
        assert len(await daemon.store.all_records("BTCUSDT")) == len(updates) == 60_000
        del positions, updates
        gc.collect()  # not during the measurement: this process holds the test's data too
        low, high = ((MARKS["BTCUSDT"] * Decimal(f)).quantize(Decimal(1)) for f in ("0.5", "1.5"))
        queries = {
            "stress": "/api/stress?symbol=BTCUSDT&move=-0.3",
            "map": f"/api/liquidation-map?symbol=BTCUSDT&low={low}&high={high}&step=100",
            "listing": "/api/positions?symbol=BTCUSDT&limit=1000",
            "listing by account": "/api/positions?account=acct-3&limit=1000",
            "listing by status": "/api/positions?symbol=BTCUSDT&status=liquidated&limit=1000",
        }
        # The collector off: its own passes over this test process's heap (tens of ms, at
        # moments of its choosing) are not what is measured here.
        gc.disable()
        try:
            for name, path in queries.items():
                _, stall, (status, document, _) = await timed(http_get(daemon, path))
                assert 200 == status, document
                assert stall < 0.05, f"{name}: the event loop stood still {stall * 1000:.0f} ms"
        finally:
            gc.enable()
        # Several maps at once share the symbol's book (and one catching up of it).
        answers = await asyncio.gather(*(http_get(daemon, queries["map"]) for _ in range(4)))
        assert {200} == {status for status, _, _ in answers}
        assert 1 == len(
            {orjson.dumps(document) for status, document, _ in answers if status == 200}
        )
        expected = stress(
            contract,
            await daemon.store.all_records("BTCUSDT"),
            MARKS["BTCUSDT"] * Decimal("0.7"),
            daemon.settings.risk,
        ).document(MARKS["BTCUSDT"])
        status, document, _ = await http_get(daemon, queries["stress"])
        assert {**expected, "move": "-0.3"} == document["stress"][0]
        assert expected["liquidated"]["count"] > 10_000  # type: ignore[index]
