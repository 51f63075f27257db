"""The intake's MQTT subscriber: packets by hand, scripted brokers, then real mosquitto.

Producers are aiomqtt clients (QoS 0 and 1) or the outbox's
:class:`Publisher` (QoS 1 batches); brokers are mosquitto processes, paused
(SIGSTOP) or configured with passwords, the shipped ACL and TLS, and small
asyncio servers that send what a broker must not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import mqtt_client
from test_publisher import messages
from tls import make_certificates, start_secure_broker

from monitor.bus.client import Publisher, Subscriber
from monitor.bus.protocol import (
    QOS2,
    ConnectionLost,
    Message,
    Refused,
    SubscribeSession,
    SubscriptionRefused,
    acks,
    check_suback,
    connect_packet,
    split,
    subscribe_packet,
)
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer


class Boom(Exception):
    """What a failing handler raises."""


def publish(
    topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, dup: bool = False
) -> bytes:
    """A PUBLISH as a broker sends it (QoS 0, 1 or, to break the rules, 2 and 3)."""
    raw = topic.encode()
    body = len(raw).to_bytes(2, "big") + raw
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes((first,)) + encode_length(len(body)) + body


def encode_length(length: int) -> bytes:
    """MQTT's remaining length, written out independently of monitor.bus.client."""
    out = b""
    while True:
        byte, length = length % 128, length // 128
        out += bytes((byte + (128 if length else 0),))
        if not length:
            return out


class Handler:
    """Collects (topic, payload) as ``on_message``; ``arrived`` when ``expected`` have come."""

    def __init__(self, expected: int = 0) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.expected = expected
        self.arrived = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))
        if len(self.got) >= self.expected:
            self.arrived.set()


async def collect(
    subscriber: Subscriber, count: int, quiet_s: float = 0.3
) -> list[tuple[str, bytes]]:
    """Run ``subscriber`` until ``count`` messages came and then ``quiet_s`` of nothing more."""
    handler = Handler(count)
    running = asyncio.create_task(subscriber.run(handler))
    try:
        async with asyncio.timeout(10):
            await handler.arrived.wait()
        await asyncio.sleep(quiet_s)  # that nothing more comes, only time can show
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return handler.got


def spy_on_reads(subscriber: Subscriber) -> list[int]:
    """How many messages each call of the session's ``receive`` returned, from now on."""
    counts: list[int] = []
    receive = subscriber.session.receive

    def counting(data: bytes) -> list[Message]:
        found = receive(data)
        counts.append(len(found))
        return found

    subscriber.session.receive = counting  # type: ignore[method-assign]
    return counts


# -- the protocol, without a broker ------------------------------------------


def test_a_persistent_connect_and_a_subscribe_are_encoded_as_mqtt_3_1_1_says() -> None:
    """CONNECT without the clean-session flag; one SUBSCRIBE for all filters at maximum QoS 1."""
    assert b"\x10\x10\x00\x04MQTT\x04\x00\x00\x1e\x00\x04mon1" == connect_packet(
        "mon1", 30, clean_session=False
    )
    assert b"\x82\x0e\x00\x01\x00\x03a/+\x01\x00\x03b/#\x01" == subscribe_packet(1, ["a/+", "b/#"])
    assert b"\x40\x02\x00\x01\x40\x02\x01\x02" == acks([1, 258])
    assert b"\x50\x02\x00\x07" == acks([7 | QOS2]), "a QoS 2 message is answered with PUBREC"


