"""MQTT 3.1.1 without I/O: packets, the broker's answers, and the two client sessions.

Sans-I/O, as websockets and h11 are: bytes in, bytes and decisions out, no
socket, no clock, no event loop. :mod:`monitor.bus.client` is the asyncio
shell that moves these bytes; the tests and the benchmarks drive the same
code without a broker.

* Packets: encoders (:func:`connect_packet`, :func:`subscribe_packet`,
  :func:`unsubscribe_packet`, :func:`acks`), checks of the broker's answers
  (:func:`check_connack`, :func:`check_suback`) and :func:`split`, which
  finds the complete packets at the head of a buffer (the one decoder of
  MQTT's variable-length "remaining length").
* Sessions: :class:`PublishSession` encodes QoS 1 PUBLISHes, hands out
  packet ids and takes PUBACKs off the received bytes;
  :class:`SubscribeSession` turns received bytes into (topic, payload,
  packet id) messages, records SUBACKs and answers PUBRELs.

Every failure is an :class:`MqttError`, on the *unavailable* branch of
liqmon's exception tree (:mod:`monitor.core.errors`); after one, the
connection is unusable and the caller reconnects, except
:class:`InvalidPacket`, raised before anything is written (it stays an
``MqttError`` so that a caller's one handler covers every publish failure)::

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

import struct
from collections.abc import Awaitable, Callable, Sequence

from monitor.core.errors import Unavailable

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


class MqttError(Unavailable):
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
