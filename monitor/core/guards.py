"""Price guards: which ticks liqmon trusts, and when it may act on them.

A liquidation monitor is only as good as the prices it trusts. The worst
failures come from feeds: a stream that goes silent without closing, a
reconnect that replays old frames, one bad print that liquidates healthy
positions. Every tick passes :meth:`PriceGuards.on_tick` before it may reach
the evaluation, and the daemon asks :meth:`PriceGuards.may_decide` (margin
calls, liquidations) and :meth:`PriceGuards.may_liquidate` before it acts.

The module is pure and synchronous, in the sans-I/O style: the clocks are
arguments (``now_s``, monotonic seconds at *receipt*, for every duration;
``now_ms``, the wall clock in epoch milliseconds, only to judge the venue's
timestamps), nothing here awaits or does I/O, and the returned
:class:`Alert` values are published by the daemon.

Rule 1: a tick is checked in this order; the first failing check is its
reason, and a rejected tick changes nothing (not even the staleness clock)::

    not_mark_source    a mark from a source other than the symbol's mark_source
    not_index_source   an index from a source not in the symbol's index_sources
    non_finite         NaN or infinity
    non_positive       zero or below
    future_ts          ts_ms more than max_future_skew_s after now_ms (a stamp in
                       microseconds, a venue clock gone wrong): accepted, it
                       would make every correct tick after it look older
    out_of_order       ts_ms older than the last accepted tick of the same symbol
                       and kind (and source, for index ticks); an equal ts_ms is accepted
    jump               a mark more than max_jump away from the last accepted mark
                       (not checked while the symbol is stale, see Rule 4)

Rule 2: a symbol is *stale* while ``now_s - received_s > stale_after_s``, where
``received_s`` is the receipt time of its last accepted mark; a watched symbol
(Rule 6) with no mark at all is stale once ``stale_after_s`` has passed since
it was first watched. Nothing is decided on a stale mark.
:meth:`PriceGuards.sweep` (called about once a second) raises ``feed_stale``
once per stale period; the first accepted fresh mark raises ``feed_resumed``
and is evaluated normally. If the sweep did not run during the gap, that mark
raises both alerts, so the two always come in pairs.

Rule 3: the index is the median of the last index of each index source that
is itself fresh (received within ``stale_after_s``); with an even count it is
the mean of the middle two. A source that goes quiet drops out of the median.

Rule 4: a genuine move larger than ``max_jump`` is not locked out forever: its
marks are rejected, so after ``stale_after_s`` the symbol goes stale (nothing
is decided meanwhile), and the next mark is accepted as the new reference.

Rule 5: on every accepted tick, when the mark is fresh and an index is known,
the deviation ``|mark/index − 1|`` is compared with
``max_mark_index_deviation``: ``price_deviation`` once when it goes beyond,
``price_deviation_cleared`` once when it comes back within. While no fresh
index is known the last verdict stands: a hold is never lifted because the
index went quiet. With ``hold_on_deviation`` liquidations wait during a
deviation; margin calls still go out.

Rule 6: alerts are raised only for *watched* symbols: those whose lease this
monitor holds (:meth:`PriceGuards.watch`, :meth:`PriceGuards.unwatch`). Ticks of
other symbols are still checked and remembered, so a monitor that takes a
symbol over knows its last mark, but only one monitor announces an episode.
Watching starts the staleness clock of a symbol with no mark; a stored mark
handed to :meth:`~PriceGuards.watch` (the last one in Redis, after a restart)
counts with its age by ``now_ms``, unless it is stamped beyond
``max_future_skew_s`` (an older version stored it): that one is ignored.

Alerts, each raised once per episode and always paired::

    feed_stale ─────── first accepted fresh mark ───────▶ feed_resumed
    price_deviation ── |mark/index − 1| ≤ the limit ────▶ price_deviation_cleared

Every alert names its episode by a time every monitor derives alike from the
ticks, not from its own clock (:attr:`Alert.alert_id`): a stale episode by the
last mark's ``ts_ms`` plus ``stale_after_s`` (with no mark, by when watching
began), a deviation by the ``ts_ms`` of the tick that started it; both alerts
of a pair carry the same time. A monitor that takes a symbol over in the middle
of an episode announces it again under the same id, and a subscriber that keeps
the ids it has seen gets it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum

from feeds.tick import PriceKind, PriceTick

# All guard arithmetic runs in this context, whatever the caller's: 28 digits,
# and no traps, so two finite prices whose ratio overflows give Infinity
# (which is simply "beyond any limit") instead of raising.
_MATH = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=[])


class AlertType(StrEnum):
    """The alerts the guards raise (published on ``{prefix}/alerts/{symbol}/{type}``)."""

    FEED_STALE = "feed_stale"
    FEED_RESUMED = "feed_resumed"
    PRICE_DEVIATION = "price_deviation"
    PRICE_DEVIATION_CLEARED = "price_deviation_cleared"


class RejectReason(StrEnum):
    """Why a tick was not accepted; a short stable token fit for a metric label."""

    NOT_MARK_SOURCE = "not_mark_source"
    NOT_INDEX_SOURCE = "not_index_source"
    NON_FINITE = "non_finite"
    NON_POSITIVE = "non_positive"
    FUTURE_TS = "future_ts"
    OUT_OF_ORDER = "out_of_order"
    JUMP = "jump"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """The guards of one symbol.

    ``stale_after_s`` (default 10.0): seconds without an accepted mark after which
    the symbol is stale and nothing is decided for it.
    ``max_mark_index_deviation`` (default 0.05, i.e. 5 %): the largest
    ``|mark/index − 1|`` before a ``price_deviation`` alert; None disables.
    ``hold_on_deviation`` (default False): hold liquidations during a deviation.
    ``max_jump`` (default None, disabled): reject a mark more than this fraction
    away from the last accepted mark (0.2 rejects a move beyond 20 % in one tick).
    ``mark_source`` (default None, any): the only source whose marks are used.
    ``index_sources`` (default empty, any): the sources whose index ticks count;
    the index is the median of the fresh ones.
    ``max_future_skew_s`` (default 5.0): the most a tick's ``ts`` may be ahead of
    this monitor's wall clock; a later one is rejected (``future_ts``).
    """

    stale_after_s: float = 10.0
    max_mark_index_deviation: Decimal | None = Decimal("0.05")
    hold_on_deviation: bool = False
    max_jump: Decimal | None = None
    mark_source: str | None = None
    index_sources: tuple[str, ...] = ()
    max_future_skew_s: float = 5.0


DEFAULT_GUARDS = GuardSettings()
"""The guards of a symbol that has no settings of its own."""


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should know about a symbol's prices.

    ``detail`` values are strings (Decimals in their exact text, seconds with
    three decimals); ``at_s`` is the monotonic time at which it was raised;
    ``episode_ms`` names the episode (epoch ms, the same on every monitor).
    """

    symbol: str
    type: AlertType
    detail: dict[str, str]
    at_s: float
    episode_ms: int

    @property
    def alert_id(self) -> str:
        """``{symbol}:{type}:{episode_ms}``: what two monitors announcing one episode share."""
        return f"{self.symbol}:{self.type.value}:{self.episode_ms}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`PriceGuards.on_tick` made of one tick.

    ``reason`` is None exactly when ``accepted``. ``mark`` is the tick to
    evaluate (None unless this is an accepted mark); ``index`` is the symbol's
    current (median) index after this tick, for reporting; ``alerts`` are to be
    published, in order.
    """

    accepted: bool
    reason: RejectReason | None
    mark: PriceTick | None
    index: Decimal | None
    alerts: tuple[Alert, ...] = ()


@dataclass(slots=True)
class _IndexQuote:
    price: Decimal
    ts_ms: int
    received_s: float


@dataclass(slots=True)
class _SymbolState:
    mark: PriceTick | None = None
    mark_received_s: float = 0.0
    index: dict[str, _IndexQuote] = field(default_factory=dict)
    stale_alerted: bool = False
    deviating: bool = False
    deviation_alert: Alert | None = None
    """The ``price_deviation`` of the current deviation, announced again on :meth:`watch`."""
    watched_s: float | None = None
    """When watching began, for a symbol with no mark (its staleness counts from then)."""
    watched_ms: int = 0


@dataclass(frozen=True, slots=True)
class FeedState:
    """A symbol's feed as the guards see it, for readiness, metrics and dashboards."""

    mark: Decimal | None = None
    """The last accepted mark."""
    mark_source: str | None = None
    mark_ts_ms: int | None = None
    age_s: float | None = None
    """Seconds since the last accepted mark (None without one)."""
    silent_s: float | None = None
    """The same, or with no mark the seconds since watching began: what staleness is
    judged on."""
    index: Decimal | None = None
    """The median of the fresh index sources."""
    index_sources: int = 0
    """How many fresh sources the index is the median of."""
    stale: bool = False
    deviation: Decimal | None = None
    """The current ``|mark/index − 1|``."""
    deviating: bool = False
    """A ``price_deviation`` alert is outstanding."""
    holding: bool = False
    """Liquidations are held because of the deviation."""