@pytest.mark.parametrize("length", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_split_reads_every_length_of_remaining_length(length: int) -> None:
    """One to four length bytes; a packet cut anywhere, length bytes included, waits."""
    packet = b"\x30" + encode_length(length) + b"x" * length
    header = len(packet) - length
    assert ([(0x30, header, len(packet))], len(packet)) == split(packet + b"\xd0")
    for cut in {*range(1, header), len(packet) - 1} - {0}:
        assert ([], 0) == split(packet[:cut])


def test_a_five_byte_remaining_length_is_a_lost_connection() -> None:
    """Past four bytes of remaining length the stream is not MQTT any more."""
    with pytest.raises(ConnectionLost, match="malformed remaining length"):
        split(b"\x30\xff\xff\xff\xff\x01")


def test_messages_are_taken_in_order_across_any_split_of_the_stream() -> None:
    """QoS 0, QoS 1 (DUP too), SUBACK and PINGRESP cut at any byte give the same messages."""
    stream = b"".join(
        [
            b"\x90\x04\x00\x01\x01\x00",
            publish("p/BTCUSDT/mark", b'{"price":"1"}'),
            publish("p/ÉTHUSDT/mark", b"\x00\xff", qos=1, packet_id=7),
            b"\xd0\x00",
            publish("p/BTCUSDT/mark", b"x" * 300, qos=1, packet_id=65535, dup=True),
            publish("p/empty", b""),
        ]
    )
    expected = [
        ("p/BTCUSDT/mark", b'{"price":"1"}', 0),
        ("p/ÉTHUSDT/mark", b"\x00\xff", 7),
        ("p/BTCUSDT/mark", b"x" * 300, 65535),
        ("p/empty", b"", 0),
    ]
    whole = SubscribeSession()
    assert expected == whole.receive(stream)
    assert {1: b"\x01\x00"} == whole.granted
    for cut in range(1, len(stream)):
        session = SubscribeSession()
        assert expected == session.receive(stream[:cut]) + session.receive(stream[cut:]), cut
    bytewise = SubscribeSession()
    assert expected == [message for byte in stream for message in bytewise.receive(bytes((byte,)))]


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x30\x06\x00\x02\xff\xfexy", "not UTF-8"),
        (b"\x30\x05\x00\x03a\x00b", "unexpected packet"),
        (b"\x30\x04\x00\x09abcdefghi"[:6], "unexpected packet"),
        (b"\x30\x01\x00", "unexpected packet"),
        (b"\x32\x04\x00\x01t\x00", "unexpected packet"),
        (b"\x32\x05\x00\x01t\x00\x00", "unexpected packet"),
        (b"\x34\x04\x00\x01t\x00", "type 0x34"),
        (b"\x36\x05\x00\x01t\x00\x01", "type 0x36"),
        (b"\x40\x02\x00\x01", "type 0x40"),
        (b"\xd0\x01\x00", "type 0xd0"),
        (b"\x20\x02\x00\x00", "type 0x20"),
    ],
    ids=[
        "topic-not-utf8",
        "nul-in-topic",
        "topic-past-packet",
        "no-topic-length",
        "qos1-no-packet-id",
        "qos1-packet-id-0",
        "qos2-no-packet-id",
        "qos3",
        "puback",
        "long-pingresp",
        "second-connack",
    ],
)
def test_a_malformed_or_unexpected_packet_is_a_lost_connection(packet: bytes, reason: str) -> None:
    """Whatever a broker may not send a subscriber raises ConnectionLost, never anything else."""
    with pytest.raises(ConnectionLost, match=reason):
        SubscribeSession().receive(packet)


def test_a_suback_must_grant_every_filter() -> None:
    """0x80 for a filter is SubscriptionRefused naming it; a wrong count breaks the protocol."""
    check_suback(["a/#", "b/#"], b"\x01\x00")
    with pytest.raises(SubscriptionRefused, match="subscription to b/#") as refused:
        check_suback(["a/#", "b/#"], b"\x01\x80")
    assert ["b/#"] == refused.value.topics
    with pytest.raises(ConnectionLost, match="does not answer 2 subscriptions"):
        check_suback(["a/#", "b/#"], b"\x01")
    with pytest.raises(ConnectionLost):
        check_suback(["a/#"], b"\x02")


# -- scripted brokers ---------------------------------------------------------


@contextlib.asynccontextmanager
async def scripted_broker(
    suback: bytes, then: bytes = b"", before: bytes = b""
) -> AsyncIterator[MqttSettings]:
    """A server that accepts CONNECT, answers SUBSCRIBE with ``suback`` and sends ``then``.

    ``before`` (stored messages) goes out first, on its own: the SUBACK
    follows in a later write.
    """

    async def packet(reader: asyncio.StreamReader) -> bytes:
        buffer = b""
        while not (found := split(buffer)[0]):
            chunk = await reader.read(4096)
            assert chunk, "the client went away"
            buffer += chunk
        return buffer[: found[0][2]]

    serving: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        serving.add(task)
        try:
            assert 0x10 == (await packet(reader))[0]
            writer.write(b"\x20\x02\x00\x00")
            assert 0x82 == (await packet(reader))[0]
            if before:
                writer.write(before)
                await writer.drain()
                await asyncio.sleep(0.2)  # a segment of its own, read before the SUBACK
            if suback:
                writer.write(suback + then)
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the client closes
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield MqttSettings(url=f"mqtt://127.0.0.1:{port}")
        # The client has gone: let the server see it before the loop ends.
        if serving:
            await asyncio.wait(serving, timeout=5)


