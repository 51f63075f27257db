"""Shared fixtures: real redis-server and mosquitto processes on free ports.

One Redis and one Mosquitto serve the whole session (cheap tests share them;
``redis_url`` flushes Redis and ``prefix`` isolates MQTT topics per test).
Tests that stop, kill or restart a server ask ``fresh_redis`` /
``fresh_mosquitto`` for a private instance instead. A three-primary Redis
Cluster, started on first use, serves the tests that run on a cluster too
(``cluster_url`` flushes every primary).
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

# Until liqmon is installed in the venv (pip install -e .), make the checkout
# importable; an installed package wins over this fallback.
if importlib.util.find_spec("monitor") is None:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from monitor.devtools.embedded import MosquittoServer, RedisClusterServers, RedisServer


class RedisFactory(Protocol):
    def __call__(self, **kwargs: Any) -> RedisServer: ...


class MosquittoFactory(Protocol):
    def __call__(self, **kwargs: Any) -> MosquittoServer: ...


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A session-wide Redis; prefer ``redis_url``, which flushes it first."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A session-wide Redis Cluster of three primaries; prefer ``cluster_url``."""
    with RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> str:
    """URL of one node of the session Redis Cluster, every primary emptied (FLUSHALL) first."""
    for node in redis_cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture(scope="session")
def mosquitto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """A session-wide Mosquitto; combine with ``prefix`` to isolate topics."""
    server = MosquittoServer(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis, emptied (FLUSHALL) before this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def mqtt_url(mosquitto_server: MosquittoServer) -> str:
    """URL of the session Mosquitto (``mqtt://127.0.0.1:PORT``)."""
    return mosquitto_server.url


@pytest.fixture
def prefix() -> str:
    """A topic prefix unique to this test, e.g. ``t-1a2b3c4d``."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisFactory]:
    """Factory for private, started Redis servers, stopped after the test.

    Keyword arguments go to :class:`RedisServer` (``appendonly=True`` ...).
    """
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Factory for private, started Mosquitto brokers, stopped after the test.

    Keyword arguments go to :class:`MosquittoServer` (``extra_config=[...]`` ...).
    """
    servers: list[MosquittoServer] = []

    def make(**kwargs: Any) -> MosquittoServer:
        server = MosquittoServer(tmp_path / f"mosquitto-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
