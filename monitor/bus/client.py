"""Lean MQTT 3.1.1 clients on asyncio: the outbox's publisher and the intake's subscriber.

The monitor's two hot paths are MQTT: the outbox is drained in batches of
hundreds of events, and thousands of mark ticks a second come in. aiomqtt
(paho underneath) spends about 170 µs of Python per QoS 1 publish (a future,
a paho message object, a lock and a callback each) and 110-160 µs of CPU
per message received (three ``recv`` calls, a message object, aiomqtt's
queue and iterator), where the subscriber here takes 40-60
(``benchmarks/receive.py``). A batch of publishes becomes one ``bytes``
written in one call, and whatever one read returned is parsed in one pass,
PUBACKs and PUBLISHes alike: the broker, not this process, sets the pace.
aiomqtt stays for everything off those paths (``liqmon watch``, the demo,
the tests).

Theory of operation:

* Packets, without I/O: encoders (:func:`connect_packet`,
  :func:`subscribe_packet`), checks of the broker's answers
  (:func:`check_connack`, :func:`check_suback`) and :func:`split`, which
  finds the complete packets at the head of a buffer (the one decoder of
  MQTT's variable-length "remaining length").
* Sessions, without I/O: :class:`PublishSession` encodes QoS 1 PUBLISHes,
  hands out packet ids and takes PUBACKs off the received bytes;
  :class:`SubscribeSession` turns received bytes into (topic, payload,
  packet id) messages, records SUBACKs and answers PUBRELs.
* :class:`Connection` is the asyncio shell both clients share: an
  :class:`asyncio.Protocol` on one TCP or TLS transport that sends CONNECT
  and checks the CONNACK, parses what arrives as it arrives, wakes the one
  coroutine waiting for it, keeps the connection alive with a timer (a
  PINGREQ after ``keepalive_s`` without a write; no byte from the broker for
  as long after it means the broker is gone), fails once and says goodbye.
  No StreamReader, reader task or timeout per read: each of those cost more
  CPU per message than the parsing. A write buffer that stays full
  without shrinking for ``write_timeout_s`` means the broker stopped
  reading (half-open, or paused): the connection fails instead of hanging.
* :class:`Publisher`: a clean session (the Redis outbox is the durable
  store) and :meth:`Publisher.publish_batch`, which writes as many packets
  as the window of unacknowledged messages allows and returns once every
  PUBACK of the batch has arrived.
* :class:`Subscriber`: a persistent session (``clean_session=False`` and a
  stable client id, so QoS 1 messages published while the monitor was away
  are delivered when it returns) and :meth:`Subscriber.run`, which hands
  every message to a coroutine, in order, and acknowledges a QoS 1 message
  only after that coroutine returned: one write of PUBACKs for all the
  messages handled in one go.
  Subscriptions ask for at most QoS 1, so the broker downgrades QoS 2
  publishes. QoS 2 messages still come from a session someone once
  subscribed to at QoS 2 with the same client id: each is handed over once
  per connection, answered with a PUBREC once handled, and completed
  (PUBCOMP) when the broker's PUBREL comes.

A handler that falls behind neither grows memory without bound nor
silences the connection (an unread PINGRESP or SUBACK would fail it):

* at most ``read_ahead`` messages wait for the handler; past that the
  oldest QoS 0 ones among them are dropped (down to half the read-ahead:
  one pass per half, not per message) and counted in
  :attr:`Subscriber.dropped` and :data:`counters`: a tick that waited
  behind thousands is stale, and the broker would drop them anyway.
* QoS 1 and 2 messages are never dropped: the handler holds them back by
  acknowledging late (the broker's ``max_inflight_messages``). Only when
  they alone fill half the read-ahead (a broker with no inflight limit)
  does the connection stop reading; keep-alive then still sends its
  PINGREQs and does not expect an answer until reading resumes.
* stored messages may fill the read-ahead before the SUBACK arrives: then
  :meth:`Subscriber.connect` returns without it, :meth:`Subscriber.run`
  hands them over, and the SUBACK is checked when it comes.

What the broker says about the session is not ignored: a persistent
session the broker no longer had on a reconnect (``session present`` 0, so
whatever was queued for the monitor is gone) and a subscription granted at
QoS 0 (at most once, nothing kept while away) each log one warning and are
counted in :data:`counters`.

Every failure is an :class:`MqttError`; after one, the connection is
unusable and the caller reconnects (the Bus restarts both connections),
except :class:`InvalidPacket`, raised before anything is written::

    MqttError
    ├── Refused              CONNACK with a non-zero return code (credentials, ACL...)
    ├── SubscriptionRefused  SUBACK failure (0x80) for a topic filter, e.g. denied by the ACL
    ├── ConnectionLost       cannot connect, closed or broken, keep-alive unanswered,
    │                        a malformed or unexpected packet from the broker,
    │                        a broker that stopped reading what is written to it
    ├── AckTimeout           no PUBACK within ack_timeout_s while messages are in flight
    └── InvalidPacket        a packet MQTT cannot carry (a topic over 65,535 bytes, a
                             packet over 256 MiB...): nothing written, the connection lives
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar, cast

import structlog

from monitor.config.settings import MqttSettings

log = structlog.get_logger("liqmon.mqtt")

__all__ = [
    "AckTimeout",
    "Connection",
    "ConnectionLost",
    "Counters",
    "InvalidPacket",
    "Message",
    "MqttError",
    "OnMessage",
    "PublishSession",
    "Publisher",
    "Refused",
    "SubscribeSession",
    "Subscriber",
    "SubscriptionRefused",
    "acks",
    "check_connack",
    "check_suback",
    "connect_packet",
    "counters",
    "split",
    "subscribe_packet",
    "tls_context",
    "unsubscribe_packet",
]

MAX_PACKET_ID = 65535
MAX_REMAINING_LENGTH = 268_435_455
"""The largest packet MQTT's four-byte remaining length can describe (256 MiB)."""
MAX_STRING_BYTES = 65_535
"""The longest UTF-8 string (topic, client id...) a two-byte length prefix allows."""
QOS2 = 0x10000
"""Added to the packet id of a QoS 2 :data:`Message`: it is answered with a PUBREC."""
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
SUBSCRIBE_ID = 1
"""The packet id of the one SUBSCRIBE a subscriber sends (it never publishes)."""