@pytest.mark.parametrize(
    "garbage",
    [
        publish("p/x", b"1") + b"\x30\x06\x00\x02\xff\xfexy",
        b"\x30\xff\xff\xff\xff\x01",
        publish("p/x", b"2", qos=3, packet_id=1),
        b"\xa0\x02\x00\x01",
    ],
    ids=["topic-not-utf8", "remaining-length", "qos3", "unsuback"],
)
async def test_garbage_from_the_broker_fails_the_connection_not_the_caller(garbage: bytes) -> None:
    """ConnectionLost (the Bus reconnects on it), from connect or run; nothing bad delivered."""
    handler = Handler()
    async with scripted_broker(b"\x90\x03\x00\x01\x01", garbage) as settings:
        # The garbage may come in the SUBACK's read (connect fails) or after it (run fails).
        with pytest.raises(ConnectionLost):
            async with Subscriber.connect(settings, "scripted", ["p/#"]) as subscriber:
                async with asyncio.timeout(5):
                    await subscriber.run(handler)
    # A good message read before the garbage (not in the same read) may have come.
    assert handler.got in ([], [("p/x", b"1")])


async def test_a_refused_subscription_is_subscription_refused() -> None:
    """SUBACK 0x80 (a broker that checks its ACL at subscribe time) names the filter."""
    async with scripted_broker(b"\x90\x04\x00\x01\x01\x80") as settings:
        with pytest.raises(SubscriptionRefused, match="liqmon/positions"):
            async with Subscriber.connect(
                settings, "s", ["liqmon/prices/+/mark", "liqmon/positions"]
            ):
                pass


async def test_no_suback_is_a_lost_connection() -> None:
    """A broker that never answers SUBSCRIBE: ConnectionLost after the connect timeout."""
    async with scripted_broker(b"") as settings:
        with pytest.raises(ConnectionLost, match=r"no SUBACK within 0\.3 s"):
            async with Subscriber.connect(settings, "s", ["p/#"], connect_timeout_s=0.3):
                pass


# -- against mosquitto --------------------------------------------------------


async def test_qos_0_and_1_arrive_in_order_and_qos_1_is_acknowledged(
    mqtt_url: str, prefix: str
) -> None:
    """Alternating QoS 0 and 1 reach the handler in order; none comes back on reconnect."""
    settings = MqttSettings(url=mqtt_url)
    sent = [(f"{prefix}/prices/S{n % 3}/mark", b"%d" % n) for n in range(40)]
    async with Subscriber.connect(
        settings, f"{prefix}-in", [f"{prefix}/prices/+/mark"]
    ) as subscriber:
        async with mqtt_client(mqtt_url) as producer:
            for n, (topic, payload) in enumerate(sent):
                await producer.publish(topic, payload, qos=n % 2)
        assert sent == await collect(subscriber, len(sent))
    async with Subscriber.connect(
        settings, f"{prefix}-in", [f"{prefix}/prices/+/mark"]
    ) as subscriber:
        handler = Handler()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await subscriber.run(handler)
    assert [] == handler.got