class PriceGuards:
    """Per-symbol guard state: last accepted mark, each index source's last index, alerts.

    Memory is bounded by the number of symbols times the number of index
    sources, whatever the tick rate.
    """

    def __init__(
        self, settings: Mapping[str, GuardSettings], default: GuardSettings = DEFAULT_GUARDS
    ) -> None:
        self._settings = dict(settings)
        self._default = default
        self._states: dict[str, _SymbolState] = {}
        self._watched: set[str] = set()

    def settings_for(self, symbol: str) -> GuardSettings:
        """The guards that apply to ``symbol`` (its own, or the default)."""
        return self._settings.get(symbol, self._default)

    @property
    def watching(self) -> frozenset[str]:
        """The symbols whose alerts this monitor raises (Rule 6)."""
        return frozenset(self._watched)

    def ts_ceiling_ms(self, symbol: str, now_ms: int) -> int:
        """The latest ``ts_ms`` a tick of ``symbol`` may carry at wall time ``now_ms``.

        A stored mark stamped later than this is not believed either (Rule 6).
        """
        return now_ms + int(self.settings_for(symbol).max_future_skew_s * 1000)

    def watch(
        self, symbol: str, now_s: float, now_ms: int, stored: PriceTick | None = None
    ) -> list[Alert]:
        """Start raising ``symbol``'s alerts (this monitor took its lease); Rule 6.

        ``stored`` is the symbol's last mark in Redis, if any: when the guards
        have no mark of their own, it becomes the last mark, as old as its
        ``ts_ms`` says. Returns the ``price_deviation`` of a deviation already
        under way (the previous holder announced it under the same id); a stale
        feed is announced by the next :meth:`sweep`.
        """
        state = self._states.setdefault(symbol, _SymbolState())
        if symbol in self._watched:
            return []
        self._watched.add(symbol)
        if state.mark is None:
            if stored is not None and stored.ts_ms <= self.ts_ceiling_ms(symbol, now_ms):
                state.mark = stored
                state.mark_received_s = now_s - max(0.0, (now_ms - stored.ts_ms) / 1000)
            else:
                state.watched_s, state.watched_ms = now_s, now_ms
        if state.deviating and state.deviation_alert is not None:
            return [replace(state.deviation_alert, at_s=now_s)]
        return []

    def unwatch(self, symbol: str) -> None:
        """Stop raising ``symbol``'s alerts (the lease went to another monitor)."""
        self._watched.discard(symbol)

    def on_tick(self, tick: PriceTick, now_s: float, now_ms: int) -> Verdict:
        """Accept or reject ``tick`` received at ``now_s`` (wall clock ``now_ms``).

        Never raises on a bad tick.
        """
        settings = self.settings_for(tick.symbol)
        state = self._states.get(tick.symbol)
        reason = _rejection(tick, settings, state, now_s, now_ms)
        if reason is not None:
            return Verdict(False, reason, None, _median_index(state, settings, now_s))
        if state is None:
            state = self._states[tick.symbol] = _SymbolState()
        alerts: list[Alert] = []
        if tick.kind == PriceKind.MARK:
            if state.stale_alerted or _is_stale(state, settings, now_s):
                gap_s = now_s - _silent_since(state)
                episode_ms = _stale_episode_ms(state, settings)
                if not state.stale_alerted:
                    alerts.append(_stale_alert(tick.symbol, state, gap_s, now_s, episode_ms))
                detail = {"gap_s": _seconds(gap_s), "mark": str(tick.price)}
                alerts.append(Alert(tick.symbol, AlertType.FEED_RESUMED, detail, now_s, episode_ms))
                state.stale_alerted = False
            state.mark = tick
            state.mark_received_s = now_s
        else:
            state.index[tick.source] = _IndexQuote(tick.price, tick.ts_ms, now_s)
        index = _median_index(state, settings, now_s)
        alerts.extend(_deviation_alerts(tick, state, settings, index, now_s))
        mark = tick if tick.kind == PriceKind.MARK else None
        if tick.symbol not in self._watched:
            alerts.clear()
        return Verdict(True, None, mark, index, tuple(alerts))

    def sweep(self, now_s: float) -> list[Alert]:
        """``feed_stale`` for each watched symbol gone stale since it was last fresh."""
        alerts: list[Alert] = []
        for symbol in sorted(self._watched):
            state = self._states[symbol]
            settings = self.settings_for(symbol)
            if not state.stale_alerted and _is_stale(state, settings, now_s):
                state.stale_alerted = True
                age_s = now_s - _silent_since(state)
                episode_ms = _stale_episode_ms(state, settings)
                alerts.append(_stale_alert(symbol, state, age_s, now_s, episode_ms))
        return alerts

    def may_decide(self, symbol: str, now_s: float) -> bool:
        """False while ``symbol``'s mark is stale: no margin call or liquidation on it."""
        state = self._states.get(symbol)
        return state is None or not _is_stale(state, self.settings_for(symbol), now_s)

    def may_liquidate(self, symbol: str, now_s: float) -> bool:
        """False while stale, or while a deviation holds liquidations (``hold_on_deviation``)."""
        return self.may_decide(symbol, now_s) and not self._holding(symbol)

    def stale(self, now_s: float) -> dict[str, float]:
        """The watched symbols that are stale at ``now_s`` (Rule 2), with the seconds each
        has been silent; cheap enough for every readiness probe."""
        silent = {}
        for symbol in self._watched:
            state = self._states[symbol]
            if _is_stale(state, self.settings_for(symbol), now_s):
                silent[symbol] = now_s - _silent_since(state)
        return silent

    def state(self, symbol: str, now_s: float) -> FeedState:
        """What the guards know of ``symbol``'s feed now (see :class:`FeedState`)."""
        settings = self.settings_for(symbol)
        state = self._states.get(symbol)
        mark = state.mark if state is not None else None
        index = _median_index(state, settings, now_s)
        deviation = (
            _relative_change(mark.price, index) if mark is not None and index is not None else None
        )
        silent = (
            now_s - _silent_since(state)
            if state is not None and (mark is not None or state.watched_s is not None)
            else None
        )
        return FeedState(
            mark=mark.price if mark is not None else None,
            mark_source=mark.source if mark is not None else None,
            mark_ts_ms=mark.ts_ms if mark is not None else None,
            age_s=silent if mark is not None else None,
            silent_s=silent,
            index=index,
            index_sources=len(_fresh_index(state, settings, now_s)),
            stale=state is not None and _is_stale(state, settings, now_s),
            deviation=deviation,
            deviating=state is not None and state.deviating,
            holding=self._holding(symbol),
        )

    def _holding(self, symbol: str) -> bool:
        state = self._states.get(symbol)
        return state is not None and state.deviating and self.settings_for(symbol).hold_on_deviation