UNSUBSCRIBE_ID = 2
"""The packet id of the one UNSUBSCRIBE a subscriber may send after it."""

_CONNACK = 0x20
_PUBLISH = 0x30
_PUBLISH_QOS1 = 0x32
_PUBACK = 0x40
_PUBREC = 0x50
_PUBREL = 0x62
_PUBCOMP = 0x70
_SUBSCRIBE = 0x82
_SUBACK = 0x90
_UNSUBSCRIBE = 0xA2
_UNSUBACK = 0xB0
_PINGRESP = 0xD0
_SUBACK_FAILURE = 0x80
_TOPIC_CACHE_SIZE = 4096
_packet_id = struct.Struct(">H").pack
_puback = struct.Struct(">BBH").pack

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

Message = tuple[str, bytes, int]
"""A received PUBLISH: topic, payload and packet id (0 for QoS 0, plus :data:`QOS2` for QoS 2)."""

OnMessage = Callable[[str, bytes], Awaitable[None]]


class MqttError(Exception):
    """The connection is unusable: back off and reconnect."""


class Refused(MqttError):
    """The broker refused the connection; ``code`` is the CONNACK return code."""

    def __init__(self, code: int) -> None:
        reason = CONNACK_CODES.get(code, "unknown return code")
        super().__init__(f"the broker refused the connection: {reason} (CONNACK code {code})")
        self.code = code


class SubscriptionRefused(MqttError):
    """The broker refused subscriptions (SUBACK 0x80); ``topics`` are their filters."""

    def __init__(self, topics: Sequence[str]) -> None:
        super().__init__(
            f"the broker refused the subscription to {', '.join(topics)} (SUBACK 0x80): "
            "is the user allowed to read them?"
        )
        self.topics = list(topics)


class ConnectionLost(MqttError):
    """The connection could not be opened, was closed or broke, or the broker broke the protocol."""


class AckTimeout(MqttError):
    """Messages were in flight and no PUBACK arrived for ``ack_timeout_s``."""


class InvalidPacket(MqttError):
    """A packet MQTT 3.1.1 cannot carry; raised before anything is written, the connection lives."""


@dataclass
class Counters:
    """What the clients of this process noticed and survived, for the metrics to export."""

    sessions_lost: int = 0
    """Reconnects of a persistent session the broker no longer had (session present 0)."""
    qos0_dropped: int = 0
    """QoS 0 messages dropped, oldest first, while the handler was ``read_ahead`` behind."""
    subscriptions_downgraded: int = 0
    """Topic filters the broker granted at QoS 0 when QoS 1 was asked for."""


counters = Counters()
"""This process's :class:`Counters` (all its subscribers together)."""

_persistent_sessions: set[tuple[str, int, str]] = set()
"""(host, port, client id) of every persistent session a broker accepted in this process."""


# -- packets ------------------------------------------------------------------


def _varint(length: int) -> bytes:
    """MQTT's remaining length: 7 bits per byte, low bits first; 256 MiB at most."""
    if length > MAX_REMAINING_LENGTH:
        raise InvalidPacket(
            f"a packet of {length:,} bytes is over MQTT's limit of "
            f"{MAX_REMAINING_LENGTH:,} bytes (256 MiB)"
        )
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str, what: str = "string", *, secret: bool = False) -> bytes:
    """``text`` as MQTT's length-prefixed UTF-8; errors name ``what``, shown unless secret."""
    try:
        raw = text.encode()
    except UnicodeEncodeError as error:
        problem = f"cannot be encoded as UTF-8: {error.reason}"
    else:
        if len(raw) <= MAX_STRING_BYTES:
            return len(raw).to_bytes(2, "big") + raw
        problem = f"is {len(raw):,} bytes in UTF-8; MQTT allows at most {MAX_STRING_BYTES:,}"
    shown = "" if secret else f" {text[:40]!r}{'...' if len(text) > 40 else ''}"
    raise InvalidPacket(f"the {what}{shown} {problem}")


def _publish_header(length: int) -> bytes:
    """Fixed header of a QoS 1 PUBLISH whose variable header and payload take ``length`` bytes."""
    # Events are a few hundred bytes: the two-byte length is the common case.
    if length < 0x80:
        return bytes((_PUBLISH_QOS1, length))
    if length < 0x4000:
        return bytes((_PUBLISH_QOS1, (length & 0x7F) | 0x80, length >> 7))
    return bytes((_PUBLISH_QOS1,)) + _varint(length)


