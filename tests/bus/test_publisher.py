"""The outbox's MQTT publisher: packets by hand, then against real mosquitto brokers.

Subscribers are aiomqtt clients at QoS 1; brokers are stopped, paused
(SIGSTOP) and configured with passwords, the shipped ACL and TLS to see each
failure the publisher must report as an :class:`MqttError`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from harness import (
    Collector,
    btc_long,
    mqtt_client,
    publish,
    running,
    settings_for,
    stored_positions,
)
from tls import SecureBroker, make_certificates, start_secure_broker

from monitor.bus.client import Publisher
from monitor.bus.protocol import (
    MAX_PACKET_ID,
    AckTimeout,
    ConnectionLost,
    MqttError,
    PublishSession,
    Refused,
    connect_packet,
)
from monitor.bus.tool_client import make_client
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer, free_port


def messages(prefix: str, count: int, size: int = 100) -> list[tuple[str, bytes]]:
    """``count`` numbered messages of ``size`` bytes on a few topics under ``prefix``."""
    return [
        (f"{prefix}/events/acct-{n % 3}", b"%08d" % n + b"x" * (size - 8)) for n in range(count)
    ]


async def received(
    client: aiomqtt.Client, count: int, timeout_s: float = 10.0
) -> list[tuple[str, bytes, int]]:
    """(topic, payload, qos) of the next ``count`` messages."""
    got = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload, message.qos))
            if len(got) == count:
                return got
    raise AssertionError("the subscription ended")


# -- the protocol, without a broker ------------------------------------------


def test_a_publish_is_encoded_as_mqtt_3_1_1_says() -> None:
    """Header 0x32, remaining length, topic, packet id, payload; a 3-byte length past 16 kB."""
    session = PublishSession(first_packet_id=7)
    small = session.publishes([("a/b", b"hi")])
    assert b"\x32\x09\x00\x03a/b\x00\x07hi" == small
    large = session.publishes([("t", b"x" * 20_000)])
    # 20,005 = 0x4E25: 0x25|0x80, (0x4E25 >> 7) & 0x7F | 0x80 = 0x9C, 0x01
    assert b"\x32\xa5\x9c\x01\x00\x01t\x00\x08" == large[:9]
    assert 20_009 == len(large)
    assert {7, 8} == session.inflight


def test_connect_carries_clean_session_keepalive_and_credentials() -> None:
    """CONNECT: MQTT level 4, clean session, keep-alive, client id, user and password."""
    assert b"\x10\x10\x00\x04MQTT\x04\x02\x00\x1e\x00\x04mon1" == connect_packet("mon1", 30), (
        "without credentials only the clean-session flag"
    )
    assert b"\x10\x16\x00\x04MQTT\x04\xc2\x00\x05\x00\x01m\x00\x02us\x00\x03pwd" == connect_packet(
        "m", 5, "us", "pwd"
    )


def test_packet_ids_wrap_past_65535_and_skip_ids_in_flight() -> None:
    """After 65535 comes 1; an id whose PUBACK is still missing is skipped."""
    session = PublishSession(first_packet_id=MAX_PACKET_ID - 1)
    session.publishes([("t", b"0")])  # 65534, never acknowledged
    session.inflight.add(2)  # as if 2 were still in flight from before the wrap
    packets = session.publishes([("t", b"%d" % n) for n in range(3)])
    ids = [int.from_bytes(packets[at + 5 : at + 7], "big") for at in range(0, len(packets), 8)]
    assert [MAX_PACKET_ID, 1, 3] == ids
    assert {MAX_PACKET_ID - 1, MAX_PACKET_ID, 1, 2, 3} == session.inflight
    assert 4 == session.next_packet_id


def test_pubacks_are_parsed_in_bulk_across_partial_reads() -> None:
    """PUBACKs and a PINGRESP split anywhere between reads are all taken, once."""
    session = PublishSession()
    session.publishes([("t", b"p")] * 5)
    stream = b"".join(b"\x40\x02" + n.to_bytes(2, "big") for n in (1, 2, 3)) + b"\xd0\x00"
    stream += b"\x40\x02\x00\x04\x40\x02\x00\x05"
    taken = [session.receive(stream[at : at + 3]) for at in range(0, len(stream), 3)]
    assert 5 == sum(taken)
    assert set() == session.inflight


def test_a_packet_a_publisher_never_expects_is_a_lost_connection() -> None:
    """A PUBLISH (or anything but PUBACK and PINGRESP) from the broker breaks the protocol."""
    with pytest.raises(ConnectionLost, match="unexpected packet"):
        PublishSession().receive(b"\x30\x03\x00\x01t")


# -- against mosquitto --------------------------------------------------------


async def test_a_batch_arrives_in_order_at_qos_1(mqtt_url: str, prefix: str) -> None:
    """Every message of a batch reaches a QoS 1 subscriber, in the order of the batch."""
    batch = messages(prefix, 2000)
    async with mqtt_client(mqtt_url) as subscriber:
        await subscriber.subscribe(f"{prefix}/#", qos=1)
        async with Publisher.connect(MqttSettings(url=mqtt_url), f"{prefix}-out") as publisher:
            await publisher.publish_batch(batch)
            assert set() == publisher.session.inflight
        got = await received(subscriber, len(batch))
    assert [(topic, payload, 1) for topic, payload in batch] == got


@pytest.mark.parametrize("window", [1, 7, 64, 5000])
async def test_the_window_bounds_messages_in_flight(
    mqtt_url: str, prefix: str, window: int
) -> None:
    """Smaller or larger than the batch, the window caps the unacknowledged messages."""
    batch = messages(prefix, 300)
    settings = MqttSettings(url=mqtt_url, max_inflight=window)
    most = 0
    async with (
        mqtt_client(mqtt_url) as subscriber,
        Publisher.connect(settings, f"{prefix}-out") as publisher,
    ):
        await subscriber.subscribe(f"{prefix}/#", qos=1)
        encode = publisher.session.publishes

        def counting(chunk: Sequence[tuple[str, bytes]]) -> bytes:
            nonlocal most
            packets = encode(chunk)
            most = max(most, len(publisher.session.inflight))
            return packets

        publisher.session.publishes = counting  # type: ignore[method-assign]
        await publisher.publish_batch(batch[:150])
        await publisher.publish_batch(batch[150:])
        got = await received(subscriber, len(batch))
    assert min(window, 150) == most
    assert [(topic, payload, 1) for topic, payload in batch] == got


async def test_packet_ids_wrap_on_a_live_connection(mqtt_url: str, prefix: str) -> None:
    """Starting near 65535, a batch crosses the wrap and every message is acknowledged."""
    batch = messages(prefix, 100)
    async with (
        mqtt_client(mqtt_url) as subscriber,
        Publisher.connect(
            MqttSettings(url=mqtt_url, max_inflight=30),
            f"{prefix}-out",
            first_packet_id=MAX_PACKET_ID - 40,
        ) as publisher,
    ):
        await subscriber.subscribe(f"{prefix}/#", qos=1)
        await publisher.publish_batch(batch)
        assert 100 - 41 + 1 == publisher.session.next_packet_id
        got = await received(subscriber, len(batch))
    assert [payload for _, payload in batch] == [payload for _, payload, _ in got]


async def test_a_cancelled_batch_leaves_the_connection_usable(mqtt_url: str, prefix: str) -> None:
    """Cancelled mid-batch, the connection stays up; the next batch waits for earlier PUBACKs."""
    settings = MqttSettings(url=mqtt_url, max_inflight=10)
    async with Publisher.connect(settings, f"{prefix}-out") as publisher:
        sending = asyncio.create_task(publisher.publish_batch(messages(prefix, 5000)))
        async with asyncio.timeout(5):
            while not publisher.session.inflight:
                await asyncio.sleep(0)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await publisher.publish_batch(messages(prefix, 10))
        assert set() == publisher.session.inflight
        assert publisher.failed is None


async def test_an_idle_connection_stays_up_on_pings_and_says_goodbye(
    fresh_mosquitto: Any, prefix: str
) -> None:
    """Idle for twice the keep-alive, the connection survives (PINGREQ); close sends DISCONNECT."""
    broker: MosquittoServer = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    async with Publisher.connect(settings, f"{prefix}-out", keepalive_s=1) as publisher:
        await asyncio.sleep(2.5)  # mosquitto drops a silent client after 1.5 keep-alives
        assert publisher.failed is None
        await publisher.publish_batch(messages(prefix, 3))
    async with asyncio.timeout(5):
        while f"Client {prefix}-out disconnected." not in broker.log_path.read_text():
            await asyncio.sleep(0.02)
    assert f"Client {prefix}-out closed its connection" not in broker.log_path.read_text()


async def test_a_broker_stopped_mid_batch_raises_connection_lost(
    fresh_mosquitto: Any, prefix: str
) -> None:
    """The broker goes away while a batch is in flight: the batch raises, and so does the watch."""
    broker: MosquittoServer = fresh_mosquitto()
    batch = messages(prefix, 100_000, size=600)
    async with Publisher.connect(MqttSettings(url=broker.url), f"{prefix}-out") as publisher:
        watch = asyncio.create_task(publisher.raise_when_lost())
        sending = asyncio.create_task(publisher.publish_batch(batch))
        async with asyncio.timeout(5):
            while not publisher.session.inflight:
                await asyncio.sleep(0)
        await asyncio.to_thread(broker.kill)
        with pytest.raises(ConnectionLost):
            await sending
        with pytest.raises(ConnectionLost):
            await watch
        assert isinstance(publisher.failed, ConnectionLost)
        with pytest.raises(ConnectionLost):
            await publisher.publish_batch(batch[:1])


async def test_a_broker_that_stops_acknowledging_raises_ack_timeout(
    fresh_mosquitto: Any, prefix: str
) -> None:
    """A paused broker (SIGSTOP) keeps the connection open and sends no PUBACK: AckTimeout."""
    broker: MosquittoServer = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    async with Publisher.connect(settings, f"{prefix}-out", ack_timeout_s=0.5) as publisher:
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            with pytest.raises(AckTimeout, match=r"no PUBACK within 0\.5 s"):
                await publisher.publish_batch(messages(prefix, 10))
        finally:
            os.kill(broker.pid, signal.SIGCONT)


async def test_nobody_listening_is_a_connection_lost() -> None:
    """No broker on the port: ConnectionLost, an MqttError, naming the address."""
    port = free_port()
    with pytest.raises(MqttError, match=f"cannot connect to 127.0.0.1:{port}"):
        async with Publisher.connect(MqttSettings(url=f"mqtt://127.0.0.1:{port}"), "nobody"):
            pass


# -- passwords, ACL and TLS ----------------------------------------------------


@pytest.fixture
def secure_broker(fresh_mosquitto: Any, tmp_path: Path) -> SecureBroker:
    """Mosquitto with a password file, the shipped ACL and two TLS listeners."""
    return start_secure_broker(fresh_mosquitto, make_certificates(tmp_path / "certs"), tmp_path)


@pytest.mark.parametrize("client_cert", [False, True], ids=["password", "client-cert"])
async def test_the_monitor_user_publishes_events_over_tls(
    secure_broker: SecureBroker, client_cert: bool
) -> None:
    """As ``liqmon`` from ``liqmon-monitor-out``, over TLS: the ACL lets events through."""
    settings = secure_broker.settings("liqmon", client_cert=client_cert, client_id="liqmon-monitor")
    account = secure_broker.settings("acct-1", client_id="acct-1-watch")
    events = [
        ("liqmon/events/acct-1/BTCUSDT/liquidation", b'{"event_id":"p-1:1:1"}'),
        ("liqmon/events/acct-1/BTCUSDT/margin_call", b'{"event_id":"p-2:1:1"}'),
    ]
    async with make_client(account, account.client_id, persistent=False) as subscriber:
        await subscriber.subscribe("liqmon/events/acct-1/#", qos=1)
        async with Publisher.connect(settings, f"{settings.client_id}-out") as publisher:
            await publisher.publish_batch(events)
        got = await received(subscriber, 2)
    assert [(topic, payload, 1) for topic, payload in events] == got


async def test_wrong_or_missing_credentials_are_refused_with_the_reason(
    secure_broker: SecureBroker,
) -> None:
    """A wrong password or no login: Refused, naming CONNACK's return code."""
    for settings in (
        secure_broker.settings("liqmon", "guess", client_id="liqmon-monitor"),
        secure_broker.settings(None, client_id="liqmon-monitor"),
    ):
        with pytest.raises(Refused, match=r"not authorized \(CONNACK code 5\)") as refused:
            async with Publisher.connect(settings, "liqmon-monitor-out"):
                pass
        assert 5 == refused.value.code


