"""The lean MQTT client's hard cases, each reproduced against a real mosquitto.

Sessions left at QoS 2 by someone else, backlogs larger than the read-ahead
(``max_inflight_messages 0``), a handler that stalls under a flood, a broker
that lost the session or downgrades subscriptions, packets MQTT cannot
carry, and a broker that stops reading (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
import structlog
from harness import mqtt_client
from test_mqtt_subscriber import Handler, collect, publish, scripted_broker
from test_publisher import messages, received

from monitor.bus.client import Publisher, Subscriber, counters
from monitor.bus.protocol import (
    ConnectionLost,
    InvalidPacket,
    PublishSession,
    SubscribeSession,
    SubscriptionRefused,
    check_connack,
    connect_packet,
    subscribe_packet,
)
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer

Broker = Callable[..., MosquittoServer]


class Stalled:
    """A handler that holds the intake on its first message until ``release`` is set."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))
        self.changed.set()
        if len(self.got) == 1:
            await self.release.wait()

    async def wait_for(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``done()`` holds, checking after every message handled."""
        async with asyncio.timeout(timeout_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(subscriber: Subscriber, handler: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """``subscriber.run(handler)`` in a task, cancelled on exit."""
    task = asyncio.create_task(subscriber.run(handler))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def raw_producer(broker: MosquittoServer) -> AsyncIterator[asyncio.StreamWriter]:
    """A bare TCP connection that has sent CONNECT (no keep-alive): write QoS 0 PUBLISHes to it."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    writer.write(connect_packet("raw-producer", 0))
    assert b"\x20\x02\x00\x00" == await reader.readexactly(4)
    try:
        yield writer
    finally:
        writer.write(b"\xe0\x00")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- QoS 2 in the session -----------------------------------------------------


def test_a_qos_2_publish_is_delivered_once_and_its_pubrel_answered() -> None:
    """QoS 2 comes out flagged for a PUBREC, once before its PUBREL; a PUBREL gets a PUBCOMP."""
    session = SubscribeSession()
    first = session.receive(publish("p/x", b"1", qos=2, packet_id=9))
    assert [("p/x", b"1", 9 | 0x10000)] == first
    assert [] == session.receive(publish("p/x", b"1", qos=2, packet_id=9, dup=True))
    assert [] == session.receive(b"\x62\x02\x00\x09")
    assert b"\x70\x02\x00\x09" == session.take_replies()
    assert [("p/x", b"2", 9 | 0x10000)] == session.receive(publish("p/x", b"2", qos=2, packet_id=9))
    # A PUBREL for a message of an earlier connection is completed too.
    assert [] == session.receive(b"\x62\x02\x01\x00")
    assert b"\x70\x02\x01\x00" == session.take_replies()


async def test_qos_2_messages_stored_in_the_session_are_delivered_once_and_completed(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """Someone once subscribed as the monitor at QoS 2: stored messages arrive once, in order."""
    broker = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    client_id, filters = f"{prefix}-in", [f"{prefix}/#"]
    operator = aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=False)
    async with operator:
        await operator.subscribe(f"{prefix}/#", qos=2)
    sent = [(f"{prefix}/positions", b"%d" % n) for n in range(50)]
    async with mqtt_client(broker.url) as producer:
        for topic, payload in sent:
            await producer.publish(topic, payload, qos=2)
    async with Subscriber.connect(settings, client_id, filters) as subscriber:
        assert sent == await collect(subscriber, len(sent))
        assert subscriber.failed is None
    async with Subscriber.connect(settings, client_id, filters) as subscriber:
        again = Handler()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await subscriber.run(again)
        assert subscriber.failed is None
    assert [] == again.got


# -- backlogs larger than the read-ahead ----------------------------------------


async def test_a_stored_backlog_larger_than_read_ahead_comes_before_the_suback(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """No inflight limit: 3,000 stored messages precede the SUBACK; all arrive, memory bounded."""
    broker = fresh_mosquitto(max_inflight_messages=0)
    settings = MqttSettings(url=broker.url)
    client_id, filters = f"{prefix}-in", [f"{prefix}/#"]
    async with Subscriber.connect(settings, client_id, filters):
        pass
    batch = messages(prefix, 3000, size=300)
    async with Publisher.connect(settings, f"{prefix}-out") as publisher:
        await publisher.publish_batch(batch)
    got: list[tuple[str, bytes]] = []
    waiting: list[int] = []
    async with Subscriber.connect(
        settings, client_id, filters, read_ahead=200, connect_timeout_s=3
    ) as subscriber:

        async def handler(topic: str, payload: bytes) -> None:
            got.append((topic, payload))
            waiting.append(subscriber.waiting)

        async with running(subscriber, handler):
            async with asyncio.timeout(10):
                while len(got) < len(batch):
                    await asyncio.sleep(0.01)
        assert subscriber.failed is None
    assert batch == got
    # One read (256 kB, about 800 of these messages) past the read-ahead at most.
    assert max(waiting) < 200 + 1000


async def test_a_refusal_after_stored_messages_is_raised_by_run(prefix: str) -> None:
    """Stored messages fill the read-ahead before a SUBACK 0x80: handed over, then run raises."""
    stored = publish("p/a", b"1", qos=1, packet_id=1) + publish("p/b", b"2", qos=1, packet_id=2)
    async with scripted_broker(b"\x90\x03\x00\x01\x80", before=stored) as settings:
        handler = Handler()
        with pytest.raises(SubscriptionRefused, match="p/#"):
            async with Subscriber.connect(
                settings, "s", ["p/#"], read_ahead=1, connect_timeout_s=2
            ) as subscriber:
                async with asyncio.timeout(5):
                    await subscriber.run(handler)
    assert [("p/a", b"1"), ("p/b", b"2")] == handler.got


# -- a stalled handler ----------------------------------------------------------


async def test_a_stalled_handler_under_a_qos_0_flood_keeps_its_connection(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """Keep-alive 1 s, the handler stuck 3 s under ticks: the connection lives, stale ticks go."""
    broker = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    handler = Stalled()
    dropped_before = counters.qos0_dropped
    async with (
        Subscriber.connect(
            settings, f"{prefix}-in", [f"{prefix}/#"], keepalive_s=1, read_ahead=100
        ) as subscriber,
        running(subscriber, handler),
        raw_producer(broker) as producer,
        mqtt_client(broker.url) as qos1_producer,
    ):
        tick = f"{prefix}/prices/BTCUSDT/mark"
        producer.write(publish(tick, b"first"))
        await handler.wait_for(lambda: len(handler.got) == 1)
        for n in range(60):
            producer.write(b"".join(publish(tick, b"%06d" % (n * 200 + i)) for i in range(200)))
            if n == 30:
                await qos1_producer.publish(f"{prefix}/positions", b"position", qos=1)
            await asyncio.sleep(0.05)  # the flood lasts 3 s, three keep-alives: time is the test
        producer.write(publish(tick, b"last"))
        await asyncio.sleep(0.3)  # the handler stays stuck a little longer (time is the test)
        assert subscriber.failed is None
        handler.release.set()
        await handler.wait_for(lambda: handler.got[-1] == (tick, b"last"))
        assert (f"{prefix}/positions", b"position") in handler.got
        assert subscriber.dropped > 0
        assert subscriber.failed is None
    assert counters.qos0_dropped - dropped_before == subscriber.dropped
    assert f"Client {prefix}-in has exceeded timeout" not in broker.log_path.read_text()


async def test_a_stalled_handler_under_a_qos_1_backlog_keeps_its_connection(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """No inflight limit, keep-alive 1 s, handler stuck 3 s: nothing lost, connection kept."""
    broker = fresh_mosquitto(max_inflight_messages=0)
    settings = MqttSettings(url=broker.url)
    batch = messages(prefix, 3000, size=300)
    handler = Stalled()
    async with (
        Subscriber.connect(
            settings, f"{prefix}-in", [f"{prefix}/#"], keepalive_s=1, read_ahead=50
        ) as subscriber,
        running(subscriber, handler),
    ):
        async with Publisher.connect(settings, f"{prefix}-out") as publisher:
            await publisher.publish_batch(batch)
        await asyncio.sleep(3)  # the handler stays stuck three keep-alives: time is the test
        assert subscriber.failed is None
        handler.release.set()
        await handler.wait_for(lambda: len(handler.got) == len(batch))
        assert subscriber.failed is None
    assert batch == handler.got
    assert f"Client {prefix}-in has exceeded timeout" not in broker.log_path.read_text()


# -- what the broker says about the session and the subscriptions ------------------


def test_connack_says_whether_the_session_was_present() -> None:
    """The CONNACK's first flag is returned; a refusal still raises."""
    assert check_connack(b"\x20\x02\x01\x00") is True
    assert check_connack(b"\x20\x02\x00\x00") is False


async def test_a_session_the_broker_lost_is_reported_on_reconnect(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """A broker restarted without persistence: one warning naming the client, one count."""
    broker = fresh_mosquitto(persistence=False)
    settings = MqttSettings(url=broker.url)
    client_id, filters = f"{prefix}-in", [f"{prefix}/#"]
    lost_before = counters.sessions_lost
    with structlog.testing.capture_logs() as logs:
        async with Subscriber.connect(settings, client_id, filters) as subscriber:
            assert subscriber.session_present is False  # the first connection ever
        async with Subscriber.connect(settings, client_id, filters) as subscriber:
            assert subscriber.session_present is True
        await asyncio.to_thread(broker.restart)
        async with Subscriber.connect(settings, client_id, filters) as subscriber:
            assert subscriber.session_present is False
    assert 1 == counters.sessions_lost - lost_before
    warnings = [line for line in logs if line["event"] == "mqtt_session_lost"]
    assert [client_id] == [line["client_id"] for line in warnings]
    assert "warning" == warnings[0]["log_level"]


async def test_a_subscription_granted_at_qos_0_is_logged_naming_the_filter(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """``max_qos 0`` on the broker: one warning naming the downgraded filters; messages flow."""
    broker = fresh_mosquitto(extra_config=["max_qos 0"])
    settings = MqttSettings(url=broker.url)
    filters = [f"{prefix}/positions", f"{prefix}/prices/+/mark"]
    with structlog.testing.capture_logs() as logs:
        async with Subscriber.connect(settings, f"{prefix}-in", filters) as subscriber:
            assert {filters[0]: 0, filters[1]: 0} == subscriber.granted
            async with mqtt_client(broker.url) as producer:
                await producer.publish(f"{prefix}/positions", b"p", qos=0)
            assert [(f"{prefix}/positions", b"p")] == await collect(subscriber, 1, quiet_s=0)
    warnings = [line for line in logs if line["event"] == "mqtt_subscription_downgraded"]
    assert 1 == len(warnings)
    assert filters == warnings[0]["topics"]
    assert "warning" == warnings[0]["log_level"]


async def test_a_filter_an_older_configuration_left_in_the_session_is_unsubscribed(
    mqtt_url: str, prefix: str
) -> None:
    """A persistent session that once held a filter no longer asked for drops it on the next
    connection (``unsubscribe``): its messages stop coming, the others keep coming in order."""
    settings = MqttSettings(url=mqtt_url)
    client_id, kept, dropped = f"{prefix}-in", f"{prefix}/kept", f"{prefix}/dropped"
    async with Subscriber.connect(settings, client_id, [kept, dropped]):
        pass
    async with Subscriber.connect(settings, client_id, [kept], unsubscribe=[dropped]) as subscriber:
        async with mqtt_client(mqtt_url) as producer:
            await producer.publish(dropped, b"1", qos=1)
            await producer.publish(kept, b"2", qos=1)
            await producer.publish(dropped, b"3", qos=1)
            await producer.publish(kept, b"4", qos=1)
        assert [(kept, b"2"), (kept, b"4")] == await collect(subscriber, 2, quiet_s=0.3)


# -- packets MQTT cannot carry ---------------------------------------------------


def test_packets_mqtt_cannot_carry_raise_invalid_packet_and_change_nothing() -> None:
    """A 70 kB topic, a 256 MiB packet, a wildcard topic: InvalidPacket, no packet id used."""
    session = PublishSession()
    for batch, reason in [
        ([("ok", b"1"), ("t" * 70_000, b"x")], "70,000 bytes"),
        ([("ok", b"1"), ("t", bytes(256 * 1024 * 1024))], "256 MiB"),
        ([("ok", b"1"), ("a/+/b", b"x")], "wildcard"),
        ([("", b"x")], "empty"),
        ([("a\udcff", b"x")], "UTF-8"),
    ]:
        with pytest.raises(InvalidPacket, match=reason):
            session.publishes(batch)
        assert set() == session.inflight
        assert 1 == session.next_packet_id
    with pytest.raises(InvalidPacket, match="topic filter"):
        subscribe_packet(1, ["f" * 70_000])
    with pytest.raises(InvalidPacket, match="client id"):
        connect_packet("c" * 70_000, 30)


async def test_an_invalid_topic_is_refused_before_writing_and_the_connection_lives(
    mqtt_url: str, prefix: str
) -> None:
    """publish_batch raises InvalidPacket for a 70 kB topic; the next batch still goes out."""
    settings = MqttSettings(url=mqtt_url)
    async with mqtt_client(mqtt_url) as watcher:
        await watcher.subscribe(f"{prefix}/#", qos=1)
        async with Publisher.connect(settings, f"{prefix}-out") as publisher:
            with pytest.raises(InvalidPacket, match="65,535"):
                await publisher.publish_batch([(f"{prefix}/" + "t" * 70_000, b"x")])
            assert publisher.failed is None
            await publisher.publish_batch([(f"{prefix}/ok", b"after")])
        assert [(f"{prefix}/ok", b"after", 1)] == await received(watcher, 1)


# -- a broker that stops reading -------------------------------------------------


async def test_a_broker_that_stops_reading_fails_the_publisher_within_its_deadline(
    fresh_mosquitto: Broker, prefix: str
) -> None:
    """SIGSTOP mid-batch, keep-alive 30 s: the stuck write fails in seconds; the watch sees it."""
    broker = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    batch = [(f"{prefix}/big", os.urandom(1_000_000))] * 40
    assert broker.pid is not None
    async with Publisher.connect(settings, f"{prefix}-out", ack_timeout_s=1.0) as publisher:
        watch = asyncio.create_task(publisher.raise_when_lost())
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ConnectionLost, match=r"read nothing for 1\.0 s"):
                async with asyncio.timeout(8):
                    await publisher.publish_batch(batch)
            with pytest.raises(ConnectionLost):
                async with asyncio.timeout(1):
                    await watch
        finally:
            os.kill(broker.pid, signal.SIGCONT)