def connect_packet(
    client_id: str,
    keepalive_s: int,
    username: str | None = None,
    password: str | None = None,
    *,
    clean_session: bool = True,
) -> bytes:
    """A CONNECT for ``client_id`` with the keep-alive, the session flag and the credentials."""
    flags = 0x02 if clean_session else 0x00
    payload = _string(client_id, "client id")
    if username is not None:
        flags |= 0x80
        payload += _string(username, "user name", secret=True)
        # MQTT 3.1.1 allows a password only together with a user name.
        if password is not None:
            flags |= 0x40
            payload += _string(password, "password", secret=True)
    body = _string("MQTT") + bytes((4, flags)) + keepalive_s.to_bytes(2, "big") + payload
    return bytes((0x10,)) + _varint(len(body)) + body


def check_connack(packet: bytes) -> bool:
    """Whether the broker had a session for the client (the CONNACK's session-present flag).

    Raises :class:`Refused` or :class:`ConnectionLost` unless ``packet``
    accepts the client.
    """
    if len(packet) != 4 or packet[0] != _CONNACK or packet[1] != 2:
        raise ConnectionLost(f"expected a CONNACK, got {packet!r}")
    if packet[3] != 0:
        raise Refused(packet[3])
    return bool(packet[2] & 0x01)


def unsubscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    """One UNSUBSCRIBE of every filter in ``topics``."""
    body = _packet_id(packet_id) + b"".join(_string(topic, "topic filter") for topic in topics)
    return bytes((_UNSUBSCRIBE,)) + _varint(len(body)) + body


def subscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    """One SUBSCRIBE for every filter in ``topics``, each at maximum QoS 1."""
    body = _packet_id(packet_id) + b"".join(
        _string(topic, "topic filter") + b"\x01" for topic in topics
    )
    return bytes((_SUBSCRIBE,)) + _varint(len(body)) + body


def check_suback(topics: Sequence[str], codes: bytes) -> None:
    """Raise unless ``codes`` (a SUBACK's return codes) grant every filter of ``topics``.

    :class:`SubscriptionRefused` names the refused filters; a count that does
    not match, or a QoS above the 1 asked for, is a :class:`ConnectionLost`.
    """
    if len(codes) != len(topics) or any(code > 1 and code != _SUBACK_FAILURE for code in codes):
        raise ConnectionLost(f"SUBACK {codes!r} does not answer {len(topics)} subscriptions")
    refused = [topic for topic, code in zip(topics, codes, strict=True) if code == _SUBACK_FAILURE]
    if refused:
        raise SubscriptionRefused(refused)


