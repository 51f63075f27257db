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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from harness import publish, settled
from test_http_api import get, seeded
from websockets.asyncio.client import ClientConnection

from monitor.api import PositionsQuery
from monitor.cancellation import raise_if_cancelling
from monitor.live import Page, Rates, Sample, Throttle, quantile
from monitor.margin import Side
from monitor.status import Status

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
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
    await asyncio.sleep(0.05)
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
            await asyncio.sleep(0.1)
            return await positions(query)

        live.api.positions = slow  # type: ignore[method-assign]
        query = PositionsQuery(("BTCUSDT",), account="acct-3", limit=10)
        first = await live._listing(query)
        assert first is await live._listing(query)
        assert first is not await live._listing(query, fresh=True)
        assert 2 == len(calls)


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
            await asyncio.sleep(0.3)  # the feed's tail starts from the stream's end
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
            if daemon.idle() and not await daemon.store.outbox_length(symbols) and length == seen:
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


async def test_dashboard_in_headless_chromium(
    redis_url: str, mqtt_url: str, prefix: str, tmp_path: Path
) -> None:
    """The page loads clean, fills the at-risk table, filters and sorts it, and shows a
    liquidation live after a crash is published; the screenshot is kept as an artifact."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; make test installs it)")
    async with seeded(redis_url, mqtt_url, prefix, 1500) as (daemon, client):
        port = daemon.http.bound_port
        _, api, _ = await get(daemon, "/api/positions?limit=50")
        async with chromium(executable, tmp_path / "profile") as tab:
            await tab.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/"})
            await tab.wait_for(f"{ROWS}.length === 50")
            ids = await tab.evaluate(f"{ROWS}.map(r => r.dataset.id)")
            assert [p["id"] for p in api["positions"]] == ids
            assert "live" == await tab.evaluate("document.getElementById('conn').textContent")

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
            await tab.wait_for(
                "document.querySelector('[data-symbol=BTCUSDT] .mark').textContent === '60,000'"
            )
            await tab.wait_for("document.querySelectorAll('[data-symbol=BTCUSDT] polyline').length")
            await asyncio.sleep(1.2)  # one more snapshot: totals after the crash
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