@pytest.mark.parametrize("failure", ["raises", "is-cancelled"])
async def test_a_message_is_acknowledged_only_after_its_handler_returned(
    mqtt_url: str, prefix: str, failure: str
) -> None:
    """Message 4's handler raises or hangs: on reconnect the broker sends 4 to 9 again, only."""
    settings = MqttSettings(url=mqtt_url)
    batch = messages(prefix, 10)
    filters = [f"{prefix}/#"]
    seen: list[bytes] = []

    async def failing(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == batch[4][1]:
            if failure == "raises":
                raise Boom
            await asyncio.Event().wait()

    async with Subscriber.connect(settings, f"{prefix}-in", filters) as subscriber:
        running = asyncio.create_task(subscriber.run(failing))
        async with Publisher.connect(settings, f"{prefix}-out") as publisher:
            await publisher.publish_batch(batch)
        async with asyncio.timeout(5):
            while len(seen) < 5:
                await asyncio.sleep(0.01)
        if failure == "is-cancelled":
            running.cancel()
        with pytest.raises(asyncio.CancelledError if failure == "is-cancelled" else Boom):
            await running
    assert [payload for _, payload in batch[:5]] == seen[:5]
    async with Subscriber.connect(settings, f"{prefix}-in", filters) as subscriber:
        again = await collect(subscriber, 6)
    assert batch[4:] == again


async def test_messages_published_while_away_arrive_on_return(mqtt_url: str, prefix: str) -> None:
    """Persistent session: QoS 1 messages sent while the subscriber was gone come, in order."""
    settings = MqttSettings(url=mqtt_url)
    batch = messages(prefix, 300)
    filters = [f"{prefix}/#"]
    async with Subscriber.connect(settings, f"{prefix}-in", filters):
        pass
    async with Publisher.connect(settings, f"{prefix}-out") as publisher:
        await publisher.publish_batch(batch)
    async with Subscriber.connect(settings, f"{prefix}-in", filters) as subscriber:
        assert batch == await collect(subscriber, len(batch))


async def test_a_packet_split_across_reads_is_put_back_together(mqtt_url: str, prefix: str) -> None:
    """A 300 kB payload comes in several reads and reaches the handler whole, then the next."""
    settings = MqttSettings(url=mqtt_url)
    big = (f"{prefix}/positions", os.urandom(300_000))
    small = (f"{prefix}/positions", b"after")
    async with Subscriber.connect(settings, f"{prefix}-in", [f"{prefix}/#"]) as subscriber:
        reads = spy_on_reads(subscriber)
        async with Publisher.connect(settings, f"{prefix}-out") as publisher:
            await publisher.publish_batch([big, small])
        assert [big, small] == await collect(subscriber, 2, quiet_s=0)
    assert 0 == reads[0], "the first read did not complete the large message"
    assert 2 == sum(reads)


async def test_many_packets_in_one_read_are_all_taken_in_order(
    fresh_mosquitto: Callable[..., MosquittoServer], prefix: str
) -> None:
    """While a handler holds the intake, QoS 1 messages pile up unread; one read takes dozens."""
    # No inflight limit: the broker sends all 500 at once, and with a
    # read-ahead of 1 the connection stops reading while the handler holds.
    broker = fresh_mosquitto(max_inflight_messages=0)
    settings = MqttSettings(url=broker.url)
    sent = [(f"{prefix}/prices/S{n % 7}/mark", b"%06d" % n) for n in range(500)]
    release = asyncio.Event()
    handler = Handler(len(sent))

    async def slow_first(topic: str, payload: bytes) -> None:
        await handler(topic, payload)
        if len(handler.got) == 1:
            await release.wait()

    async with Subscriber.connect(
        settings, f"{prefix}-in", [f"{prefix}/prices/+/mark"], read_ahead=1
    ) as subscriber:
        reads = spy_on_reads(subscriber)
        running = asyncio.create_task(subscriber.run(slow_first))
        async with Publisher.connect(settings, f"{prefix}-out") as publisher:
            await publisher.publish_batch(sent[:1])
            async with asyncio.timeout(5):
                while not handler.got:
                    await asyncio.sleep(0.01)
            await publisher.publish_batch(sent[1:])
        assert 1 == len(handler.got)
        release.set()
        async with asyncio.timeout(10):
            await handler.arrived.wait()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert sent == handler.got
    assert max(reads) > 50, reads


async def test_a_quiet_subscriber_keeps_its_connection_on_pings(
    fresh_mosquitto: Callable[..., MosquittoServer], prefix: str
) -> None:
    """Keep-alive 1 s: idle, or only ever reading QoS 0 ticks, the connection stays up."""
    broker = fresh_mosquitto()
    settings = MqttSettings(url=broker.url)
    handler = Handler(31)
    async with Subscriber.connect(
        settings, f"{prefix}-in", [f"{prefix}/#"], keepalive_s=1
    ) as subscriber:
        running = asyncio.create_task(subscriber.run(handler))
        await asyncio.sleep(2.0)  # mosquitto drops a silent client after 1.5 keep-alives
        async with mqtt_client(broker.url) as producer:
            for n in range(31):
                await producer.publish(f"{prefix}/tick", b"%d" % n, qos=0)
                await asyncio.sleep(0.1)  # ticks only, for 3 keep-alives: time is the test
        async with asyncio.timeout(5):
            await handler.arrived.wait()
        assert subscriber.failed is None
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert f"Client {prefix}-in has exceeded timeout" not in broker.log_path.read_text()


async def test_a_paused_broker_is_noticed_by_keep_alive(
    fresh_mosquitto: Callable[..., MosquittoServer], prefix: str
) -> None:
    """The broker stops answering (SIGSTOP): run() raises ConnectionLost within two keep-alives."""
    broker = fresh_mosquitto()
    async with Subscriber.connect(
        MqttSettings(url=broker.url), f"{prefix}-in", [f"{prefix}/#"], keepalive_s=1
    ) as subscriber:
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ConnectionLost, match="no PINGRESP within 1 s"):
                async with asyncio.timeout(5):
                    await subscriber.run(Handler())
        finally:
            os.kill(broker.pid, signal.SIGCONT)


