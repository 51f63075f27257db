"""The dashboard: its live feed's rules, and the page itself in a real headless Chromium.

The browser test drives Debian's ``chromium`` over the Chrome DevTools
Protocol (a websocket, spoken here with the ``websockets`` library): it loads
the page from a running daemon, checks the at-risk table against the API,
filters and sorts it, publishes a crash and waits for the liquidation to
appear in the page's event list, then keeps a screenshot in
``artifacts/dashboard.png``. Any console error or uncaught exception fails it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from harness import CONFIG, http_get, mqtt_client, publish, running, settings_for, settled, until
from test_http_api import seeded
from websockets.asyncio.client import ClientConnection

from monitor.config.loading import load_settings
from monitor.core.margin import Side
from monitor.core.status import Status
from monitor.service.daemon import Daemon
from monitor.state.cancellation import raise_if_cancelling
from monitor.web.api import PositionsQuery
from monitor.web.live import Page, Rates, Sample, Throttle, assets, quantile, units, with_values

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """Debian's chromium (or a chromium/chrome on PATH), if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# -- the feed's rules, without a browser -------------------------------------


def test_throttle_passes_its_share_and_counts_the_rest() -> None:
    """1,000 events in one window: the first 10 pass, the other 990 are counted by type."""
    throttle = Throttle(per_window=10)
    for n in range(1000):
        throttle.offer({"id": n, "type": "liquidation" if n % 4 else "margin_call"})
    passed, skipped = throttle.drain()
    assert list(range(10)) == [e["id"] for e in passed]
    assert {"liquidation": 743, "margin_call": 247} == dict(skipped)
    assert ([], {}) == (throttle.drain()[0], dict(throttle.drain()[1]))


async def test_a_full_page_queue_drops_instead_of_waiting() -> None:
    """A page that reads nothing costs the daemon nothing: offers return at once and count drops."""
    page = Page(query=None, queue=asyncio.Queue(3))  # type: ignore[arg-type]
    results = [page.offer(b"m") for _ in range(10)]
    assert [True] * 3 + [False] * 7 == results
    assert 7 == page.dropped


def test_rates_over_the_last_minute() -> None:
    """Events per minute and latency quantiles come from counter differences over the window."""
    rates = Rates(window_s=60)
    buckets = ((0.001, 0.0), (0.005, 0.0), (float("inf"), 0.0))
    rates.add(Sample(0.0, {"liquidation": 0.0}, buckets, 0.0, 0.0))
    later = ((0.001, 90.0), (0.005, 99.0), (float("inf"), 100.0))
    rates.add(Sample(30.0, {"liquidation": 50.0}, later, 0.2, 100.0))
    summary = rates.summary()
    assert 50.0 == summary["events_per_min"]  # up for 30 s: the count so far
    rates.add(Sample(90.0, {"liquidation": 170.0}, later, 0.2, 100.0))
    assert 120.0 == rates.summary()["events_per_min"]  # 120 in the last 60 s
    assert {"window": "last_minute", "count": 100, "mean_ms": 2.0} == {
        k: summary["latency"][k] for k in ("window", "count", "mean_ms")
    }
    assert (1.0, 5.0) == (summary["latency"]["p50_le_ms"], summary["latency"]["p99_le_ms"])
    assert float("inf") == quantile(later, 0.995)


def test_units_and_values_follow_the_contract_kind() -> None:
    """A linear size is in its base coin and its notional in quote (qty x mark); an inverse
    size is in contracts and its notional in coin (contracts x size / mark)."""
    settings = load_settings(CONFIG, environ={})
    linear, inverse = settings.symbols["ETHUSDT"], settings.symbols["BTCUSD"]
    assert {"size": "ETH", "value": "USDT", "price": "USDT", "contract": ""} == units(linear)
    assert {
        "size": "contracts",
        "value": "BTC",
        "price": "USD",
        "contract": "1 contract = 100 USD",
    } == units(inverse)
    assert [("BTC", "USDT"), ("ETH", "USD"), ("coin", "quote")] == [
        assets(name) for name in ("BTCUSDT", "ETH-USD", "XYZ")
    ]
    row = {"side": "long", "qty": "2.5", "entry_price": "3000", "margin": "500"}
    at_mark = with_values(linear, {**row, "mark_price": "3200"})
    assert ("8000", "1000") == (at_mark["notional"], at_mark["margin_balance"])
    coin = with_values(
        inverse,
        {**row, "qty": "64", "entry_price": "60000", "margin": "0.01", "mark_price": "64000"},
    )
    assert Decimal("0.1") == Decimal(coin["notional"])  # 64 x 100 USD at 64,000
    assert (None, None) == tuple(
        with_values(linear, {**row, "mark_price": None})[k] for k in ("notional", "margin_balance")
    )


