"""A pipelined MQTT 3.1.1 QoS 1 publisher over an asyncio stream.

The outbox is drained in batches of hundreds of events, and aiomqtt (paho
underneath) spends about 170 µs of Python per QoS 1 publish: a future, a
paho message object, a lock and a callback each. Here a whole batch becomes
one ``bytes`` (a few list appends per message) written in one call, and the
PUBACKs are parsed in bulk from whatever the socket returned: the broker,
not this process, sets the pace.

Theory of operation:

* :class:`Session` is the protocol, without I/O: it encodes CONNECT and
  PUBLISH packets, hands out packet ids (1..65535, wrapping, skipping ids
  still in flight) and takes PUBACKs and PINGRESPs off the received bytes.
* :class:`Publisher` is the asyncio shell: one TCP (or TLS) connection, one
  reader task that feeds the session and sends PINGREQ when the connection
  has been idle for the keep-alive, and :meth:`Publisher.publish_batch`,
  which writes as many packets as the window of unacknowledged messages
  allows and returns once every PUBACK of the batch has arrived.
* The session is clean: nothing is kept by the broker between connections,
  because the Redis outbox is the durable store. Whatever was not
  acknowledged when a connection broke is sent again by the caller.

Every failure is a :class:`PublisherError`; after one, the publisher is
unusable and the caller reconnects::

    PublisherError
    ├── Refused          CONNACK with a non-zero return code (credentials, ACL...)
    ├── ConnectionLost   cannot connect, connection closed or broken, protocol violation
    └── AckTimeout       no PUBACK within ack_timeout_s while messages are in flight
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

from monitor.config import MqttSettings

__all__ = [
    "AckTimeout",
    "ConnectionLost",
    "Publisher",
    "PublisherError",
    "Refused",
    "Session",
    "tls_context",
]

MAX_PACKET_ID = 65535
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
_PUBLISH_QOS1 = 0x32
_PUBACK = 0x40
_PINGRESP = 0xD0
_CONNACK = 0x20
_TOPIC_CACHE_SIZE = 4096
_packet_id = struct.Struct(">H").pack

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class PublisherError(Exception):
    """The publisher's connection is unusable: back off and reconnect."""


class Refused(PublisherError):
    """The broker refused the connection; ``code`` is the CONNACK return code."""

    def __init__(self, code: int) -> None:
        reason = CONNACK_CODES.get(code, "unknown return code")
        super().__init__(f"the broker refused the connection: {reason} (CONNACK code {code})")
        self.code = code


class ConnectionLost(PublisherError):
    """The connection could not be opened, was closed or broke, or the broker broke the protocol."""


class AckTimeout(PublisherError):
    """Messages were in flight and no PUBACK arrived for ``ack_timeout_s``."""


def _varint(length: int) -> bytes:
    """MQTT's remaining length: 7 bits per byte, low bits first."""
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _publish_header(length: int) -> bytes:
    """Fixed header of a QoS 1 PUBLISH whose variable header and payload take ``length`` bytes."""
    # Events are a few hundred bytes: the two-byte length is the common case.
    if length < 0x80:
        return bytes((_PUBLISH_QOS1, length))
    if length < 0x4000:
        return bytes((_PUBLISH_QOS1, (length & 0x7F) | 0x80, length >> 7))
    return bytes((_PUBLISH_QOS1,)) + _varint(length)


def connect_packet(
    client_id: str, keepalive_s: int, username: str | None = None, password: str | None = None
) -> bytes:
    """A CONNECT with clean session, ``client_id`` and, when given, the credentials."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        # MQTT 3.1.1 allows a password only together with a user name.
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes((4, flags)) + keepalive_s.to_bytes(2, "big") + payload
    return bytes((0x10,)) + _varint(len(body)) + body


def check_connack(packet: bytes) -> None:
    """Raise :class:`Refused` or :class:`ConnectionLost` unless ``packet`` accepts the client."""
    if len(packet) != 4 or packet[0] != _CONNACK or packet[1] != 2:
        raise ConnectionLost(f"expected a CONNACK, got {packet!r}")
    if packet[3] != 0:
        raise Refused(packet[3])


class Session:
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
        """
        parts: list[bytes] = []
        append = parts.append
        inflight = self.inflight
        topics = self._topics
        packet_id = self.next_packet_id
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
        self.next_packet_id = packet_id
        return b"".join(parts)

    def _topic_field(self, topic: str) -> bytes:
        # Topics repeat (account x symbol x event type): encode each once, in a
        # bounded cache so that a book of millions of accounts cannot grow it.
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        field = self._topics[topic] = _string(topic)
        return field

    def receive(self, data: bytes) -> tuple[int, int]:
        """Take the PUBACKs and PINGRESPs in ``data``; return how many of each.

        Acknowledged ids leave :attr:`inflight`; a PUBACK for an id not in
        flight is ignored. A partial packet waits for the next call. Anything
        else the broker may not send to a publisher raises :class:`ConnectionLost`.
        """
        buffer = self._buffer
        buffer += data
        inflight = self.inflight
        size = len(buffer)
        at = 0
        acks = pongs = 0
        while size - at >= 2:
            kind = buffer[at]
            if kind == _PUBACK and buffer[at + 1] == 2:
                if size - at < 4:
                    break
                inflight.discard((buffer[at + 2] << 8) | buffer[at + 3])
                acks += 1
                at += 4
            elif kind == _PINGRESP and buffer[at + 1] == 0:
                pongs += 1
                at += 2
            else:
                raise ConnectionLost(
                    f"unexpected packet from the broker: {bytes(buffer[at : at + 8])!r}"
                )
        del buffer[:at]
        return acks, pongs


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context for an ``mqtts://`` broker (CA and client certificate from the settings)."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


