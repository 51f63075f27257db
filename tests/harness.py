"""Test harness: a real daemon in-process, and an MQTT event collector.

Both talk to the real servers the fixtures start; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import orjson
import pytest
import redis

from monitor.config.loading import load_settings
from monitor.config.model import HttpSettings, MqttSettings, RedisSettings, Settings
from monitor.service.daemon import Daemon, PublisherDaemon, Service

S = TypeVar("S", bound=Service)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "liqmon.toml"


def settings_for(
    redis_url: str, mqtt_url: str, prefix: str, cluster: bool = False, **changes: Any
) -> Settings:
    """The shipped example configuration, pointed at the test servers and prefix."""
    base = load_settings(CONFIG, environ={})
    return replace(
        base,
        redis=RedisSettings(url=redis_url, key_prefix=prefix, cluster=cluster),
        mqtt=MqttSettings(url=mqtt_url, topic_prefix=prefix, client_id=f"{prefix}-monitor"),
        http=HttpSettings(port=0),
        **changes,
    )


def redis_url_of(request: pytest.FixtureRequest, cluster: bool) -> str:
    """The URL of the session Redis Cluster (``cluster_url``) or server (``redis_url``), emptied."""
    url: str = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    return url


def nodes_holding(cluster_url: str, keys: list[str]) -> set[str]:
    """The cluster nodes (host:port) that own ``keys``' slots."""
    with redis.RedisCluster.from_url(cluster_url) as client:
        return {client.get_node_from_key(key).name for key in keys}


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 20.0, every_s: float = 0.02
) -> None:
    """Wait until ``condition()`` holds (awaited if it is a coroutine), checking every
    ``every_s``; ``TimeoutError`` after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(every_s)


async def http_ready(port: int, timeout: float = 20.0) -> None:
    """Wait until a liqmon process's ``/readyz`` on ``port`` answers 200."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)


def position_object(
    position_id: str,
    *,
    account: str = "acct-1",
    symbol: str = "BTCUSDT",
    side: str = "long",
    qty: str = "1",
    entry_price: str = "60000",
    margin: str = "3000",
    seq: int = 1,
) -> dict[str, Any]:
    """A position as a source publishes it on ``{prefix}/positions`` or writes it to a
    JSON Lines file: decimals as strings; by default a BTCUSDT long of 1 BTC at 60,000."""
    return {
        "id": position_id,
        "account": account,
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "entry_price": entry_price,
        "margin": margin,
        "seq": seq,
    }


def btc_long(position_id: str, margin: str = "3000", account: str = "acct-1") -> dict[str, Any]:
    """A BTCUSDT long of 1 BTC at 60,000 (liquidated well above 50,000 with 3,000 of margin)."""
    return position_object(position_id, account=account, margin=margin)


def half_btc_long(position_id: str, account: str = "acct-42", seq: int = 1) -> dict[str, Any]:
    """A BTCUSDT long of 0.5 BTC at 60,000 with 3,000 of margin (liquidation price 54,216.87)."""
    return position_object(position_id, account=account, qty="0.5", seq=seq)


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Daemon]:
    """A daemon running in this event loop, ready when entered, stopped on exit."""
    async with serving(Daemon(settings, **kwargs)) as daemon:
        yield daemon


@contextlib.asynccontextmanager
async def publishing(settings: Settings, name: str = "publisher") -> AsyncIterator[PublisherDaemon]:
    """``liqmon publish``'s process in this event loop, ready when entered, stopped on exit."""
    async with serving(PublisherDaemon(settings, name)) as publisher:
        yield publisher