async def test_chart_history_is_kept_with_no_page_open(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Marks that arrive while no page is open are in the hello of the first page that opens:
    one point a second, in order, in a bounded ring."""
    async with (
        running(settings_for(redis_url, mqtt_url, prefix)) as daemon,
        mqtt_client(mqtt_url) as client,
    ):
        live = daemon.http.live
        assert live is not None
        for ts, price in enumerate(("64000", "63000", "62000"), start=1):
            await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": price, "ts": ts})
            async with asyncio.timeout(5):  # the next whole second's sample takes it
                while not live.history["BTCUSDT"] or live.history["BTCUSDT"][-1][1] != price:
                    await asyncio.sleep(0.05)
        assert not live.pages
        async with websockets.connect(f"ws://127.0.0.1:{daemon.http.bound_port}/ws") as page:
            hello = orjson.loads(await page.recv())
    points = hello["history"]["BTCUSDT"]
    marks = [mark for n, (_, mark, _) in enumerate(points) if n == 0 or mark != points[n - 1][1]]
    stamps = [ts for ts, _, _ in points]
    assert ["64000", "63000", "62000"] == marks
    assert all(later - earlier >= 900 for earlier, later in itertools.pairwise(stamps))
    assert (1.0, 300) == (hello["history_interval_s"], hello["history_points"])
    assert 300 == live.history["BTCUSDT"].maxlen
    assert [] == hello["history"]["SOLUSDT"]  # no mark yet: no point


async def test_a_cancellation_lost_inside_a_call_still_stops_the_loop() -> None:
    """Python 3.11's wait_for (inside redis-py) can eat a cancellation; the guard restores it."""
    rounds = 0

    async def feed_loop() -> None:
        nonlocal rounds
        while True:
            raise_if_cancelling()
            rounds += 1
            with contextlib.suppress(asyncio.CancelledError):  # what the lost race looks like
                await asyncio.sleep(0.01)

    task = asyncio.create_task(feed_loop())
    await until(lambda: rounds > 1, every_s=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(2):
            await task
    assert task.cancelled() and rounds > 1


async def test_an_expensive_listing_is_reused_for_a_while(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A filter whose rows took 0.1 s to list is reused for 2.5 s; a new filter is fresh."""
    async with seeded(redis_url, mqtt_url, prefix, 300) as (daemon, _):
        live = daemon.http.live
        assert live is not None
        calls = []
        positions = live.api.positions

        async def slow(query: PositionsQuery) -> Any:
            calls.append(query)
            await asyncio.sleep(0.1)  # the expensive listing the reuse is for: time is the test
            return await positions(query)

        live.api.positions = slow  # type: ignore[method-assign]
        query = PositionsQuery(("BTCUSDT",), account="acct-3", limit=10)
        first = await live._listing(query)
        assert first is await live._listing(query)
        assert first is not await live._listing(query, fresh=True)
        assert 2 == len(calls)


async def _tailing(daemon: Daemon) -> bool:
    """True once the dashboard's feed waits on the ``published`` stream (a blocked XREAD)."""
    clients = await daemon.store.client.client_list()
    return any(c["cmd"] == "xread" and "b" in c["flags"] for c in clients)


async def test_a_burst_reaches_the_page_throttled_and_fully_counted(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Hundreds of liquidations at once: each events message carries at most its share, and
    the events shown plus those counted as skipped are exactly the entries published."""
    async with seeded(redis_url, mqtt_url, prefix, 3000) as (daemon, client):
        symbols = list(daemon.settings.symbols)
        key = daemon.store.keys.published
        await _outbox_drained(daemon, symbols)
        before = await daemon.store.client.xrevrange(key, "+", "-", count=1)
        port = daemon.http.bound_port
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as page:
            hello = orjson.loads(await page.recv())
            snapshot = orjson.loads(await page.recv())
            assert ("hello", "snapshot") == (hello["type"], snapshot["type"])
            assert 50 == len(snapshot["positions"])
            await until(lambda: _tailing(daemon))  # the feed's tail starts from the stream's end
            crash = {"BTCUSDT": "52000", "ETHUSDT": "2700", "BTCUSD": "52000"}
            for symbol, price in crash.items():
                await publish(client, f"{prefix}/prices/{symbol}/index", {"price": price, "ts": 2})
                await publish(client, f"{prefix}/prices/{symbol}/mark", {"price": price, "ts": 2})
            for symbol in crash:
                await settled(daemon, symbol, 2)
            await _outbox_drained(daemon, symbols)
            start = "(" + before[0][0].decode() if before else "-"
            published = [
                fields[b"event_id"].decode()
                for _, fields in await daemon.store.client.xrange(key, start, "+")
            ]
            assert len(published) > 300
            shown: list[str] = []
            skipped = 0
            batches = []
            async with asyncio.timeout(15):
                while len(shown) + skipped < len(published):
                    message = orjson.loads(await page.recv())
                    if message["type"] == "events":
                        batches.append(len(message["events"]))
                        shown += [e["event_id"] for e in message["events"]]
                        skipped += message["skipped"]
        assert max(batches) <= 10  # 50 a second, in windows of 0.2 s
        assert len(published) == len(shown) + skipped
        assert shown == published[: len(shown)] or set(shown) <= set(published)


async def _outbox_drained(daemon: Any, symbols: list[str]) -> None:
    """Nothing queued or waiting for the broker, and the published stream has stopped growing
    (an entry is copied there just after the outbox lets it go)."""
    key = daemon.store.keys.published
    seen = -1
    async with asyncio.timeout(15):
        while True:
            length = await daemon.store.client.xlen(key)
            if daemon.idle() and not await daemon.outbox.length(symbols) and length == seen:
                return
            seen = length
            await asyncio.sleep(0.2)


# -- the page in a real browser -----------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events kept in order."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for raw in self.connection:
            message = orjson.loads(raw)
            future = self.pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
            elif "method" in message:
                self.events.append(message)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send a command and wait for its result (a CDP error fails the test)."""
        command_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        await self.connection.send(orjson.dumps(command).decode())
        async with asyncio.timeout(20):
            reply = await future
        assert "error" not in reply, (method, reply["error"])
        return dict(reply["result"])


class Tab:
    """One page target attached through a flat session."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command for this page."""
        return await self.devtools.call(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        found = []
        for event in self.devtools.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "assert",
            ):
                found.append(str(params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(str(params["entry"]))
        return found


@contextlib.asynccontextmanager
async def chromium(executable: str, profile: Path) -> AsyncIterator[Tab]:
    """A headless Chromium with a fresh profile; yields a blank tab, kills the browser after."""
    log_path = profile.parent / "chromium.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        active = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not (active.exists() and len(active.read_text().splitlines()) >= 2):
                if process.poll() is not None:
                    pytest.fail(f"chromium exited {process.returncode}: {log_path.read_text()}")
                await asyncio.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        async with websockets.connect(
            f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None
        ) as connection:
            devtools = DevTools(connection)
            devtools.reader = asyncio.create_task(devtools._read())
            try:
                target = await devtools.call("Target.createTarget", {"url": "about:blank"})
                attached = await devtools.call(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                tab = Tab(devtools, attached["sessionId"])
                for domain in ("Page", "Runtime", "Log"):
                    await tab.call(f"{domain}.enable")
                await tab.call(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": 1440, "height": 1150, "deviceScaleFactor": 1, "mobile": False},
                )
                yield tab
            finally:
                devtools.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await devtools.reader
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


ROWS = "[...document.querySelectorAll('#positions tbody tr')]"
COLUMNS = [
    "id",
    "account",
    "symbol",
    "side",
    "qty",
    "notional",
    "margin",
    "mark_price",
    "liquidation_price",
    "distance_pct",
    "margin_ratio",
    "status",
]
LOOKS = {
    "healthy": ("● healthy", "rgb(63, 178, 127)"),
    "margin_call": ("▲ margin call", "rgb(224, 165, 38)"),
    "liquidated": ("✖ liquidated", "rgb(229, 83, 75)"),
}
"""Each status's badge: a shape and a word (for readers who cannot tell colours apart), and
its colour."""
ZONE = "Asia/Tokyo"
ZONE_OFFSET = timezone(timedelta(hours=9))
"""The browser runs in a zone far from the machine's UTC, so local time must be shown."""
TABLE = f"""{ROWS}.map(r => ({{
    id: r.dataset.id,
    symbol: r.children[2].textContent,
    sizeUnit: r.children[4].querySelector('.unit')?.textContent,
    notional: r.children[5].dataset.exact,
    notionalUnit: r.children[5].querySelector('.unit')?.textContent,
    margin: r.children[6].dataset.exact,
    marginUnit: r.children[6].querySelector('.unit')?.textContent,
    badge: r.children[11].firstChild.className,
    label: r.children[11].textContent,
    colour: getComputedStyle(r.children[11].firstChild).color,
}}))"""
CHART = """(() => {
    const card = document.querySelector('[data-symbol=BTCUSDT]');
    const svg = card.querySelector('svg.chart');
    return {
        points: Number(svg.dataset.points),
        low: Number(svg.dataset.low),
        high: Number(svg.dataset.high),
        y: [...svg.querySelectorAll('.y-label')]
            .map(t => [t.textContent, Number(t.getAttribute('y'))]),
        x: [...svg.querySelectorAll('.x-label')].map(t => t.textContent),
        lines: svg.querySelectorAll('polyline.mark-line').length,
        legend: card.querySelector('.legend').textContent,
    };
})()"""


def check_table(shown: list[dict[str, Any]], api: list[dict[str, Any]], daemon: Any) -> None:
    """Every row shows its size, notional and margin with units and the exact values, and a
    status badge whose class, shape, word and colour say the status."""
    assert [p["id"] for p in api] == [row["id"] for row in shown]
    units = {
        "linear": lambda s: (f" {s.removesuffix('USDT')}", " USDT"),
        "inverse": lambda s: (" contracts", f" {s.removesuffix('USD')}"),
    }
    for row, position in zip(shown, api, strict=True):
        contract = daemon.settings.symbols[position["symbol"]]
        qty, mark = Decimal(position["qty"]), Decimal(position["mark_price"])
        linear = contract.kind.value == "linear"
        notional = qty * mark if linear else qty * contract.contract_size / mark
        size_unit, value_unit = units[contract.kind.value](position["symbol"])
        assert (size_unit, value_unit, value_unit) == (
            row["sizeUnit"],
            row["notionalUnit"],
            row["marginUnit"],
        ), row
        assert notional == Decimal(row["notional"]), row
        assert Decimal(position["margin"]) == Decimal(row["margin"])
        label, colour = LOOKS[position["status"]]
        assert (f"status-badge st-{position['status']}", label, colour) == (
            row["badge"],
            row["label"],
            row["colour"],
        )
    assert {"healthy", "margin_call"} <= {p["status"] for p in api}  # both colours were seen


def check_chart(chart: dict[str, Any], ring: list[list[Any]], opened_ms: int) -> None:
    """The chart holds the server's history from before the page opened, with a price scale
    that covers it (labels rising up the axis) and a time axis in local clock minutes."""
    marks = [Decimal(mark) for _, mark, _ in ring]
    assert ring[0][0] < opened_ms - 2000 and len(marks) >= 3
    assert chart["points"] >= len(ring) and chart["lines"] >= 1
    assert chart["low"] <= min(marks) and chart["high"] >= max(marks)
    values = [Decimal(text.replace(",", "")) for text, _ in chart["y"]]
    heights = [y for _, y in chart["y"]]
    assert (
        len(values) >= 2 and values == sorted(values) and heights == sorted(heights, reverse=True)
    )
    assert (chart["low"], chart["high"]) == (float(values[0]), float(values[-1]))
    minutes = {
        datetime.fromtimestamp(s, ZONE_OFFSET).strftime("%H:%M")
        for s in range(opened_ms // 1000 - 360, opened_ms // 1000 + 120, 60)
    }
    assert chart["x"] and set(chart["x"]) <= minutes, chart["x"]
    assert "mark" in chart["legend"] and "index" in chart["legend"]
    assert chart["legend"].endswith("USDT · last 5 min")


async def test_dashboard_in_headless_chromium(
    redis_url: str, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """The page loads clean and shows what an operator reads (units, notional and margin,
    coloured and labelled status, local time with its zone, charts with scales, an honest
    latency label); it filters and sorts, shows a liquidation live after a crash, and a page
    opened afterwards shows the charts' history at once. The screenshot is kept."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; make test installs it)")
    async with seeded(redis_url, mqtt_url, prefix, 1500) as (daemon, client):
        port = daemon.http.bound_port
        live = daemon.http.live
        assert live is not None
        _, api, _ = await http_get(daemon, "/api/positions?limit=50")
        async with chromium(executable, tmp_path / "profile") as tab:
            await tab.call("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
            await tab.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/"})
            await tab.wait_for(f"{ROWS}.length === 50")
            assert "live" == await tab.evaluate("document.getElementById('conn').textContent")
            headers = await tab.evaluate(
                "[...document.querySelectorAll('#positions th')].map(th => th.dataset.key)"
            )
            assert COLUMNS == headers
            check_table(await tab.evaluate(TABLE), api["positions"], daemon)
            zone = await tab.evaluate("document.getElementById('tz').textContent")
            assert f"times in {ZONE} (UTC+09:00)" == zone
            latency = await tab.evaluate(
                "document.getElementById('t-latency').parentElement.querySelector('.label')"
                ".textContent"
            )
            assert "mark received → outbox commit" == latency

            # Filter by symbol: the server answers with that symbol's closest rows.
            await tab.evaluate(
                "(() => { const s = document.getElementById('f-symbol');"
                " s.value = 'ETHUSDT'; s.dispatchEvent(new Event('change')); })()"
            )
            await tab.wait_for(
                f"{ROWS}.length > 0 && {ROWS}.every(r => r.children[2].textContent === 'ETHUSDT')"
            )
            # Sort by account (client side), then back to all symbols by distance.
            await tab.evaluate("document.querySelector('th[data-key=account]').click()")
            accounts = await tab.evaluate(f"{ROWS}.map(r => r.children[1].textContent)")
            assert sorted(accounts) == accounts
            await tab.evaluate("document.querySelector('th[data-key=distance_pct]').click()")
            await tab.evaluate(
                "(() => { const s = document.getElementById('f-symbol');"
                " s.value = ''; s.dispatchEvent(new Event('change')); })()"
            )
            await tab.wait_for(f"new Set({ROWS}.map(r => r.children[2].textContent)).size > 1")

            # A falling market, one mark every 0.4 s (the charts get a line), then a crash.
            ts = 2
            for price in ("63800", "63500", "63100", "62600", "61900", "61000", "60000"):
                await publish(client, f"{prefix}/prices/BTCUSDT/index", {"price": price, "ts": ts})
                await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": price, "ts": ts})
                ts += 1
                await asyncio.sleep(0.4)
            await settled(daemon, "BTCUSDT", ts - 1)
            records = await daemon.store.all_records("BTCUSDT")
            crashed = {
                r.id for r in records if r.status is Status.LIQUIDATED and r.side is Side.LONG
            }
            assert crashed
            shown = await tab.wait_for(
                "[...document.querySelectorAll('#events li[data-type=liquidation]')]"
                ".map(li => li.textContent).filter(t => t.includes('BTCUSDT long'))",
                timeout=15,
            )
            assert any(any(f"{i} ·" in text for i in crashed) for text in shown)
            times = await tab.evaluate(
                "[...document.querySelectorAll('#events li')].slice(0, 5).map(li => "
                "[Number(li.dataset.publishedAt), li.querySelector('.time').textContent,"
                " li.querySelector('.time').title])"
            )
            for published_ms, text, title in times:
                local = datetime.fromtimestamp(published_ms / 1000, ZONE_OFFSET)
                assert local.strftime("%H:%M:%S") == text
                assert title.endswith(f"UTC+09:00 ({ZONE})") and local.isoformat()[:10] in title
            await tab.wait_for(
                "document.querySelector('[data-symbol=BTCUSDT] .mark').textContent === '60,000'"
            )

            # A page opened now shows the last minutes of every chart at once, with scales.
            async with asyncio.timeout(5):
                while live.history["BTCUSDT"][-1][1] != "60000":
                    await asyncio.sleep(0.05)
            ring = list(live.history["BTCUSDT"])
            opened_ms = time.time_ns() // 1_000_000
            await tab.evaluate("window.previousPage = true")
            await tab.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/"})
            await tab.wait_for(f"!window.previousPage && {ROWS}.length === 50")
            check_chart(await tab.evaluate(CHART), ring, opened_ms)
            # One more snapshot: totals after the crash.
            updated = "document.getElementById('updated').title"
            stamp = orjson.dumps(await tab.evaluate(updated)).decode()
            await tab.wait_for(f"{updated} !== {stamp}")
            totals = await tab.evaluate(
                "Object.fromEntries([...document.querySelectorAll('.card')].map(c => "
                "[c.querySelector('.label').textContent, c.querySelector('.value').textContent]))"
            )
            shot = await tab.call("Page.captureScreenshot", {"format": "png"})
            assert [] == tab.problems()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
    (ARTIFACTS / "dashboard-totals.json").write_bytes(
        orjson.dumps(totals, option=orjson.OPT_INDENT_2)
    )
    assert totals["positions monitored"] != "–"
    assert os.path.getsize(ARTIFACTS / "dashboard.png") > 10_000