def _rejection(
    tick: PriceTick,
    settings: GuardSettings,
    state: _SymbolState | None,
    now_s: float,
    now_ms: int,
) -> RejectReason | None:
    """Rule 1: the first check ``tick`` fails, or None."""
    is_mark = tick.kind == PriceKind.MARK
    if is_mark and settings.mark_source is not None and tick.source != settings.mark_source:
        return RejectReason.NOT_MARK_SOURCE
    if not is_mark and settings.index_sources and tick.source not in settings.index_sources:
        return RejectReason.NOT_INDEX_SOURCE
    if not tick.price.is_finite():
        return RejectReason.NON_FINITE
    if tick.price <= 0:
        return RejectReason.NON_POSITIVE
    if tick.ts_ms > now_ms + int(settings.max_future_skew_s * 1000):
        return RejectReason.FUTURE_TS
    if state is None:
        return None
    if not is_mark:
        quote = state.index.get(tick.source)
        if quote is not None and tick.ts_ms < quote.ts_ms:
            return RejectReason.OUT_OF_ORDER
        return None
    last = state.mark
    if last is None:
        return None
    if tick.ts_ms < last.ts_ms:
        return RejectReason.OUT_OF_ORDER
    if (
        settings.max_jump is not None
        and not _is_stale(state, settings, now_s)
        and _relative_change(tick.price, last.price) > settings.max_jump
    ):
        return RejectReason.JUMP
    return None