# -- in the daemon -------------------------------------------------------------


async def test_the_daemon_reconnects_when_its_publisher_connection_is_taken_over(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Another client takes ``{client_id}-out``: the bus is not ready, reconnects, delivers."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    book = [btc_long(f"p-{n}") for n in range(3)]
    async with (
        running(settings) as daemon,
        Collector(mqtt_url, prefix) as collector,
        mqtt_client(mqtt_url, "feeder") as feeder,
    ):
        await publish(feeder, f"{prefix}/positions", book)
        await stored_positions(daemon, "BTCUSDT", 3)
        mark = f"{prefix}/prices/BTCUSDT/mark"
        await publish(feeder, mark, {"price": "60000", "ts": 1})

        async with Publisher.connect(settings.mqtt, f"{settings.mqtt.client_id}-out") as usurper:
            async with asyncio.timeout(5):
                while daemon.bus.connected.is_set():
                    await asyncio.sleep(0.002)
            # The bus comes back as the same client id and takes its connection back.
            with pytest.raises(ConnectionLost):
                await usurper.raise_when_lost()
        async with asyncio.timeout(10):
            while await daemon.failing():
                await asyncio.sleep(0.02)

        await publish(feeder, mark, {"price": "50000", "ts": 2})
        events = await collector.wait_for(3)
        async with asyncio.timeout(5):
            while await daemon.outbox.length(["BTCUSDT"]):
                await asyncio.sleep(0.02)
        # The reconnection left the bus's task with no cancellation pending.
        (bus,) = [t for t in asyncio.all_tasks() if t.get_name() == "mqtt"]
        assert bus.cancelling() == 0
    assert ["p-0:1:1", "p-1:1:1", "p-2:1:1"] == sorted(e["event_id"] for e in events)
    assert {"liquidation"} == {e["type"] for e in events}