def split(buffer: bytes | bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """The complete packets at the head of ``buffer``, and how many bytes they take.

    Each packet is (first byte, start, end): its variable header and payload
    are ``buffer[start:end]``. A packet cut off by the end of the buffer, its
    remaining length included, is left for the next read. A remaining
    length longer than four bytes raises :class:`ConnectionLost`.
    """
    packets: list[tuple[int, int, int]] = []
    size = len(buffer)
    at = 0
    while size - at >= 2:
        length = buffer[at + 1]
        start = at + 2
        if length & 0x80:
            length &= 0x7F
            for shift in (7, 14, 21):
                if start == size:
                    return packets, at
                byte = buffer[start]
                start += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
            else:
                raise ConnectionLost(
                    f"malformed remaining length from the broker: {bytes(buffer[at : at + 5])!r}"
                )
        end = start + length
        if end > size:
            break
        packets.append((buffer[at], start, end))
        at = end
    return packets, at


def _unexpected(buffer: bytes | bytearray, kind: int, start: int, end: int) -> ConnectionLost:
    return ConnectionLost(
        f"unexpected packet from the broker: type 0x{kind:02x}, "
        f"{end - start} bytes {bytes(buffer[start : min(end, start + 16)])!r}"
    )


# -- sessions: the protocol without I/O ---------------------------------------


class PublishSession:
    """The publishing side of MQTT 3.1.1 at QoS 1, without I/O: bytes out, bytes in.

    ``inflight`` holds the packet ids sent and not yet acknowledged.
    """

    def __init__(self, first_packet_id: int = 1) -> None:
        if not 1 <= first_packet_id <= MAX_PACKET_ID:
            raise ValueError(f"packet ids run from 1 to {MAX_PACKET_ID}, not {first_packet_id}")
        self.next_packet_id = first_packet_id
        self.inflight: set[int] = set()
        self._buffer = bytearray()
        self._topics: dict[str, bytes] = {}

    def publishes(self, messages: Sequence[tuple[str, bytes]]) -> bytes:
        """The QoS 1 PUBLISH packets of ``messages`` (topic, payload), in order, as one write.

        Each message gets the next packet id not in flight, which is added to
        :attr:`inflight`. The caller keeps fewer than 65535 messages in flight.
        A message MQTT cannot carry (a topic that is empty, holds a wildcard
        or U+0000 or takes over 65,535 bytes; a packet over 256 MiB) raises
        :class:`InvalidPacket`, and then no packet id is used.
        """
        parts: list[bytes] = []
        append = parts.append
        inflight = self.inflight
        topics = self._topics
        packet_id = self.next_packet_id
        try:
            for topic, payload in messages:
                while packet_id in inflight:
                    packet_id = packet_id % MAX_PACKET_ID + 1
                field = topics.get(topic)
                if field is None:
                    field = self._topic_field(topic)
                append(_publish_header(len(field) + 2 + len(payload)))
                append(field)
                append(_packet_id(packet_id))
                append(payload)
                inflight.add(packet_id)
                packet_id = packet_id % MAX_PACKET_ID + 1
        except InvalidPacket:
            # The messages before the bad one go nowhere either: give back
            # their packet ids (every fourth part), so nothing waits for them.
            for raw in parts[2::4]:
                inflight.discard(int.from_bytes(raw, "big"))
            raise
        self.next_packet_id = packet_id
        return b"".join(parts)

    def _topic_field(self, topic: str) -> bytes:
        # Topics repeat (account x symbol x event type): encode each once, in a
        # bounded cache so that a book of millions of accounts cannot grow it.
        # A broker disconnects a client that publishes to a topic MQTT forbids:
        # said here, once per topic, it names the topic instead.
        if not topic:
            raise InvalidPacket("cannot publish to an empty topic")
        if "+" in topic or "#" in topic or "\x00" in topic:
            raise InvalidPacket(
                f"cannot publish to {topic[:80]!r}: a topic name holds no wildcard (+ #) or U+0000"
            )
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        field = self._topics[topic] = _string(topic, "topic")
        return field

    def receive(self, data: bytes) -> int:
        """Take the PUBACKs (and PINGRESPs) in ``data``; return how many PUBACKs.

        Acknowledged ids leave :attr:`inflight`; a PUBACK for an id not in
        flight is ignored. A partial packet waits for the next call. Anything
        else the broker may not send to a publisher raises :class:`ConnectionLost`.
        """
        buffer = self._buffer
        buffer += data
        packets, used = split(buffer)
        inflight = self.inflight
        acks = 0
        for kind, start, end in packets:
            if kind == _PUBACK and end - start == 2:
                inflight.discard((buffer[start] << 8) | buffer[start + 1])
                acks += 1
            elif kind != _PINGRESP or end != start:
                raise _unexpected(buffer, kind, start, end)
        del buffer[:used]
        return acks


class SubscribeSession:
    """The receiving side of MQTT 3.1.1, without I/O: bytes in, messages and replies out.

    ``granted`` holds the return codes of each SUBACK received, by packet
    id; ``receiving`` the QoS 2 packet ids handed over and not yet released
    (PUBREL); ``replies`` the PUBCOMPs owed to the broker, for the caller to
    write (and clear).
    """

    def __init__(self) -> None:
        self.granted: dict[int, bytes] = {}
        self.receiving: set[int] = set()
        self.replies = bytearray()
        self._buffer = bytearray()

    def receive(self, data: bytes) -> list[Message]:
        """The PUBLISHes completed by ``data``, in order, as (topic, payload, packet id).

        The packet id is 0 for QoS 0; a QoS 1 message (DUP or not) is
        acknowledged with :func:`acks` once it has been handled. A QoS 2
        message comes with :data:`QOS2` added to its packet id, once: a
        repeat before its PUBREL is dropped; :func:`acks` answers it with a
        PUBREC, and a PUBREL puts a PUBCOMP in :attr:`replies`. SUBACKs go
        to :attr:`granted`, PINGRESPs are taken; a partial packet waits for
        the next call. A malformed packet (a topic that is not UTF-8, lengths
        that do not add up, QoS 3) or one a subscriber never gets raises
        :class:`ConnectionLost`.
        """
        buffer = self._buffer
        buffer += data
        packets, used = split(buffer)
        messages: list[Message] = []
        for kind, start, end in packets:
            if kind & 0xF0 == _PUBLISH:
                message = self._publish(buffer, kind, start, end)
                if message is not None:
                    messages.append(message)
            elif kind == _SUBACK and end - start >= 3:
                packet_id = (buffer[start] << 8) | buffer[start + 1]
                self.granted[packet_id] = bytes(buffer[start + 2 : end])
            elif kind == _UNSUBACK and end - start == 2:
                pass  # nothing waits for it: the broker handles packets in order
            elif kind == _PUBREL and end - start == 2:
                # Completed whether or not this connection saw the PUBLISH: a
                # PUBREC sent on an earlier connection is released on this one.
                packet_id = (buffer[start] << 8) | buffer[start + 1]
                self.receiving.discard(packet_id)
                self.replies += _puback(_PUBCOMP, 2, packet_id)
            elif kind != _PINGRESP or end != start:
                raise _unexpected(buffer, kind, start, end)
        del buffer[:used]
        return messages

    def take_replies(self) -> bytes:
        """The packets owed to the broker (PUBCOMPs), as one write; empties :attr:`replies`."""
        replies = bytes(self.replies)
        self.replies.clear()
        return replies

    def _publish(self, buffer: bytearray, kind: int, start: int, end: int) -> Message | None:
        qos = (kind >> 1) & 3
        topic_at = start + 2
        if qos > 2 or end - start < 2:
            raise _unexpected(buffer, kind, start, end)
        topic_end = topic_at + ((buffer[start] << 8) | buffer[start + 1])
        payload_at = topic_end + 2 if qos else topic_end
        if payload_at > end:
            raise _unexpected(buffer, kind, start, end)
        packet_id = (buffer[topic_end] << 8) | buffer[topic_end + 1] if qos else 0
        try:
            topic = buffer[topic_at:topic_end].decode()
        except UnicodeDecodeError as error:
            raise ConnectionLost(f"a topic name from the broker is not UTF-8: {error}") from None
        # MQTT forbids U+0000 in a topic, and a QoS 1 or 2 message needs a packet id.
        if "\x00" in topic or (qos and not packet_id):
            raise _unexpected(buffer, kind, start, end)
        if qos == 2:
            if packet_id in self.receiving:
                return None  # handed over already; its PUBREC follows the handler
            self.receiving.add(packet_id)
            packet_id |= QOS2
        return topic, bytes(buffer[payload_at:end]), packet_id


def acks(packet_ids: Sequence[int]) -> bytes:
    """The PUBACKs (PUBRECs for ids flagged :data:`QOS2`) of ``packet_ids``, as one write."""
    return b"".join(
        [
            _puback(_PUBACK, 2, packet_id)
            if packet_id < QOS2
            else _puback(_PUBREC, 2, packet_id - QOS2)
            for packet_id in packet_ids
        ]
    )


# -- the asyncio shell --------------------------------------------------------


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context for an ``mqtts://`` broker (CA and client certificate from the settings)."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


class Connection(asyncio.Protocol):
    """The asyncio side both clients share: one TCP or TLS transport and its protocol.

    Received bytes are parsed as they arrive (:meth:`data_received` hands
    them to the client's session), and one coroutine at a time waits for
    what it needs (:meth:`_wait`): no StreamReader, no reader task and no
    timeout per read, each of which cost more CPU per message than the
    parsing. Keep-alive is a timer: a PINGREQ after ``keepalive_s`` without
    a write (the broker's deadline is 1.5 times that), and the connection
    fails when nothing at all arrived within ``keepalive_s`` of a PINGREQ
    (any byte shows the broker alive, not only its PINGRESP), unless this
    side paused reading. A write buffer over its high-water mark that does
    not shrink for ``write_timeout_s`` fails the connection too.
    """

    def __init__(self, *, keepalive_s: int, write_timeout_s: float = 10.0) -> None:
        self.keepalive_s = keepalive_s
        self.write_timeout_s = write_timeout_s
        self.client_id = ""
        self.session_present = False
        """The CONNACK's flag: the broker still had this client id's session."""
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport
        self._error: MqttError | None = None
        self._lost = asyncio.Event()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._accepted = False
        self._head = bytearray()
        self._write_paused = False
        self._reading_paused = False
        self._last_write = self._loop.time()
        self._ping_sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def failed(self) -> MqttError | None:
        """The error that ended this connection, or None while it is usable."""
        return self._error

    async def raise_when_lost(self) -> NoReturn:
        """Wait until the connection fails; raise its error.

        Lets a caller notice at once that an idle connection broke (the
        broker closed it, or keep-alive went unanswered). Cancelling is safe.
        """
        await self._lost.wait()
        raise self._error or ConnectionLost("the connection was lost")

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; no Nagle delay (batches go out in one write and are waited for)."""
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` now; a malformed or unexpected packet fails the connection."""
        self._ping_sent_at = None
        try:
            if not self._accepted:
                data = self._connack(data)
            if data:
                self._received(data)
        except MqttError as error:
            self._fail(error)
        except Exception as error:
            # Whatever the broker sent must not crash the daemon: drop the
            # connection (the caller reconnects) and say why.
            self._fail(ConnectionLost(f"cannot parse what the broker sent: {error!r}"))
        self._wake()

    def eof_received(self) -> None:
        """The broker closed its side: let the transport close (connection_lost follows)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail with the reason, unless this side closed first."""
        reason = "the broker closed the connection" if exc is None else f"connection lost: {exc!r}"
        self._fail(ConnectionLost(reason))
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """The transport's buffer is full: :meth:`_drain` waits."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained."""
        self._write_paused = False
        self._wake()

    # -- for the clients

    def _received(self, data: bytes) -> None:
        """Take the bytes that follow the CONNACK (the client's session parses them)."""
        raise NotImplementedError

    def _connack(self, data: bytes) -> bytes:
        """Check the CONNACK once its 4 bytes are in; return what came after it."""
        self._head += data
        if len(self._head) < 4:
            return b""
        self.session_present = check_connack(bytes(self._head[:4]))
        self._accepted = True
        rest = bytes(self._head[4:])
        self._head.clear()
        if self.keepalive_s:
            self._timer = self._loop.call_at(self._next_keepalive_at(), self._keep_alive)
        return rest

    def _write(self, data: bytes) -> None:
        self._transport.write(data)
        self._last_write = self._loop.time()

    async def _wait(self) -> None:
        """Wait until bytes arrive, the transport drains or the connection fails; raise if failed.

        One waiter at a time: each client has a single coroutine that waits.
        """
        self._raise_if_failed()
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting on this connection")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        self._raise_if_failed()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark.

        A buffer that has not shrunk for ``write_timeout_s`` means the broker
        stopped reading (paused, overloaded, a half-open connection): that
        fails the connection. Keep-alive alone would notice after two
        periods, and never with keep-alive off.
        """
        if not self._write_paused:
            return
        transport = self._transport
        left = transport.get_write_buffer_size()
        while self._write_paused:
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    while self._write_paused:
                        await self._wait()
            except TimeoutError:
                now_left = transport.get_write_buffer_size()
                if now_left < left:  # slow, not stopped
                    left = now_left
                    continue
                raise self._fail(
                    ConnectionLost(
                        f"the broker read nothing for {self.write_timeout_s} s "
                        f"({now_left:,} bytes wait to be sent): it stopped reading"
                    )
                ) from None

    def _pause_reading(self) -> None:
        """Stop reading: TCP holds the broker back, keep-alive expects no answer meanwhile."""
        if not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._error is None:
            self._reading_paused = False
            self._transport.resume_reading()
            if self._ping_sent_at is not None:
                # The answer may lie unread behind what was held back: give
                # the broker a whole period from now.
                self._ping_sent_at = self._loop.time()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: MqttError) -> MqttError:
        """Record the first failure, drop the connection, wake the waiter; return the first."""
        if self._error is None:
            self._error = error
            self._stop_keep_alive()
            self._transport.abort()
            self._lost.set()
            self._wake()
        return self._error

    def _next_keepalive_at(self) -> float:
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.keepalive_s
        return self._last_write + self.keepalive_s

    def _keep_alive(self) -> None:
        """The keep-alive timer: PINGREQ when due, fail when the last one went unanswered."""
        self._timer = None
        now = self._loop.time()
        if self._reading_paused:
            # Not reading is this side's choice: an unread PINGRESP proves
            # nothing. Keep sending PINGREQs, so the broker keeps this client.
            self._ping_sent_at = None
        if self._ping_sent_at is not None:
            if now >= self._ping_sent_at + self.keepalive_s:
                self._fail(ConnectionLost(f"no PINGRESP within {self.keepalive_s} s"))
                return
        elif now >= self._last_write + self.keepalive_s:
            self._write(PINGREQ)
            self._ping_sent_at = now
        self._timer = self._loop.call_at(self._next_keepalive_at(), self._keep_alive)

    def _stop_keep_alive(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _close(self) -> None:
        """DISCONNECT unless failed; wait (a second at most) for the broker to close.

        The broker closes the connection once it has read the DISCONNECT,
        hence everything written before it (a subscriber's last PUBACKs):
        a client that reconnects right after this returns finds its session
        as this connection left it, not taken over with PUBACKs unread.
        """
        self._stop_keep_alive()
        if self._error is None:
            self._error = ConnectionLost("the connection was closed")
            self._lost.set()
            self._wake()
            self._transport.write(DISCONNECT)
        try:
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self._transport.abort()
        except asyncio.CancelledError:
            self._transport.abort()
            raise
        self._transport.close()


_C = TypeVar("_C", bound=Connection)


async def _open(
    make: Callable[[], _C],
    settings: MqttSettings,
    client_id: str,
    *,
    keepalive_s: int,
    clean_session: bool,
    connect_timeout_s: float,
) -> _C:
    """A connection made by ``make``, connected to the broker as ``client_id`` and accepted.

    Host, port, TLS and credentials come from ``settings``. Raises
    :class:`Refused` when the broker says no, :class:`ConnectionLost` when
    it cannot be reached or does not answer within ``connect_timeout_s``.
    """
    context = tls_context(settings)
    connection: _C | None = None
    try:
        async with asyncio.timeout(connect_timeout_s):
            _, connection = await asyncio.get_running_loop().create_connection(
                make,
                settings.host,
                settings.port,
                ssl=context,
                server_hostname=settings.host if context else None,
            )
            connection.client_id = client_id
            connection._write(
                connect_packet(
                    client_id,
                    keepalive_s,
                    settings.username,
                    settings.password,
                    clean_session=clean_session,
                )
            )
            while not connection._accepted:
                await connection._wait()
    except BaseException as error:
        # Refused, timed out, cancelled...: the transport must not outlive this.
        if connection is not None:
            connection._fail(ConnectionLost("the connection was not accepted"))
        if isinstance(error, OSError | TimeoutError | ConnectionLost):
            raise ConnectionLost(
                f"cannot connect to {settings.host}:{settings.port}: {error!r}"
            ) from error
        raise
    return connection


class Publisher(Connection):
    """One clean-session MQTT connection that publishes batches at QoS 1.

    Make it with :meth:`connect`. Not for concurrent use: one
    :meth:`publish_batch` at a time.
    """

    def __init__(
        self, session: PublishSession, *, window: int, keepalive_s: int, ack_timeout_s: float
    ) -> None:
        # A write that does not go out is as late as a PUBACK that does not come.
        super().__init__(keepalive_s=keepalive_s, write_timeout_s=ack_timeout_s)
        self.session = session
        self.window = max(1, min(window, MAX_PACKET_ID))
        self.ack_timeout_s = ack_timeout_s
        self._busy = False

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        settings: MqttSettings,
        client_id: str,
        *,
        keepalive_s: int = 30,
        ack_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        first_packet_id: int = 1,
    ) -> AsyncIterator[Publisher]:
        """Connect to the configured broker as ``client_id`` (clean session); DISCONNECT on exit.

        The window of unacknowledged messages is ``settings.max_inflight``;
        ``ack_timeout_s`` bounds the wait for a PUBACK and for a full write
        buffer to shrink. Raises :class:`Refused` when the broker says no,
        :class:`ConnectionLost` when it cannot be reached within
        ``connect_timeout_s``.
        """
        publisher = await _open(
            lambda: cls(
                PublishSession(first_packet_id),
                window=settings.max_inflight,
                keepalive_s=keepalive_s,
                ack_timeout_s=ack_timeout_s,
            ),
            settings,
            client_id,
            keepalive_s=keepalive_s,
            clean_session=True,
            connect_timeout_s=connect_timeout_s,
        )
        try:
            yield publisher
        finally:
            await publisher._close()

    def _received(self, data: bytes) -> None:
        self.session.receive(data)

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``messages`` (topic, payload) at QoS 1, in order; return after their PUBACKs.

        At most ``window`` messages are unacknowledged at a time; each round
        of packets that fits goes out in one write. Raises an
        :class:`MqttError` if the connection fails meanwhile, after which
        any of the messages may or may not have reached the broker;
        :class:`InvalidPacket` for a message MQTT cannot carry, before the
        round that holds it is written (the earlier rounds were).
        Cancelling is safe but leaves the connection with messages in flight;
        the next batch then also waits for their PUBACKs.
        """
        if self._busy:
            raise RuntimeError("publish_batch is already running on this connection")
        self._busy = True
        try:
            await self._publish(messages)
        finally:
            self._busy = False

    async def _publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        session = self.session
        sent = 0
        while sent < len(messages):
            self._raise_if_failed()
            room = self.window - len(session.inflight)
            if room <= 0:
                await self._wait_for_acks()
                continue
            chunk = messages[sent : sent + room]
            self._write(session.publishes(chunk))
            sent += len(chunk)
            await self._drain()
        # Every PUBACK in hand is success, even if the connection broke just after.
        while session.inflight:
            await self._wait_for_acks()

    async def _wait_for_acks(self) -> None:
        """Wait until some PUBACKs arrived; raise if the connection failed or none came in time."""
        inflight = self.session.inflight
        waiting = len(inflight)
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                while len(inflight) >= waiting:
                    await self._wait()
        except TimeoutError:
            raise self._fail(
                AckTimeout(
                    f"no PUBACK within {self.ack_timeout_s} s ({len(inflight)} messages in flight)"
                )
            ) from None


class Subscriber(Connection):
    """One persistent MQTT session that hands the messages of its subscriptions to a coroutine.

    Make it with :meth:`connect`, then :meth:`run` it. Messages are parsed
    as they arrive and wait in a list for :meth:`run`, at most
    ``read_ahead`` of them: past that, the oldest QoS 0 ones are dropped
    (counted in :attr:`dropped`), and if QoS 1 and 2 messages alone fill
    half of it the connection stops reading (TCP then holds the broker
    back) until :meth:`run` takes them.
    """

    def __init__(self, *, keepalive_s: int, read_ahead: int, write_timeout_s: float) -> None:
        super().__init__(keepalive_s=keepalive_s, write_timeout_s=write_timeout_s)
        self.session = SubscribeSession()
        self.read_ahead = max(1, read_ahead)
        self.dropped = 0
        """QoS 0 messages this connection dropped because the handler was behind."""
        self.granted: dict[str, int] = {}
        """The QoS the broker granted each topic filter (empty until the SUBACK came)."""
        self._inbox: list[Message] = []
        self._suback_due: Sequence[str] | None = None
        self._running = False

    @property
    def waiting(self) -> int:
        """How many messages were received and not yet handed to :meth:`run`'s handler."""
        return len(self._inbox)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        settings: MqttSettings,
        client_id: str,
        topics: Sequence[str],
        *,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
        clean_session: bool = False,
        read_ahead: int = 4096,
        unsubscribe: Sequence[str] = (),
    ) -> AsyncIterator[Subscriber]:
        """Connect as ``client_id`` (a persistent session unless told), subscribe to ``topics``.

        ``unsubscribe`` names filters a persistent session may still hold
        from an older configuration: an UNSUBSCRIBE follows the SUBSCRIBE
        (the broker handles them in order; its UNSUBACK is taken as it comes).

        Each filter of ``topics`` is subscribed at maximum QoS 1, in one
        SUBSCRIBE whose SUBACK is checked before this returns, unless
        stored messages fill the read-ahead first: :meth:`run` then raises
        what the SUBACK says once it comes. Raises :class:`Refused` when the
        broker refuses the connection, :class:`SubscriptionRefused` when it
        refuses a filter, and :class:`ConnectionLost` when it cannot be
        reached or does not answer within ``connect_timeout_s`` (stored
        messages arriving count as an answer). A filter granted at QoS 0,
        and a persistent session the broker lost since this process last
        connected as ``client_id``, each log a warning. DISCONNECT on exit:
        a persistent session keeps the subscriptions and the
        unacknowledged QoS 1 messages.
        """
        subscriber = await _open(
            lambda: cls(
                keepalive_s=keepalive_s, read_ahead=read_ahead, write_timeout_s=write_timeout_s
            ),
            settings,
            client_id,
            keepalive_s=keepalive_s,
            clean_session=clean_session,
            connect_timeout_s=connect_timeout_s,
        )
        try:
            if not clean_session:
                subscriber._check_session(settings)
            await subscriber._subscribe(topics, connect_timeout_s)
            if unsubscribe:
                subscriber._write(unsubscribe_packet(UNSUBSCRIBE_ID, unsubscribe))
            yield subscriber
        finally:
            await subscriber._close()

    def _check_session(self, settings: MqttSettings) -> None:
        # Only this process's own reconnects are known to expect a session:
        # the first connection of a client id may be its first ever.
        key = (settings.host, settings.port, self.client_id)
        if not self.session_present and key in _persistent_sessions:
            counters.sessions_lost += 1
            log.warning(
                "mqtt_session_lost",
                client_id=self.client_id,
                broker=f"{settings.host}:{settings.port}",
                detail="the broker no longer had this persistent session (restarted without "
                "persistence, or the session expired): messages queued for it meanwhile are lost",
            )
        _persistent_sessions.add(key)

    def _received(self, data: bytes) -> None:
        session = self.session
        messages = session.receive(data)
        if session.replies:
            self._write(session.take_replies())
        if messages:
            inbox = self._inbox
            inbox += messages
            if len(inbox) >= self.read_ahead:
                self._overflow()
        if self._suback_due is not None and SUBSCRIBE_ID in session.granted:
            self._check_suback(self._suback_due, session.granted.pop(SUBSCRIBE_ID))

    def _overflow(self) -> None:
        """Drop the oldest QoS 0 messages down to half the read-ahead; pause if that cannot."""
        inbox = self._inbox
        excess = len(inbox) - self.read_ahead // 2
        kept: list[Message] = []
        dropped = 0
        for message in inbox:
            if dropped < excess and not message[2]:
                dropped += 1
            else:
                kept.append(message)
        self._inbox = kept
        if dropped:
            if not self.dropped:
                log.warning(
                    "mqtt_messages_dropped",
                    client_id=self.client_id,
                    count=dropped,
                    detail=f"the handler is {self.read_ahead} messages behind: the oldest QoS 0 "
                    "messages are dropped (counted); QoS 1 and 2 wait",
                )
            self.dropped += dropped
            counters.qos0_dropped += dropped
        if len(kept) > self.read_ahead // 2:
            # QoS 1 and 2 alone: the broker has no inflight limit for us.
            self._pause_reading()

    async def _subscribe(self, topics: Sequence[str], timeout_s: float) -> None:
        # A persistent session's stored messages may come before the SUBACK:
        # they wait in the inbox for run(), in order, and while they keep
        # coming the broker is alive and the deadline moves.
        self._write(subscribe_packet(SUBSCRIBE_ID, topics))
        granted = self.session.granted
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                while SUBSCRIBE_ID not in granted:
                    if self._reading_paused:
                        # The read-ahead is full and the SUBACK is behind it:
                        # run() hands the messages over, reading the SUBACK.
                        self._suback_due = topics
                        return
                    progress = (len(self._inbox), self.dropped)
                    await self._wait()
                    if (len(self._inbox), self.dropped) != progress:
                        deadline.reschedule(self._loop.time() + timeout_s)
        except TimeoutError:
            raise self._fail(ConnectionLost(f"no SUBACK within {timeout_s} s")) from None
        self._check_suback(topics, granted.pop(SUBSCRIBE_ID))

    def _check_suback(self, topics: Sequence[str], codes: bytes) -> None:
        self._suback_due = None
        check_suback(topics, codes)
        self.granted = dict(zip(topics, codes, strict=True))
        downgraded = [topic for topic, code in self.granted.items() if code == 0]
        if downgraded:
            counters.subscriptions_downgraded += len(downgraded)
            log.warning(
                "mqtt_subscription_downgraded",
                client_id=self.client_id,
                topics=downgraded,
                granted_qos=0,
                detail="the broker grants these at QoS 0 (max_qos?): what is sent while the "
                "monitor is away or busy is lost; let this client subscribe at QoS 1",
            )

    async def run(self, on_message: OnMessage) -> NoReturn:
        """Await ``on_message(topic, payload)`` per message, in order, until the connection fails.

        Raises the :class:`MqttError` that ended the connection (after
        handing over what had arrived before), or whatever ``on_message``
        raised. The QoS 1 and 2 messages among those handled in one go are
        acknowledged (PUBACK, PUBREC) in one write once their
        ``on_message`` returned, so a message whose handler raised or was
        cancelled is sent again by the broker on the next connection of
        this persistent session. Cancelling is safe. Once per connection: a
        message whose handler did not return is acknowledged by no one until
        the next connection.
        """
        if self._running:
            raise RuntimeError("run() hands the messages of a connection over once")
        self._running = True
        while True:
            while not self._inbox:
                await self._wait()
            messages, self._inbox = self._inbox, []
            self._resume_reading()
            await self._deliver(messages, on_message)

    async def _deliver(self, messages: list[Message], on_message: OnMessage) -> None:
        handled: list[int] = []
        try:
            for topic, payload, packet_id in messages:
                await on_message(topic, payload)
                if packet_id:
                    handled.append(packet_id)
        finally:
            # Messages handled before a handler raised are acknowledged too:
            # only the ones not handled come back.
            if handled and self._error is None:
                self._write(acks(handled))
        if self._write_paused:
            await self._drain()