@contextlib.asynccontextmanager
async def serving(service: S, *, ready: bool = True) -> AsyncIterator[S]:
    """Run ``service`` until exit, entered once it reports itself ready (``ready=False``: at
    once, for a service that cannot be ready yet; :func:`task_of` then tells if it still runs)."""
    task = asyncio.create_task(service.run(), name=type(service).__name__.lower())
    _tasks[service] = task
    try:
        async with asyncio.timeout(15):
            while ready and await service.failing():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield service
    finally:
        _tasks.pop(service, None)
        service.stopping.set()
        if not task.done():
            try:
                async with asyncio.timeout(15):
                    await task
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


_tasks: dict[Service, asyncio.Task[None]] = {}


def task_of(service: Service) -> asyncio.Task[None]:
    """The task running ``service`` inside :func:`serving`."""
    return _tasks[service]


async def crash(daemon: Daemon) -> None:
    """Stop a running daemon the way a crash would: no drain, no lease given back."""
    task = _tasks[daemon]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def mqtt_client(url: str, name: str = "test") -> aiomqtt.Client:
    """A plain MQTT client for the test broker."""
    host, port = url.removeprefix("mqtt://").split(":")
    return aiomqtt.Client(host, int(port), identifier=f"{name}-{uuid.uuid4().hex[:8]}")


@contextlib.asynccontextmanager
async def heard(
    url: str,
    topic_filter: str,
    name: str,
    kept: Callable[[str, Any], Any] = lambda topic, document: document,
) -> AsyncIterator[list[Any]]:
    """Every message on ``topic_filter`` (QoS 1) while inside, in order of arrival: its
    decoded JSON passed through ``kept(topic, document)`` (None: left out)."""
    received: list[Any] = []
    async with mqtt_client(url, name) as client:
        await client.subscribe(topic_filter, qos=1)

        async def read() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                item = kept(message.topic.value, orjson.loads(message.payload))
                if item is not None:
                    received.append(item)

        task = asyncio.create_task(read())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Collector:
    """Subscribes to events and keeps every payload received, duplicates included."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = mqtt_client(url, "collector")
        self.prefix = prefix
        self.events: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> Collector:
        await self.client.__aenter__()
        await self.client.subscribe(f"{self.prefix}/events/#", qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            async with self._arrived:
                self.events.append(orjson.loads(message.payload))
                self.topics.append(message.topic.value)
                self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events arrived; return them all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.events) >= count)
        return self.events

    async def quiet(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        """Wait until no event arrived for ``seconds``; return them all."""
        while True:
            seen = len(self.events)
            await asyncio.sleep(seconds)  # that nothing more comes, only time can show
            if len(self.events) == seen:
                return self.events


async def publish(client: aiomqtt.Client, topic: str, document: Any) -> None:
    """Publish a JSON document at QoS 1."""
    await client.publish(topic, orjson.dumps(document), qos=1)


async def settled(daemon: Daemon, symbol: str, mark_ts: int, timeout: float = 10.0) -> None:
    """Wait until the mark stamped ``mark_ts`` is stored and everything queued is evaluated."""
    async with asyncio.timeout(timeout):
        while True:
            quote = await daemon.store.quote(symbol)
            if quote is not None and quote.mark_ts_ms >= mark_ts and daemon.idle():
                return
            await asyncio.sleep(0.005)


async def stored_positions(daemon: Daemon, symbol: str, count: int, timeout: float = 20.0) -> None:
    """Wait until ``count`` positions of ``symbol`` are stored and nothing is queued."""
    key = daemon.store.keys.positions(symbol)
    async with asyncio.timeout(timeout):
        while await daemon.store.client.hlen(key) < count or not daemon.idle():
            await asyncio.sleep(0.01)


async def http_get(daemon: Daemon, path: str) -> tuple[int, Any, str]:
    """GET ``path`` from the daemon's HTTP port: status, decoded JSON (or text), content type."""
    url = f"http://127.0.0.1:{daemon.http.bound_port}{path}"

    def fetch() -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers["Content-Type"]

    status, body, content_type = await asyncio.to_thread(fetch)
    document = orjson.loads(body) if content_type == "application/json" else body.decode()
    return status, document, content_type