def _silent_since(state: _SymbolState) -> float:
    """When the symbol's silence began: its last mark's receipt, else when watching began."""
    if state.mark is not None or state.watched_s is None:
        return state.mark_received_s
    return state.watched_s


def _is_stale(state: _SymbolState, settings: GuardSettings, now_s: float) -> bool:
    """Rule 2 (a symbol with no mark, unless watched, is not stale)."""
    if state.mark is None and state.watched_s is None:
        return False
    return now_s - _silent_since(state) > settings.stale_after_s


def _stale_episode_ms(state: _SymbolState, settings: GuardSettings) -> int:
    """When the stale episode began, as every monitor that saw the last mark derives it."""
    start_ms = state.mark.ts_ms if state.mark is not None else state.watched_ms
    return start_ms + int(settings.stale_after_s * 1000)


def _fresh_index(
    state: _SymbolState | None, settings: GuardSettings, now_s: float
) -> list[Decimal]:
    if state is None:
        return []
    return [
        quote.price
        for quote in state.index.values()
        if now_s - quote.received_s <= settings.stale_after_s
    ]


def _median_index(
    state: _SymbolState | None, settings: GuardSettings, now_s: float
) -> Decimal | None:
    """Rule 3: the median of the fresh index sources, or None when there is none."""
    prices = sorted(_fresh_index(state, settings, now_s))
    if not prices:
        return None
    middle = len(prices) // 2
    if len(prices) % 2:
        return prices[middle]
    low, high = prices[middle - 1], prices[middle]
    # low + (high − low)/2 rather than (low + high)/2: cannot overflow.
    return _MATH.add(low, _MATH.divide(_MATH.subtract(high, low), 2))