class Publisher:
    """One clean-session MQTT connection that publishes batches at QoS 1.

    Make it with :meth:`connect`. Not for concurrent use: one
    :meth:`publish_batch` at a time.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
        *,
        window: int,
        keepalive_s: int,
        ack_timeout_s: float,
    ) -> None:
        self.session = session
        self.window = max(1, min(window, MAX_PACKET_ID))
        self.keepalive_s = keepalive_s
        self.ack_timeout_s = ack_timeout_s
        self._reader = reader
        self._writer = writer
        self._error: PublisherError | None = None
        self._lost = asyncio.Event()
        self._progress = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()
        self._ping_sent_at: float | None = None
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

        Host, port, TLS and credentials come from ``settings``, the window of
        unacknowledged messages from ``settings.max_inflight``. Raises
        :class:`Refused` when the broker says no, :class:`ConnectionLost` when
        it cannot be reached within ``connect_timeout_s``.
        """
        context = tls_context(settings)
        try:
            async with asyncio.timeout(connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    settings.host,
                    settings.port,
                    ssl=context,
                    server_hostname=settings.host if context else None,
                )
                try:
                    sock = writer.get_extra_info("socket")
                    # Each batch goes out in one write and waits for its PUBACKs:
                    # Nagle would hold back a batch's tail.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    writer.write(
                        connect_packet(client_id, keepalive_s, settings.username, settings.password)
                    )
                    check_connack(await reader.readexactly(4))
                except BaseException:
                    writer.transport.abort()
                    raise
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            raise ConnectionLost(
                f"cannot connect to {settings.host}:{settings.port}: {error!r}"
            ) from error
        publisher = cls(
            reader,
            writer,
            Session(first_packet_id),
            window=settings.max_inflight,
            keepalive_s=keepalive_s,
            ack_timeout_s=ack_timeout_s,
        )
        # The reader lives exactly as long as this context: awaited in close().
        reading = asyncio.create_task(publisher._read(), name="mqtt-publisher-read")
        try:
            yield publisher
        finally:
            await publisher._close(reading)

    @property
    def failed(self) -> PublisherError | None:
        """The error that ended this connection, or None while it is usable."""
        return self._error

    async def raise_when_lost(self) -> NoReturn:
        """Wait, between batches too, until the connection fails; raise its error.

        Lets a caller notice at once that an idle connection broke (the
        reader sees the close, or keep-alive goes unanswered). Cancelling is safe.
        """
        await self._lost.wait()
        raise self._error or ConnectionLost("the connection was lost")

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``messages`` (topic, payload) at QoS 1, in order; return after their PUBACKs.

        At most ``window`` messages are unacknowledged at a time; each round
        of packets that fits goes out in one write. Raises a
        :class:`PublisherError` if the connection fails meanwhile, after which
        any of the messages may or may not have reached the broker.
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
            try:
                await self._writer.drain()
            except OSError as error:
                raise self._fail(ConnectionLost(f"write failed: {error!r}")) from error
        # Every PUBACK in hand is success, even if the connection broke just after.
        while session.inflight:
            await self._wait_for_acks()

    def _write(self, data: bytes) -> None:
        self._writer.write(data)
        self._last_write = self._loop.time()

    async def _wait_for_acks(self) -> None:
        """Wait until the reader took some PUBACKs or the connection failed.

        Raises if it had failed already, or after ``ack_timeout_s`` without a PUBACK.
        """
        self._raise_if_failed()
        self._progress.clear()
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await self._progress.wait()
        except TimeoutError:
            raise self._fail(
                AckTimeout(
                    f"no PUBACK within {self.ack_timeout_s} s "
                    f"({len(self.session.inflight)} messages in flight)"
                )
            ) from None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: PublisherError) -> PublisherError:
        """Record the first failure, drop the connection and wake a waiting batch."""
        if self._error is None:
            self._error = error
            self._writer.transport.abort()
            self._lost.set()
        self._progress.set()
        return self._error

    async def _read(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self._next_keepalive_at()):
                        data = await self._reader.read(65536)
                except TimeoutError:
                    self._keep_alive()
                    continue
                if not data:
                    raise ConnectionLost("the broker closed the connection")
                acks, pongs = self.session.receive(data)
                if pongs:
                    self._ping_sent_at = None
                if acks:
                    self._progress.set()
        except PublisherError as error:
            self._fail(error)
        except OSError as error:
            self._fail(ConnectionLost(f"read failed: {error!r}"))
        except BaseException:
            # Cancelled by close(), or a bug (re-raised by close()): either
            # way a batch still waiting must not wait for the ack timeout.
            self._fail(ConnectionLost("the publisher stopped reading"))
            raise

    def _next_keepalive_at(self) -> float | None:
        if not self.keepalive_s:
            return None
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.keepalive_s
        return self._last_write + self.keepalive_s

    def _keep_alive(self) -> None:
        """PINGREQ after ``keepalive_s`` without a write; give up if it goes as long unanswered."""
        now = self._loop.time()
        if self._ping_sent_at is not None:
            if now >= self._ping_sent_at + self.keepalive_s:
                raise ConnectionLost(f"no PINGRESP within {self.keepalive_s} s")
        elif now >= self._last_write + self.keepalive_s:
            self._write(PINGREQ)
            self._ping_sent_at = now

    async def _close(self, reading: asyncio.Task[None]) -> None:
        if self._error is None:
            self._error = ConnectionLost("the publisher was closed")
            self._lost.set()
            self._writer.write(DISCONNECT)
            # close() flushes what is buffered, DISCONNECT included.
            self._writer.close()
        reading.cancel()
        await asyncio.wait([reading])
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        if not reading.cancelled() and (bug := reading.exception()) is not None:
            raise bug
