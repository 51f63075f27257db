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

* Packets and sessions, without I/O, live in :mod:`monitor.bus.protocol`.
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

Every failure is a :class:`~monitor.bus.protocol.MqttError` (its tree is in
:mod:`monitor.bus.protocol`); after one, the connection is unusable and the
caller reconnects (the broker supervisor restarts both connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar, cast

import structlog

from monitor.bus.protocol import (
    DISCONNECT,
    MAX_PACKET_ID,
    PINGREQ,
    SUBSCRIBE_ID,
    UNSUBSCRIBE_ID,
    AckTimeout,
    ConnectionLost,
    Message,
    MqttError,
    OnMessage,
    PublishSession,
    SubscribeSession,
    acks,
    check_connack,
    check_suback,
    connect_packet,
    subscribe_packet,
    unsubscribe_packet,
)
from monitor.config.model import MqttSettings

log = structlog.get_logger("liqmon.mqtt")


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