def _deviation_alerts(
    tick: PriceTick,
    state: _SymbolState,
    settings: GuardSettings,
    index: Decimal | None,
    now_s: float,
) -> list[Alert]:
    """Rule 5: the deviation alert ``tick`` raises or clears, if any."""
    limit = settings.max_mark_index_deviation
    mark = state.mark
    if limit is None or mark is None or index is None or _is_stale(state, settings, now_s):
        return []
    deviation = _relative_change(mark.price, index)
    beyond = deviation > limit
    if beyond == state.deviating:
        return []
    state.deviating = beyond
    kind = AlertType.PRICE_DEVIATION if beyond else AlertType.PRICE_DEVIATION_CLEARED
    detail = {
        "mark": str(mark.price),
        "index": str(index),
        "deviation": str(deviation),
        "max": str(limit),
    }
    started = state.deviation_alert
    episode_ms = tick.ts_ms if beyond or started is None else started.episode_ms
    alert = Alert(tick.symbol, kind, detail, now_s, episode_ms)
    state.deviation_alert = alert if beyond else None
    return [alert]


def _stale_alert(
    symbol: str, state: _SymbolState, age_s: float, now_s: float, episode_ms: int
) -> Alert:
    detail = {"age_s": _seconds(age_s)}
    if state.mark is not None:
        detail["mark"] = str(state.mark.price)
    return Alert(symbol, AlertType.FEED_STALE, detail, now_s, episode_ms)


def _relative_change(price: Decimal, reference: Decimal) -> Decimal:
    """``|price/reference − 1|`` for finite positive prices (Infinity on overflow)."""
    return _MATH.abs(_MATH.subtract(_MATH.divide(price, reference), 1))


def _seconds(value: float) -> str:
    return f"{value:.3f}"
