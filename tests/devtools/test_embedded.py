"""The embedded servers behave like the real services the monitor relies on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest
import redis

import monitor.devtools.embedded
from monitor.devtools.embedded import (
    MosquittoServer,
    RedisServer,
    ServerStartError,
    free_port,
    free_ports,
)

if TYPE_CHECKING:
    from conftest import MosquittoFactory, RedisFactory


def test_redis_fixture_answers_ping(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
        assert client.dbsize() == 0  # flushed by the fixture


async def test_qos1_message_reaches_subscriber(
    mosquitto_server: MosquittoServer, mqtt_url: str, prefix: str
) -> None:
    assert mosquitto_server.port != 1883
    assert mqtt_url == f"mqtt://127.0.0.1:{mosquitto_server.port}"
    topic = f"{prefix}/liquidations"
    async with (
        aiomqtt.Client(mosquitto_server.host, mosquitto_server.port) as sub,
        aiomqtt.Client(mosquitto_server.host, mosquitto_server.port) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        await pub.publish(topic, b"hello", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
    assert message.topic.value == topic
    assert message.payload == b"hello"
    assert message.qos == 1


def test_redis_appendonly_survives_restart(fresh_redis: RedisFactory) -> None:
    server = fresh_redis(appendonly=True)
    port = server.port
    with redis.Redis.from_url(server.url) as client:
        client.set("position:BTCUSDT", "42")
    server.restart()
    assert server.port == port
    with redis.Redis.from_url(server.url) as client:
        assert client.get("position:BTCUSDT") == b"42"


def test_redis_without_appendonly_forgets_on_restart(fresh_redis: RedisFactory) -> None:
    server = fresh_redis()
    with redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
    server.restart()
    with redis.Redis.from_url(server.url) as client:
        assert client.get("k") is None


def test_redis_fsync_always_survives_kill(fresh_redis: RedisFactory) -> None:
    server = fresh_redis(appendonly=True, appendfsync="always")
    with redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
    server.kill()
    assert not server.running
    server.start()
    with redis.Redis.from_url(server.url) as client:
        assert client.get("k") == b"v"


def test_redis_requirepass(fresh_redis: RedisFactory) -> None:
    server = fresh_redis(requirepass="s3cret")
    assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True


async def _receive_offline_message(
    host: str, port: int, prefix: str, between: Callable[[], object] | None
) -> bytes:
    """Subscribe persistently, disconnect, publish, call ``between``, reconnect."""
    topic = f"{prefix}/events"
    client_id = f"{prefix}-sub"
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=False) as sub:
        await sub.subscribe(topic, qos=1)
    async with aiomqtt.Client(host, port) as pub:
        await pub.publish(topic, b"while-away", qos=1)
    if between is not None:
        between()
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=False) as sub:
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
    # Drop the persistent session so it does not outlive the test.
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
        pass
    assert isinstance(message.payload, bytes)
    return message.payload


async def test_persistent_session_gets_message_sent_while_offline(
    mosquitto_server: MosquittoServer, prefix: str
) -> None:
    payload = await _receive_offline_message(
        mosquitto_server.host, mosquitto_server.port, prefix, None
    )
    assert payload == b"while-away"


async def test_persistent_session_survives_broker_restart(
    fresh_mosquitto: MosquittoFactory, prefix: str
) -> None:
    # Proves the broker can write its persistence file (the `user root` gotcha).
    server = fresh_mosquitto()
    payload = await _receive_offline_message(server.host, server.port, prefix, server.restart)
    assert payload == b"while-away"
    assert (server.workdir / "mosquitto.db").exists()


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    server = MosquittoServer(tmp_path, extra_config=["no_such_option 1"], start_timeout=5)
    with pytest.raises(ServerStartError, match="no_such_option"):
        server.start()
    assert not server.running


def test_context_manager_stops_server(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        pid = server.pid
        assert pid is not None
        assert server.running
    assert not server.running
    assert server.pid is None


@pytest.mark.parametrize("server_cls", [RedisServer, MosquittoServer])
def test_first_start_retries_when_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_cls: type[RedisServer]
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        ports = iter([busy, free_port()])
        monkeypatch.setattr(monitor.devtools.embedded, "free_port", lambda host="": next(ports))
        with server_cls(tmp_path) as server:
            assert server.port != busy


def test_fixed_busy_port_fails_with_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        server = RedisServer(tmp_path, port=busy)
        with pytest.raises(ServerStartError, match=r"(?i)address already in use"):
            server.start()
        assert server.port == busy


def test_free_ports_are_distinct() -> None:
    """Ports chosen together are never the same one twice (two free_port() calls in a row
    once gave a TLS broker both listeners on one port)."""
    ports = free_ports(50)
    assert 50 == len(set(ports))
