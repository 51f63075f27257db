"""Security: passwords, TLS, client certificates and ACLs, against servers configured that way.

Every certificate is made by the test (``tls.make_certificates``); the broker
runs with ``config/mosquitto.acl`` as shipped, so its topic prefix is
``liqmon``. Redis runs TLS-only with the ``default`` user switched off and
one ACL user limited to ``liqmon:*`` keys without the dangerous commands.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import redis
from harness import CONFIG, btc_long, settings_for, settled, stored_positions
from harness import running as running_daemon
from tls import (
    PASSWORDS,
    Certificates,
    SecureBroker,
    TlsRedisServer,
    make_certificates,
    start_secure_broker,
)

from monitor.bus.tool_client import make_client
from monitor.config.loading import load_settings
from monitor.config.model import HttpSettings

LIQMON = Path(sys.executable).parent / "liqmon"
REDIS_ACL = ["~liqmon:*", "+@all", "-@dangerous", "+info"]


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    """A CA, a server and a client certificate made for this test."""
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def secure_broker(fresh_mosquitto: Any, certificates: Certificates, tmp_path: Path) -> SecureBroker:
    """Mosquitto with a password file, the shipped ACL and two TLS listeners."""
    return start_secure_broker(fresh_mosquitto, certificates, tmp_path)


@pytest.fixture
def secure_redis(certificates: Certificates, tmp_path: Path) -> Any:
    """A TLS-only Redis (client certificate required) whose one user is ``liqmon``."""
    server = TlsRedisServer(
        tmp_path / "redis-tls",
        certificates,
        user="liqmon",
        password="redis-pw-5",
        acl=REDIS_ACL,
    )
    with server:
        yield server


# p-1 and p-2 are liquidated by a crash to 50,000; p-3 stays healthy.
BOOK = [
    btc_long("p-1", "3000", "acct-1"),
    btc_long("p-2", "3000", "acct-2"),
    btc_long("p-3", "30000", "acct-1"),
]


async def mark(client: aiomqtt.Client, price: str, ts: int) -> None:
    """Publish a BTCUSDT mark at QoS 1."""
    payload = orjson.dumps({"price": price, "ts": ts})
    await client.publish("liqmon/prices/BTCUSDT/mark", payload, qos=1)


async def receive(
    client: aiomqtt.Client, count: int, quiet_s: float = 0.5, timeout_s: float = 10.0
) -> list[tuple[str, bytes]]:
    """(topic, payload) of ``count`` messages, then of any more that arrive within ``quiet_s``."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            message = await anext(aiter(client.messages))
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload))
    try:
        async with asyncio.timeout(quiet_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append((message.topic.value, message.payload))
    except TimeoutError:
        pass
    return got


def event_ids(messages: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(topic, event_id) of each message."""
    return [(topic, orjson.loads(payload)["event_id"]) for topic, payload in messages]


def secure_config(tmp_path: Path, certificates: Certificates) -> Path:
    """The shipped configuration with the test CA and client certificate for Redis and MQTT."""
    tls = (
        f'ca_file = "{certificates.ca_file}"\n'
        f'cert_file = "{certificates.client_cert}"\n'
        f'key_file = "{certificates.client_key}"\n'
    )
    text = CONFIG.read_text(encoding="utf-8")
    assert text.count("[redis]\n") == 1 and text.count("[mqtt]\n") == 1
    text = text.replace("[redis]\n", "[redis]\n" + tls).replace("[mqtt]\n", "[mqtt]\n" + tls)
    path = tmp_path / "liqmon-tls.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_the_monitor_runs_over_tls_with_client_certificates_and_acl_users(
    secure_redis: TlsRedisServer, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """With rediss://, mqtts://, passwords and client certificates, liqmon loads and liquidates."""
    config = secure_config(tmp_path, secure_broker.certificates)
    environ = {
        "LIQMON_REDIS_URL": secure_redis.url,
        "LIQMON_MQTT_URL": (
            f"mqtts://liqmon:{PASSWORDS['liqmon']}@127.0.0.1:{secure_broker.cert_port}"
        ),
    }
    book = tmp_path / "positions.jsonl"
    book.write_bytes(b"\n".join(orjson.dumps(p) for p in BOOK))
    loaded = subprocess.run(
        [str(LIQMON), "--config", str(config), "positions", "load", str(book)],
        env={**os.environ, **environ},
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert b"loaded 3 positions" in loaded.stderr
    settings = load_settings(config, environ=environ)
    assert settings.redis.client_options() == {
        "ssl_ca_certs": str(secure_broker.certificates.ca_file),
        "ssl_certfile": str(secure_broker.certificates.client_cert),
        "ssl_keyfile": str(secure_broker.certificates.client_key),
    }
    settings = replace(settings, http=HttpSettings(port=0))

    async with (
        running_daemon(settings) as daemon,
        secure_broker.client("feeder") as feeder,
        secure_broker.client("acct-1") as subscriber,
    ):
        assert {} == await daemon.failing()
        await stored_positions(daemon, "BTCUSDT", 3)
        await subscriber.subscribe("liqmon/events/acct-1/#", qos=1)
        await mark(feeder, "60000", 1)
        await mark(feeder, "50000", 2)
        received = await receive(subscriber, 1)
        # Bad input is dead-lettered with the ACL user's rights (every key under liqmon:).
        await feeder.publish("liqmon/positions", b"not json", qos=1)
        async with asyncio.timeout(10):
            while not await daemon.store.client.xlen(daemon.store.keys.dead_letter):
                await asyncio.sleep(0.02)
        lost = daemon.metrics.registry.get_sample_value("liqmon_dead_letters_lost_total")

    assert [("liqmon/events/acct-1/BTCUSDT/liquidation", "p-1:1:1")] == event_ids(received)
    assert 0 == lost
    assert "liquidation" == orjson.loads(received[0][1])["type"]


async def test_an_account_reads_only_its_own_events_and_cannot_publish_prices_or_positions(
    redis_url: str, secure_broker: SecureBroker
) -> None:
    """An account sees only its own events; its forged prices, positions and events go nowhere."""
    settings = settings_for(redis_url, "mqtt://unused:1", "liqmon")
    settings = replace(settings, mqtt=secure_broker.settings("liqmon"))
    settings = replace(settings, mqtt=replace(settings.mqtt, client_id="liqmon-monitor"))
    async with (
        running_daemon(settings) as daemon,
        secure_broker.client("feeder") as feeder,
        secure_broker.client("acct-1") as account_1,
        secure_broker.client("acct-2") as account_2,
    ):
        # acct-1 asks for acct-2's events as well as its own; acct-2 asks for everything.
        await account_1.subscribe("liqmon/events/acct-2/#", qos=1)
        await account_1.subscribe("liqmon/events/acct-1/#", qos=1)
        await account_2.subscribe("liqmon/events/#", qos=1)
        await feeder.publish("liqmon/positions", orjson.dumps(BOOK), qos=1)
        await mark(feeder, "60000", 1)
        await stored_positions(daemon, "BTCUSDT", 3)

        # acct-2 tries to crash the price, to rewrite its position, and to
        # send acct-1 a liquidation: mosquitto acknowledges and drops all three.
        await mark(account_2, "40000", 2)
        topped_up = {**BOOK[1], "margin": "1", "seq": 2}
        await account_2.publish("liqmon/positions", orjson.dumps(topped_up), qos=1)
        forged = orjson.dumps({"event_id": "p-1:1:1", "type": "liquidation"})
        await account_2.publish("liqmon/events/acct-1/BTCUSDT/liquidation", forged, qos=1)
        # The feeder's next tick is evaluated after anything sent before it.
        await mark(feeder, "60000", 3)
        await settled(daemon, "BTCUSDT", 3)

        registry = daemon.metrics.registry
        mqtt_marks = {"symbol": "BTCUSDT", "kind": "mark", "source": "mqtt"}
        assert 2 == registry.get_sample_value("liqmon_ticks_received_total", mqtt_marks)
        assert 3 == registry.get_sample_value(
            "liqmon_position_updates_total", {"result": "applied"}
        )
        assert [1, 1, 1] == [
            r.seq for r in sorted(await daemon.store.all_records("BTCUSDT"), key=lambda r: r.id)
        ]
        assert 0 == await daemon.outbox.length(["BTCUSDT"])

        await mark(feeder, "50000", 4)
        to_account_1 = await receive(account_1, 1)
        to_account_2 = await receive(account_2, 1, quiet_s=0.1)

    assert [("liqmon/events/acct-1/BTCUSDT/liquidation", "p-1:1:1")] == event_ids(to_account_1)
    assert [("liqmon/events/acct-2/BTCUSDT/liquidation", "p-2:1:1")] == event_ids(to_account_2)
    assert "50000" == orjson.loads(to_account_1[0][1])["mark_price"]


async def test_the_broker_refuses_wrong_passwords_anonymous_clients_and_missing_certificates(
    secure_broker: SecureBroker,
) -> None:
    """A wrong password, no login, an untrusted server or a missing client cert: no connection."""
    wrong = replace(
        secure_broker.settings("feeder"),
        url=secure_broker.settings("feeder").url.replace(PASSWORDS["feeder"], "guess"),
    )
    with pytest.raises(aiomqtt.MqttCodeError, match="Not authorized"):
        async with make_client(wrong, "wrong-password", persistent=False):
            pass
    anonymous = aiomqtt.Client("127.0.0.1", secure_broker.server.port, timeout=5)
    with pytest.raises(aiomqtt.MqttCodeError, match="Not authorized"):
        async with anonymous:
            pass
    # Plain MQTT spoken to the TLS listener, and TLS to a CA the client does not trust.
    untrusted = ssl.create_default_context()
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", secure_broker.tls_port), timeout=5) as raw,
        untrusted.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    # TLS 1.3 reports a missing client certificate after the handshake: the
    # server's alert (or its closing the connection) meets the first CONNECT.
    trusting = ssl.create_default_context(cafile=secure_broker.certificates.ca_file)
    with (
        socket.create_connection(("127.0.0.1", secure_broker.cert_port), timeout=5) as raw,
        trusting.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        pytest.raises((ssl.SSLError, ConnectionResetError)),
    ):
        sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        sock.recv(4)


def test_redis_refuses_plain_text_missing_certificates_and_what_the_acl_does_not_allow(
    secure_redis: TlsRedisServer,
) -> None:
    """Redis speaks only TLS to certified clients; the liqmon user is held to liqmon:* keys."""
    ca = str(secure_redis.certificates.ca_file)
    url = secure_redis.url
    with (
        redis.Redis.from_url(url, ssl_ca_certs=ca) as no_cert,
        pytest.raises(redis.ConnectionError),
    ):
        no_cert.ping()
    with (
        redis.Redis.from_url(url.replace("rediss://", "redis://")) as plain,
        pytest.raises(redis.ConnectionError),
    ):
        plain.ping()
    options = {
        "ssl_ca_certs": ca,
        "ssl_certfile": str(secure_redis.certificates.client_cert),
        "ssl_keyfile": str(secure_redis.certificates.client_key),
    }
    with (
        redis.Redis.from_url(url.replace(secure_redis.password, "guess"), **options) as guess,
        pytest.raises(redis.AuthenticationError),
    ):
        guess.ping()
    with redis.Redis.from_url(url, **options) as client:
        assert client.ping() is True
        assert client.set("liqmon:{BTCUSDT}:probe", "1") is True
        for command in (
            ("SET", "elsewhere", "1"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("KEYS", "*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)


def test_the_redis_tls_files_are_passed_to_redis_py_for_rediss_urls_only() -> None:
    """The Redis CA and client certificate reach redis-py with rediss://, not with redis://."""
    files = {"ca_file": "/etc/ca.pem", "cert_file": "/etc/c.pem", "key_file": "/etc/c.key"}
    document = load_settings(CONFIG, environ={})
    tls = replace(document.redis, url="rediss://u:p@127.0.0.1:6380/0", **files)
    assert {
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/etc/c.pem",
        "ssl_keyfile": "/etc/c.key",
    } == tls.client_options()
    assert {"ssl_ca_certs": "/etc/ca.pem"} == replace(
        tls, cert_file=None, key_file=None
    ).client_options()
    assert {} == replace(tls, url="redis://127.0.0.1:6379/0").client_options()