async def test_a_broker_that_goes_away_is_a_lost_connection(
    fresh_mosquitto: Callable[..., MosquittoServer], prefix: str
) -> None:
    """The broker is killed: run() raises ConnectionLost at once."""
    broker = fresh_mosquitto()
    async with Subscriber.connect(
        MqttSettings(url=broker.url), f"{prefix}-in", [f"{prefix}/#"]
    ) as subscriber:
        running = asyncio.create_task(subscriber.run(Handler()))
        await asyncio.to_thread(broker.kill)
        with pytest.raises(ConnectionLost, match=r"closed|lost"):
            async with asyncio.timeout(5):
                await running


# -- passwords, ACL and TLS ----------------------------------------------------


@pytest.mark.parametrize("client_cert", [False, True], ids=["password", "client-cert"])
async def test_the_monitor_user_reads_prices_and_positions_over_tls(
    fresh_mosquitto: Any, tmp_path: Path, client_cert: bool
) -> None:
    """As ``liqmon`` over TLS, subscribed as the Bus is: the ACL lets the feeder's ticks in."""
    secure_broker = start_secure_broker(
        fresh_mosquitto, make_certificates(tmp_path / "certs"), tmp_path
    )
    settings = secure_broker.settings("liqmon", client_cert=client_cert, client_id="liqmon-monitor")
    feeder = secure_broker.settings("feeder", client_id="feeder-1")
    sent = [
        ("liqmon/prices/BTCUSDT/mark", b'{"price":"64000.5","ts":1}'),
        ("liqmon/positions", b'[{"id":"p-1"}]'),
        ("liqmon/prices/ETHUSDT/mark", b'{"price":"3000","ts":2}'),
    ]
    filters = ["liqmon/prices/+/mark", "liqmon/prices/+/index", "liqmon/positions"]
    async with Subscriber.connect(settings, settings.client_id, filters) as subscriber:
        async with Publisher.connect(feeder, feeder.client_id) as publisher:
            await publisher.publish_batch(sent)
        assert sent == await collect(subscriber, len(sent), quiet_s=0)


async def test_wrong_credentials_are_refused_with_the_reason(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    """A wrong password or no login: Refused, naming CONNACK's return code."""
    secure_broker = start_secure_broker(
        fresh_mosquitto, make_certificates(tmp_path / "certs"), tmp_path
    )
    for settings in (
        secure_broker.settings("liqmon", "guess", client_id="liqmon-monitor"),
        secure_broker.settings(None, client_id="liqmon-monitor"),
    ):
        with pytest.raises(Refused, match=r"not authorized \(CONNACK code 5\)") as refused:
            async with Subscriber.connect(settings, settings.client_id, ["liqmon/positions"]):
                pass
        assert 5 == refused.value.code
