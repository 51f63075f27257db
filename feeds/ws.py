"""The one websocket connection loop every venue source runs.

A venue plugs in as a :class:`Venue`: a sans-I/O description of what to send
after connecting (subscriptions), what to send periodically (an
application-level heartbeat, if the venue wants one) and how to turn a frame
into ticks (a fresh decoder per connection, so per-connection state such as
Bybit's last snapshot never outlives its connection). :class:`WebsocketFeed`
does all the I/O, the same way for every venue:

* **Reconnect.** ``async for ws in websockets.asyncio.client.connect(...)``
  retries a *failed connection attempt* with our jittered exponential
  :class:`Backoff` and a :func:`classify` that tells retryable errors (network,
  timeouts, HTTP 5xx/429/418/408) from fatal ones (other 4xx, a TLS certificate
  that does not verify): a fatal error ends ``run`` with
  :class:`~feeds.errors.FeedFatalError`. websockets resets its backoff after
  every successful handshake, so a venue that accepts and then drops at once
  would be redialled in a tight loop: the feed therefore also waits a delay
  from its own :class:`Backoff` after every session, and resets that one only
  after a session that delivered at least one tick.
* **Resubscribe.** The venue's subscription messages go out after *every*
  connect, before anything is read.
* **Keep-alive.** websockets' own ping/pong (``ping_interval_s``,
  ``ping_timeout_s``) detects a dead TCP peer; the venue's heartbeat message
  (Bybit ``{"op":"ping"}``, OKX ``ping``) keeps the venue from closing an idle
  connection; an idle watchdog on :func:`time.monotonic` reconnects when no
  usable tick arrived for ``idle_timeout_s`` (a live socket on a dead stream).
* **Bad frames.** A :class:`~feeds.errors.FrameError` is passed to ``reject``
  (after emitting the frame's good ticks, if any) and the stream goes on.

Everything runs in the task that awaits :meth:`WebsocketFeed.run`: no helper
tasks. Heartbeats and the watchdog are deadlines of the receive loop
(``recv`` under :func:`asyncio.timeout`, which websockets documents as safe to
cancel).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import process_exception as websockets_process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from feeds.decode import as_bytes
from feeds.errors import FeedFatalError, FrameError
from feeds.funding import FundingNotice
from feeds.source import Emit, FundingSink, Reject
from feeds.tick import PriceTick

log = structlog.get_logger(__name__)

Decoder = Callable[[str | bytes], list[PriceTick]]
"""Turns one frame into ticks (possibly none); raises ``FrameError``."""

FundingDecoder = Callable[[str | bytes], list[FundingNotice]]
"""Turns one frame into funding announcements (possibly none); raises ``FrameError``."""

RETRYABLE_HTTP_STATUSES = frozenset({408, 418, 429, 500, 502, 503, 504})
"""Handshake answers worth retrying: timeouts, rate limits, server errors."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt *n* waits a random time
    in ``[c/2, c]`` where ``c = min(max_s, base_s * factor**n)``.

    Half the delay is fixed so that reconnects can never degenerate into a
    tight loop; the other half is random so that many clients do not
    reconnect in step after a venue restarts.
    """

    base_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.max_s) or self.factor < 1:
            raise ValueError(f"bad backoff: {self}")

    def delays(self, rng: random.Random | None = None) -> Generator[float]:
        """An endless series of delays in seconds (websockets' ``reconnect_delays``)."""
        uniform = (rng or random.Random()).uniform
        cap = self.base_s
        while True:
            yield uniform(cap / 2, cap)
            cap = min(self.max_s, cap * self.factor)


@dataclass(frozen=True, slots=True)
class WsOptions:
    """Connection knobs shared by every websocket source; defaults suit the real venues."""

    idle_timeout_s: float = 30.0
    """Reconnect when no usable tick arrived for this long."""
    backoff: Backoff = field(default_factory=Backoff)
    open_timeout_s: float = 10.0
    """Limit on TCP + TLS + websocket handshake."""
    ping_interval_s: float | None = 20.0
    """websockets' protocol-level keep-alive ping (``None`` disables it)."""
    ping_timeout_s: float | None = 20.0
    """Close the connection when a protocol ping is not answered in time."""
    close_timeout_s: float = 1.0
    """How long a close (and so a cancellation) may wait for the peer."""
    max_size: int = 8 * 2**20
    """Largest accepted message in bytes (an all-market array is ~150 kB)."""
    proxy: str | bool = True
    """``True``: the system's proxy settings; ``False``: none; a string: that proxy."""

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An application-level ping the venue requires, sent every ``interval_s``."""

    message: str
    interval_s: float


class Venue(Protocol):
    """What differs between venues, without any I/O."""

    def subscriptions(self) -> Sequence[str]:
        """The messages to send after every (re)connect."""
        ...

    def decoder(self) -> Decoder:
        """A fresh frame decoder for one connection."""
        ...

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The venue's application-level ping, if it needs one."""
        ...


@dataclass(slots=True)
class FeedStats:
    """Counters for metrics and for tests; only ever increase."""

    connects: int = 0
    frames: int = 0
    ticks: int = 0
    rejects: int = 0
    idle_timeouts: int = 0
    heartbeats: int = 0


def classify(exc: Exception) -> Exception | None:
    """websockets' ``process_exception``: ``None`` to retry, an exception to stop.

    Retries what websockets retries (network errors, timeouts, HTTP 500, 502,
    503, 504) plus HTTP 408, 418 and 429 (a venue rate-limiting us); a TLS
    certificate that fails verification and every other handshake refusal are
    fatal and become :class:`FeedFatalError`.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FeedFatalError(f"TLS certificate rejected: {exc}")
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in RETRYABLE_HTTP_STATUSES:
            return None
        return FeedFatalError(f"handshake refused with HTTP {status}")
    if websockets_process_exception(exc) is None:
        return None
    return FeedFatalError(f"cannot connect: {exc!r}")


class WebsocketFeed:
    """Runs one venue over one websocket URL, reconnecting forever.

    ``run`` only returns by raising: :class:`asyncio.CancelledError` when
    cancelled (safe at any point; the connection is closed within
    ``close_timeout_s``) or :class:`FeedFatalError` when reconnecting cannot
    help. Errors raised by ``emit`` or ``reject`` propagate unchanged.
    """

    def __init__(
        self,
        name: str,
        url: str,
        venue: Venue,
        options: WsOptions,
        funding: Callable[[], FundingDecoder] | None = None,
    ) -> None:
        """``funding``: makes a fresh funding decoder per connection (None: the venue
        announces no funding); used once :attr:`funding_sink` is set."""
        self.name = name
        self.url = url
        self.venue = venue
        self.options = options
        self.stats = FeedStats()
        self.funding = funding
        self.funding_sink: FundingSink | None = None

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Connect, subscribe, stream; reconnect on any transient failure."""
        opts = self.options
        connections = connect(
            self.url,
            process_exception=classify,
            reconnect_delays=opts.backoff.delays,
            open_timeout=opts.open_timeout_s,
            ping_interval=opts.ping_interval_s,
            ping_timeout=opts.ping_timeout_s,
            close_timeout=opts.close_timeout_s,
            max_size=opts.max_size,
            proxy=None if opts.proxy is False else opts.proxy,
        )
        session_delays = opts.backoff.delays()
        # aclosing: leaving the loop (cancelled, fatal error) closes the
        # connection now, not whenever the generator is garbage-collected.
        iterator = cast("AsyncGenerator[ClientConnection]", aiter(connections))
        async with contextlib.aclosing(iterator) as sockets:
            async for ws in sockets:
                self.stats.connects += 1
                log.info("feed.connected", source=self.name, url=self.url)
                ended, delivered = await self._session(ws, emit, reject)
                if delivered:
                    session_delays = opts.backoff.delays()
                delay = next(session_delays)
                log.warning(
                    "feed.reconnecting",
                    source=self.name,
                    why=ended,
                    ticks=delivered,
                    delay_s=round(delay, 3),
                )
                await ws.close()
                await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection, emit: Emit, reject: Reject) -> tuple[str, int]:
        """Serve one connection until it closes or goes idle: (why, ticks delivered)."""
        delivered = 0
        try:
            for message in self.venue.subscriptions():
                await ws.send(message)
            decode = self.venue.decoder()
            funding = self.funding() if self.funding and self.funding_sink else None
            beat = self.venue.heartbeat
            idle_s = self.options.idle_timeout_s
            last_tick = now = time.monotonic()
            next_beat = now + beat.interval_s if beat else float("inf")
            while True:
                now = time.monotonic()
                idle_at = last_tick + idle_s
                if now >= idle_at:
                    self.stats.idle_timeouts += 1
                    return f"no tick for {idle_s}s", delivered
                if beat is not None and now >= next_beat:
                    await ws.send(beat.message)
                    self.stats.heartbeats += 1
                    next_beat = now + beat.interval_s
                    continue
                try:
                    async with asyncio.timeout(min(idle_at, next_beat) - now):
                        frame = await ws.recv()
                except TimeoutError:
                    continue
                count = await self._deliver(frame, decode, emit, reject)
                if funding is not None:
                    self._announce(frame, funding)
                if count:
                    delivered += count
                    last_tick = time.monotonic()
        except ConnectionClosed as exc:
            return f"closed: {exc}", delivered

    def _announce(self, frame: str | bytes, decode: FundingDecoder) -> None:
        """Hand a frame's funding announcements to the sink; a bad one is logged only
        (the frame's prices were delivered or rejected already)."""
        assert self.funding_sink is not None
        try:
            notices = decode(frame)
        except FrameError as exc:
            log.info(
                "feed.funding_rejected", source=self.name, reason=exc.reason, detail=exc.detail
            )
            return
        for notice in notices:
            self.funding_sink(notice)

    async def _deliver(
        self, frame: str | bytes, decode: Decoder, emit: Emit, reject: Reject
    ) -> int:
        """Decode one frame, emit its ticks, reject it if it was bad."""
        self.stats.frames += 1
        try:
            ticks = decode(frame)
            error = None
        except FrameError as exc:
            ticks, error = list(exc.partial), exc
        for tick in ticks:
            await emit(tick)
        self.stats.ticks += len(ticks)
        if error is not None:
            self.stats.rejects += 1
            log.info(
                "feed.frame_rejected", source=self.name, reason=error.reason, detail=error.detail
            )
            await reject(self.name, error.reason, as_bytes(frame))
        return len(ticks)
