"""The daemon: wires the adapters to the engine and runs them as one TaskGroup.

Start-up order matters: the HTTP endpoint first (so ``/healthz`` answers and
``/readyz`` says why it is not ready yet), then Redis (which must not evict:
:mod:`monitor.state.prerequisites`) and its epoch (read again every second, it tells
that Redis lost its data: :mod:`monitor.state.epoch`), then recovery (every symbol re-evaluated at
its last known mark before any new tick), then the MQTT session and the
workers. SIGTERM or SIGINT stops intake, lets the workers finish what is
queued (bounded by ``drain_timeout_s``) and exits; during start-up (Redis
still awaited, recovery running) it abandons the start at once, since nothing
was taken that needs finishing. Events not yet acknowledged by the broker
stay in the Redis outbox and go out at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
import structlog
from redis.exceptions import OutOfMemoryError

from feeds.errors import FeedError
from feeds.source import PriceSource
from feeds.tick import PriceTick
from monitor import __version__
from monitor.config.model import Settings
from monitor.core import topics
from monitor.core.coalescing import HeldBack
from monitor.core.errors import Rejection, UnsafeServer
from monitor.core.funding import rule_for
from monitor.core.guards import PriceGuards
from monitor.core.models import venue_of
from monitor.core.position import PositionUpdate
from monitor.service.backoff import Backoff
from monitor.service.broker import Bus, Session
from monitor.service.engine import Engine
from monitor.service.funding import FundingDesk
from monitor.service.handover import Handover
from monitor.service.intake import Intake
from monitor.service.liquidations import LiquidationWatcher
from monitor.service.relay import Relay
from monitor.service.workers import TickWorkers, record_events
from monitor.state.books import Books
from monitor.state.cancellation import raise_if_cancelling
from monitor.state.clusters import ClusterStates
from monitor.state.epoch import RELOAD_HINT, Epoch, Verdict, check
from monitor.state.keys import PUBLISHERS, Keys
from monitor.state.leases import Leases
from monitor.state.outbox import Outbox
from monitor.state.positions import PositionStore
from monitor.state.prerequisites import check_eviction
from monitor.state.readmodel import ReadModel
from monitor.state.transport import (
    DATA_LOST,
    OUTAGES,
    REDIS_DOWN,
    Client,
    Transport,
    connect,
    outage,
)
from monitor.telemetry.metrics import Metrics
from monitor.telemetry.stopping import report_stuck_tasks
from monitor.web.api import Api
from monitor.web.http import HttpEndpoint

log = structlog.get_logger("liqmon.daemon")

T = TypeVar("T")

BACKLOG_EVERY_S = 5.0
"""How often the outbox backlog metrics are read (two commands per symbol)."""

SYMBOLS_LOGGED = 20
"""Symbols named in the start-up line; more are counted."""


def _shown(symbols: list[str]) -> list[str]:
    """``symbols`` for a log line: the first :data:`SYMBOLS_LOGGED`, then how many more."""
    if len(symbols) <= SYMBOLS_LOGGED:
        return symbols
    return [*symbols[:SYMBOLS_LOGGED], f"+{len(symbols) - SYMBOLS_LOGGED} more"]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Service:
    """What every liqmon process shares: Redis, the MQTT bus, readiness, SIGTERM.

    Subclasses set the attributes below in their ``__init__``.
    """

    settings: Settings
    metrics: Metrics
    transport: Transport
    redis: Client
    store: PositionStore
    outbox: Outbox
    bus: Bus
    leases: Leases
    leased: asyncio.Event
    redis_ok: bool
    stopping: asyncio.Event
    redis_outage: tuple[str, str] = ("unreachable", "not connected")
    """Why Redis is not ok: a reason of :func:`monitor.state.transport.outage` and its line."""
    redis_full: bool = False
    """The last write probe was refused for lack of memory."""
    writes_refused: int = 0
    """Calls retrying a write Redis refused for lack of memory (a large write can be
    refused while the probe's tiny one still goes through)."""

    http_address: str | None
    """Where ``/healthz``, ``/readyz`` and ``/metrics`` are served (None: nowhere)."""
    epoch: Epoch | None = None
    """Redis's epoch as this process last saw it (None until start-up read it)."""
    epoch_wanted: bool = False
    """Start-up asked for the epoch (not on a cluster); until it is read, the readiness
    loop tries again."""
    resync_pending: Epoch | None = None
    """An epoch this process wrote after a loss whose re-sync request is not yet queued."""

    async def run(self) -> None:
        """Run until :attr:`stopping` is set (or the task is cancelled).

        Stopping works at any moment: while start-up still waits for Redis,
        it is abandoned (nothing was started that needs draining). Raises
        :class:`~monitor.core.errors.UnsafeServer` when Redis may evict.
        """
        log.info(
            "starting",
            version=__version__,
            process=type(self).__name__,
            config=self.settings.source,
            http=self.http_address,
            symbols=_shown(list(self.settings.symbols)),
        )
        tasks: list[asyncio.Task[None]] = []
        watchdog: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.TaskGroup() as group:

                    def start(coro: Awaitable[None], name: str) -> None:
                        tasks.append(group.create_task(coro, name=name))  # type: ignore[arg-type]

                    starting = group.create_task(self._start(start), name="start")
                    await self.stopping.wait()
                    if starting.done():
                        log.info("stopping")
                        await self._drain()
                    else:
                        log.info("stopping", during="start-up")
                        starting.cancel()
                    for task in tasks:
                        task.cancel()
                    watchdog = asyncio.create_task(report_stuck_tasks(), name="stop-watchdog")
            except* UnsafeServer as refused:
                # One line at the command line, not a group of one.
                raise refused.exceptions[0] from None
            if self.leased.is_set():  # nothing to give back before the first refresh
                with contextlib.suppress(*REDIS_DOWN):
                    await self.leases.release_all()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self.redis.aclose()
        log.info("stopped")

    async def _start(self, start: Callable[[Awaitable[None], str], None]) -> None:
        """Start the process's tasks with ``start(coroutine, name)``."""
        raise NotImplementedError

    async def _drain(self) -> None:
        """Finish what is queued before the tasks are cancelled (bounded)."""

    async def failing(self) -> dict[str, str]:
        """Dependencies that are not usable right now (empty: ready)."""
        failing = {}
        reason, why = self._redis_state()
        if reason is not None:
            failing["redis"] = why
        if not self.bus.connected.is_set():
            failing["mqtt"] = "not connected"
        if not self.leased.is_set():
            failing["leases"] = "not yet refreshed"
        return failing

    async def _check_redis(self) -> None:
        """Wait for Redis; refuse to go on if it may evict (:mod:`monitor.state.prerequisites`)."""
        await self._retry_redis(check_eviction, self.redis, self.settings.redis.allow_eviction)

    def _redis_state(self) -> tuple[str | None, str]:
        """The outage Redis is in (None: none) and the line ``/readyz`` shows for it."""
        if not self.redis_ok:
            return self.redis_outage
        stuck = self.transport.stuck()
        if stuck is not None:
            return "no_reply", stuck
        if self.redis_full or self.writes_refused:
            return outage(OutOfMemoryError())
        if self.epoch is not None and self.epoch.awaiting_reload:
            return DATA_LOST, (
                f"data lost: Redis came back empty (generation {self.epoch.generation} since); "
                + RELOAD_HINT.format(topic=self.resync_topic)
            )
        return None, ""

    @property
    def resync_topic(self) -> str:
        """Where a re-sync of every open position is requested after a loss."""
        return topics.resync(self.settings.mqtt.topic_prefix)

    async def _open_epoch(self) -> None:
        """Read Redis's epoch at start, writing the first one if there is none."""
        if self.transport.cluster:
            # One key lives on one primary: a loss of any other would go unseen,
            # and one of it alone reported as the whole book's. Not done there.
            return
        self.epoch_wanted = True
        now_ms = time.time_ns() // 1_000_000
        try:
            epoch, created = await self.store.create_epoch(Epoch.first(now_ms))
        except OutOfMemoryError:
            # No epoch yet (a Redis older than epochs) and no room to write one:
            # start anyway (the outbox must drain); the readiness loop writes it.
            log.warning("redis_epoch_not_written", error="Redis out of memory")
            return
        self._adopt(epoch)
        if created and not await self.store.with_open_positions(list(self.settings.symbols)):
            # A first start and a start on a Redis that lost its data look alike.
            log.warning(
                "no_book_in_redis",
                message="no open position in Redis: if this is not a first start, Redis "
                "lost its data; load positions with 'liqmon positions load FILE'",
                epoch=epoch.id,
            )
        elif epoch.awaiting_reload:
            log.warning(
                "redis_data_lost",
                message="Redis lost its data and the book is not reloaded yet: "
                + RELOAD_HINT.format(topic=self.resync_topic),
                epoch=epoch.id,
                generation=epoch.generation,
            )

    def _adopt(self, epoch: Epoch) -> None:
        """Take ``epoch`` as Redis's current one."""
        self.epoch = epoch

    async def _check_epoch(self) -> None:
        """Read the epoch again (one GET); on a loss, write the successor and request a
        re-sync (the process whose write wins does), and log it once."""
        known = self.epoch
        if known is None:
            if self.epoch_wanted:
                with contextlib.suppress(OutOfMemoryError):
                    await self._open_epoch()
            return
        stored, raw = await self.store.epoch()
        verdict = check(known, stored)
        if verdict is Verdict.SAME:
            assert stored is not None
            self._adopt(stored)
        else:
            if verdict is Verdict.LOST:
                successor = known.successor(stored, time.time_ns() // 1_000_000)
                stored, written = await self.store.replace_epoch(raw, successor)
                if written:
                    self.resync_pending = successor
                elif stored is None or check(known, stored) is not Verdict.ADOPT:
                    return  # changed again meanwhile: looked at again in a second
            assert stored is not None
            self._adopt(stored)
            log.error(
                "redis_data_lost",
                message="Redis lost its data (restarted empty or flushed): positions, marks "
                "and queued events are gone; not ready until the book is reloaded: "
                + RELOAD_HINT.format(topic=self.resync_topic),
                lost_epoch=known.id,
                epoch=stored.id,
                generation=stored.generation,
                resync_requested=self.resync_pending is not None,
            )
        if self.resync_pending is not None:
            await self._request_resync(self.resync_pending, known.id)

    async def _request_resync(self, epoch: Epoch, lost: str) -> None:
        """Queue the re-sync request in the first symbol's outbox, to go out like events."""
        payload = {
            "schema": 1,
            "type": "resync",
            "reason": "redis_data_lost",
            "epoch": epoch.id,
            "generation": epoch.generation,
            "lost_epoch": epoch.lost or lost,
            "requested_at": time.time_ns() // 1_000_000,
        }
        symbol = next(iter(self.settings.symbols))
        await self.outbox.enqueue(
            symbol, f"resync:{epoch.id}", self.resync_topic, orjson.dumps(payload)
        )
        self.resync_pending = None

    def _redis_failed(self, error: BaseException) -> None:
        """Note Redis not answering (out of memory is noted by whoever met it)."""
        if not isinstance(error, OutOfMemoryError):
            self.redis_ok = False
            self.redis_outage = outage(error)

    async def _keep_leases(self) -> None:
        period_s = self.leases.ttl_ms / 3000
        while True:
            raise_if_cancelling()
            acquired = await self._retry_redis(self.leases.refresh)
            self.leased.set()
            await self._taken_over(acquired)
            await asyncio.sleep(period_s)

    async def _taken_over(self, symbols: list[str]) -> None:
        """Called with the symbols a lease refresh has just acquired."""

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM and SIGINT into a graceful stop, start-up included."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def _retry_redis(self, call: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``call`` until Redis answers, backing off meanwhile (reported as not ready)."""
        backoff = Backoff(cap_s=2.0)
        refused = False
        try:
            while True:
                raise_if_cancelling()
                try:
                    result = await call(*args)
                    self.redis_ok = True
                    return result
                except REDIS_DOWN as error:
                    self._redis_failed(error)
                    if isinstance(error, OutOfMemoryError) and not refused:
                        refused = True
                        self.writes_refused += 1
                    log.warning("redis_unavailable", error=str(error))
                    await backoff.wait()
        finally:
            if refused:
                self.writes_refused -= 1

    async def _watch_redis(self) -> None:
        # Readiness every second (one PING); the outbox backlog, two commands
        # per symbol, every BACKLOG_EVERY_S.
        symbols = list(self.settings.symbols)
        next_backlog = 0.0
        while True:
            raise_if_cancelling()
            try:
                async with asyncio.timeout(3):
                    try:
                        # A write probe: it also tells a Redis out of memory.
                        await self.store.ping()
                        self.redis_full = False
                    except OutOfMemoryError:
                        self.redis_full = True
                    self.redis_ok = True
                    await self._check_epoch()
                    if time.monotonic() >= next_backlog:
                        next_backlog = time.monotonic() + BACKLOG_EVERY_S
                        length, oldest_s = await self.outbox.backlog(
                            symbols, time.time_ns() // 1_000_000
                        )
                        self.metrics.outbox_length.set(length)
                        self.metrics.outbox_oldest_age.set(oldest_s)
            except (TimeoutError, *REDIS_DOWN) as error:
                self._redis_failed(error)
                next_backlog = 0.0
            self.metrics.ready.set(0 if await self.failing() else 1)
            reason, _ = self._redis_state()
            for label in OUTAGES:
                self.metrics.redis_outage.labels(label).set(1 if label == reason else 0)
            await asyncio.sleep(1.0)


class PublisherDaemon(Service):
    """``liqmon publish``: the outbox relay as a process of its own.

    Beside monitors configured with ``mqtt.publisher = "separate"``. It reads
    every configured symbol's outbox as consumer ``{client_id}-{name}`` and
    publishes with that MQTT client id; run more than one under distinct
    names. With ``http_port``, it serves ``/healthz``, ``/readyz`` and
    ``/metrics`` (``liqmon_events_published_total``, the outbox backlog).
    Stopping is immediate: a batch not yet acknowledged by the broker stays
    pending in Redis and is sent first at the next start.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        http_port: int | None = None,
        lease_ttl_s: float = 3.0,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.transport = connect(settings.redis)
        self.redis = self.transport.client
        keys = Keys(settings.redis.key_prefix)
        self.store = PositionStore(self.transport, keys, settings.limits)
        self.outbox = Outbox(self.transport, keys, settings.limits)
        identity = f"{settings.mqtt.client_id}-{name}"
        # Publishers share the symbols by leases of their own (one reader per
        # outbox keeps each position's events in order).
        self.leases = Leases(
            self.transport, keys, identity, list(settings.symbols), lease_ttl_s, group=PUBLISHERS
        )
        self.leased = asyncio.Event()
        relay = Relay(self.outbox, list(settings.symbols), identity, self.metrics, self.leases.owns)
        self.bus = Bus(settings.mqtt, [], relay, identity, self.metrics)
        self.http_address = None if http_port is None else _address(settings.http.host, http_port)
        self.http = (
            None
            if http_port is None
            else HttpEndpoint(
                settings.http.host,
                http_port,
                self.metrics,
                self.failing,
                token=settings.http.token,
            )
        )
        self.redis_ok = False
        self.stopping = asyncio.Event()

    async def _start(self, start: Callable[[Awaitable[None], str], None]) -> None:
        start(self._watch_redis(), "redis-watch")
        if self.http is not None:
            start(self.http.run(), "http")
        await self._check_redis()
        await self._retry_redis(self._open_epoch)
        await self._retry_redis(self.outbox.ensure_groups, list(self.settings.symbols))
        start(self._keep_leases(), "leases")
        start(self.bus.run(), "mqtt")


class Daemon(Service):
    """One monitor process."""

    def __init__(
        self,
        settings: Settings,
        sources: list[PriceSource] | None = None,
        workers: int = 4,
        drain_timeout_s: float = 5.0,
        lease_ttl_s: float = 3.0,
        freeze_heap_after_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.freeze_heap_after_s = freeze_heap_after_s
        self.sources = sources or []
        self.workers = workers
        self.drain_timeout_s = drain_timeout_s
        self.metrics = Metrics()
        self.transport = connect(settings.redis)
        self.redis = self.transport.client
        keys = Keys(settings.redis.key_prefix)
        self.store = PositionStore(self.transport, keys, settings.limits)
        self.outbox = Outbox(self.transport, keys, settings.limits)
        self.guards = PriceGuards(settings.guards)
        self.engine = Engine(
            self.store,
            settings.symbols,
            settings.risk,
            settings.mqtt.topic_prefix,
            guards=self.guards,
            retry=self._retry_redis,
        )
        self.leases = Leases(
            self.transport,
            keys,
            settings.mqtt.client_id,
            list(settings.symbols),
            lease_ttl_s,
        )
        # Marks of symbols another monitor holds, kept for two lease lifetimes.
        held_back = HeldBack(window_s=2 * lease_ttl_s)
        self.tick_workers = TickWorkers(self.engine, self.metrics, self.leases.owns, held_back)
        self.funding = FundingDesk(
            self.engine,
            settings.funding,
            rules={s: rule_for(venue_of(c)) for s, c in settings.symbols.items()},
            owns=self.leases.owns,
            on_outcome=lambda outcome: record_events(self.metrics, outcome),
        )
        self.funding.wire(self.sources)
        self.intake = Intake(
            self.store,
            self.outbox,
            settings.symbols,
            settings.limits,
            settings.mqtt.topic_prefix,
            self.tick_workers,
            self._apply_positions,
            self.metrics,
            self.guards,
            wall_clock_ms=self.engine.clock_ms,
            funding=self.funding.announce if settings.funding else None,
        )
        self.handover = Handover(
            self.leases,
            held_back,
            self.guards,
            self.store,
            self.tick_workers,
            self.intake.alerts,
            self._retry_redis,
            wall_clock_ms=self.engine.clock_ms,
        )
        relay = None
        if settings.mqtt.publisher == "inline":
            relay = Relay(
                self.outbox,
                list(settings.symbols),
                settings.mqtt.client_id,
                self.metrics,
                self.leases.owns,
            )
        client_id, positions = settings.mqtt.client_id, self.intake.position_topics
        prefix = settings.mqtt.topic_prefix
        sessions = [
            # Position topics left in the price session by older versions go.
            Session(
                client_id,
                self.intake.price_topics,
                self.intake.on_message,
                # So is the funding filter, when no symbol applies funding any more.
                (*positions, *([] if settings.funding else [topics.funding_filter(prefix)])),
            ),
            Session(f"{client_id}-positions", positions, self.intake.on_message),
        ]
        self.bus = Bus(
            settings.mqtt,
            sessions,
            relay,
            f"{settings.mqtt.client_id}-out",
            self.metrics,
        )
        self.leased = asyncio.Event()
        reads = ReadModel(self.transport, keys)
        self.books = Books(
            reads,
            settings.symbols,
            settings.risk,
            self.metrics.evaluation_errors.labels("liquidation_book").inc,
        )
        self.liquidations = LiquidationWatcher(
            settings.liquidation_watch,
            settings.symbols,
            reads,
            self.books,
            self.outbox,
            ClusterStates(self.transport, keys),
            self.metrics,
            prefix,
            self.leases.owns,
            self.engine.clock_ms,
            lambda: self.engine.generation,
        )
        self.http_address = _address(settings.http.host, settings.http.port)
        self.http = HttpEndpoint(
            settings.http.host,
            settings.http.port,
            self.metrics,
            self.failing,
            Api(reads, settings.symbols, self.guards, risk=settings.risk, books=self.books),
            token=settings.http.token,
            allowed_hosts=settings.http.allowed_hosts,
            allowed_origins=settings.http.allowed_origins,
        )
        if settings.http.token is None and settings.http.host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            log.warning(
                "http_unprotected",
                host=settings.http.host,
                hint="set http.token (or LIQMON_HTTP_TOKEN) when binding beyond loopback",
            )
        self.recovered = asyncio.Event()
        self.redis_ok = False
        self.stopping = asyncio.Event()
        self.positions_in_flight = 0

    async def failing(self) -> dict[str, str]:
        """Dependencies that are not usable right now (empty: ready)."""
        failing = await super().failing()
        if not self.recovered.is_set():
            failing["recovery"] = "not finished"
        elif "redis" not in failing:
            unwatched = await self._unwatched()
            if unwatched:
                failing["feeds"] = "stale with open positions: " + ", ".join(unwatched)
        return failing

    def _adopt(self, epoch: Epoch) -> None:
        super()._adopt(epoch)
        self.engine.generation = epoch.generation

    async def _unwatched(self) -> list[str]:
        """The held symbols whose feed is stale while they hold open positions, each with
        how long it has been silent: their liquidations wait for a fresh mark."""
        silent = self.guards.stale(time.monotonic())
        if not silent:
            return []
        try:
            open_symbols = await self.store.with_open_positions(sorted(silent))
        except REDIS_DOWN:
            return []  # readiness says so under "redis"
        return [f"{s} (no fresh mark for {silent[s]:.0f} s)" for s in open_symbols]

    async def _start(self, start: Callable[[Awaitable[None], str], None]) -> None:
        start(self.books.run(), "liquidation-books")
        start(self.http.run(), "http")
        start(self._watch_redis(), "redis-watch")
        await self._check_redis()
        await self._retry_redis(self._open_epoch)
        await self._retry_redis(self.outbox.ensure_groups, list(self.settings.symbols))
        recovered = await self._retry_redis(self.engine.recover)
        self.recovered.set()
        log.info("recovered", events=recovered)
        start(self._keep_leases(), "leases")
        start(self.intake.dead_letters.run(), "dead-letters")
        start(self.bus.run(), "mqtt")
        for n in range(self.workers):
            start(self.tick_workers.run(), f"tick-worker-{n}")
        start(self._sweep_guards(), "guard-sweep")
        start(self._expire_tombstones(), "tombstones")
        if self.liquidations.symbols:
            start(self.liquidations.run(), "liquidation-watch")
        if self.settings.funding:
            start(self.funding.run(), "funding")
        for source in self.sources:
            start(self._run_source(source), f"source-{source.name}")
        if self.freeze_heap_after_s is not None:
            start(self._freeze_heap(self.freeze_heap_after_s), "heap")

    async def _freeze_heap(self, after_s: float) -> None:
        # Python's full collections walk every live object and hold the event
        # loop while they do (30-40 ms with this process's ~60,000, a p99
        # tick's whole budget several times a minute). What exists once the
        # monitor runs (configuration, metric series, connections, tasks)
        # lives until exit: freezing it leaves collections the young objects.
        await self.bus.connected.wait()
        await asyncio.sleep(after_s)
        gc.collect()
        gc.freeze()
        log.info("heap_frozen", objects=gc.get_freeze_count())

    def idle(self) -> bool:
        """True when no tick or position version is queued or being evaluated."""
        return (
            self.tick_workers.idle
            and not self.positions_in_flight
            and self.intake.dead_letters.idle
        )

    async def _drain(self) -> None:
        # Polling, not an Event: "nothing queued anywhere" is a condition over
        # several queues and Redis, checked only during shutdown.
        symbols = sorted(self.leases.held)
        with contextlib.suppress(TimeoutError, *REDIS_DOWN):
            async with asyncio.timeout(self.drain_timeout_s):
                while not self.idle():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                while (  # noqa: ASYNC110
                    self.bus.relay is not None
                    and self.bus.connected.is_set()
                    and await self.outbox.length(symbols)
                ):
                    await asyncio.sleep(0.02)

    async def _apply_positions(self, batch: list[PositionUpdate]) -> None:
        """Store one message's position versions; return once they are stored.

        The intake awaits this before the message is acknowledged to the broker.
        While Redis is away it retries (the message waits, unacknowledged);
        cancelling it (a stop) leaves the message to come again, and a version
        stored twice is ignored the second time (same ``seq``).
        """
        self.positions_in_flight += len(batch)
        try:
            outcome = await self._retry_redis(self.engine.apply_updates, batch)
        except Exception:
            # A bug, not bad input (that was rejected before): counted and
            # logged, and the message acknowledged, so it cannot wedge the session.
            self.metrics.evaluation_errors.labels("positions").inc()
            log.exception("position_batch_failed", count=len(batch))
            return
        finally:
            self.positions_in_flight -= len(batch)
        self.metrics.positions.labels("applied").inc(outcome.applied)
        self.metrics.positions.labels("ignored_stale_seq").inc(outcome.ignored)
        record_events(self.metrics, outcome)

    async def _taken_over(self, symbols: list[str]) -> None:
        await self.handover.taken_over(symbols)

    async def _sweep_guards(self) -> None:
        while True:
            raise_if_cancelling()
            now = time.monotonic()
            await self.intake.alerts(self.guards.sweep(now))
            for n, symbol in enumerate(self.settings.symbols, 1):
                if n % 50 == 0:
                    # Hundreds of symbols: let ticks through between slices.
                    await asyncio.sleep(0)
                state = self.guards.state(symbol, now)
                if state.silent_s is not None:
                    self.metrics.feed_age.labels(symbol).set(state.silent_s)
                # Only the lease holder reports a symbol stale or held, so one
                # LiqmonFeedStale fires however many monitors run.
                held = symbol in self.leases.held
                stale, holding = held and state.stale, held and state.holding
                self.metrics.feed_stale.labels(symbol).set(1 if stale else 0)
                self.metrics.liquidation_hold.labels(symbol).set(1 if holding else 0)
            await asyncio.sleep(1.0)

    async def _expire_tombstones(self) -> None:
        """Forget old tombstones of the symbols this monitor holds, a few times per retention."""
        retention_s = self.settings.limits.tombstone_retention_s
        while True:
            raise_if_cancelling()
            await asyncio.sleep(min(retention_s / 4, 60.0))
            try:
                deleted = await self.store.expire_tombstones(sorted(self.leases.held), retention_s)
            except REDIS_DOWN:
                continue  # the next round tries again; readiness reports Redis
            if deleted:
                self.metrics.tombstones_expired.inc(deleted)
                log.info("tombstones_expired", count=deleted)

    async def _run_source(self, source: PriceSource) -> None:
        """Run one price source; a source that cannot work stops alone, loudly.

        Sources reconnect on their own; what reaches here is fatal for that
        source (a refused handshake, a wrong URL). The other sources, the MQTT
        prices and the monitor go on; the symbols it fed go stale and alert.
        """
        try:
            await source.run(self._source_tick, self._source_reject)
        except FeedError as error:
            self.metrics.evaluation_errors.labels(f"source:{source.name}").inc()
            log.error("source_stopped", source=source.name, error=str(error))

    async def _source_tick(self, tick: PriceTick) -> None:
        try:
            await self.intake.on_tick(tick)
        except Rejection as rejection:
            await self.intake.reject(
                tick.source, rejection.reason, rejection.detail, repr(tick).encode()
            )

    async def _source_reject(self, source: str, reason: str, raw: bytes) -> None:
        await self.intake.reject(source, reason, reason, raw)
