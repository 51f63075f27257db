"""Price guards: which ticks liqmon trusts, and when it may act on them.

A liquidation monitor is only as good as the prices it trusts. The worst
failures come from feeds: a stream that goes silent without closing, a
reconnect that replays old frames, one bad print that liquidates healthy
positions. Every tick passes :meth:`PriceGuards.on_tick` before it may reach
the evaluation, and the daemon asks :meth:`PriceGuards.may_decide` (margin
calls, liquidations) and :meth:`PriceGuards.may_liquidate` before it acts.

The module is pure and synchronous, in the sans-I/O style: the clock is an
argument (``now_s``, monotonic seconds at *receipt*, never the venue's
timestamp), nothing here awaits or does I/O, and the returned
:class:`Alert` values are published by the daemon.

Rule 1: a tick is checked in this order; the first failing check is its
reason, and a rejected tick changes nothing (not even the staleness clock)::

    not_mark_source    a mark from a source other than the symbol's mark_source
    not_index_source   an index from a source not in the symbol's index_sources
    non_finite         NaN or infinity
    non_positive       zero or below
    out_of_order       ts_ms older than the last accepted tick of the same symbol
                       and kind (and source, for index ticks); an equal ts_ms is accepted
    jump               a mark more than max_jump away from the last accepted mark
                       (not checked while the symbol is stale, see Rule 4)

Rule 2: a symbol is *stale* while ``now_s - received_s > stale_after_s``, where
``received_s`` is the receipt time of its last accepted mark. Nothing is decided
on a stale mark. :meth:`PriceGuards.sweep` (called about once a second) raises
``feed_stale`` once per stale period; the first accepted fresh mark raises
``feed_resumed`` and is evaluated normally. If the sweep did not run during the
gap, that mark raises both alerts, so the two always come in pairs. A symbol
with no mark yet is neither stale nor holding.

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

Alerts, each raised once per episode and always paired::

    feed_stale ─────── first accepted fresh mark ───────▶ feed_resumed
    price_deviation ── |mark/index − 1| ≤ the limit ────▶ price_deviation_cleared
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from enum import StrEnum
from math import isfinite
from typing import Any

from feeds.tick import PriceKind, PriceTick
from monitor.errors import ConfigError

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
    """

    stale_after_s: float = 10.0
    max_mark_index_deviation: Decimal | None = Decimal("0.05")
    hold_on_deviation: bool = False
    max_jump: Decimal | None = None
    mark_source: str | None = None
    index_sources: tuple[str, ...] = ()


DEFAULT_GUARDS = GuardSettings()
"""The guards of a symbol that has no settings of its own."""


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should know about a symbol's prices.

    ``detail`` values are strings (Decimals in their exact text, seconds with
    three decimals); ``at_s`` is the monotonic time at which it was raised.
    """

    symbol: str
    type: AlertType
    detail: dict[str, str]
    at_s: float


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

    def settings_for(self, symbol: str) -> GuardSettings:
        """The guards that apply to ``symbol`` (its own, or the default)."""
        return self._settings.get(symbol, self._default)

    def on_tick(self, tick: PriceTick, now_s: float) -> Verdict:
        """Accept or reject ``tick`` received at ``now_s``; never raises on a bad tick."""
        settings = self.settings_for(tick.symbol)
        state = self._states.get(tick.symbol)
        reason = _rejection(tick, settings, state, now_s)
        if reason is not None:
            return Verdict(False, reason, None, _median_index(state, settings, now_s))
        if state is None:
            state = self._states[tick.symbol] = _SymbolState()
        alerts: list[Alert] = []
        if tick.kind == PriceKind.MARK:
            if state.mark is not None and (
                state.stale_alerted or _is_stale(state, settings, now_s)
            ):
                gap_s = now_s - state.mark_received_s
                if not state.stale_alerted:
                    alerts.append(_stale_alert(tick.symbol, state.mark, gap_s, now_s))
                alerts.append(
                    Alert(
                        tick.symbol,
                        AlertType.FEED_RESUMED,
                        {"gap_s": _seconds(gap_s), "mark": str(tick.price)},
                        now_s,
                    )
                )
                state.stale_alerted = False
            state.mark = tick
            state.mark_received_s = now_s
        else:
            state.index[tick.source] = _IndexQuote(tick.price, tick.ts_ms, now_s)
        index = _median_index(state, settings, now_s)
        alerts.extend(_deviation_alerts(tick.symbol, state, settings, index, now_s))
        mark = tick if tick.kind == PriceKind.MARK else None
        return Verdict(True, None, mark, index, tuple(alerts))

    def sweep(self, now_s: float) -> list[Alert]:
        """``feed_stale`` for each symbol whose mark went stale since it was last fresh."""
        alerts: list[Alert] = []
        for symbol, state in self._states.items():
            if state.mark is None or state.stale_alerted:
                continue
            if _is_stale(state, self.settings_for(symbol), now_s):
                state.stale_alerted = True
                age_s = now_s - state.mark_received_s
                alerts.append(_stale_alert(symbol, state.mark, age_s, now_s))
        return alerts

    def may_decide(self, symbol: str, now_s: float) -> bool:
        """False while ``symbol``'s mark is stale: no margin call or liquidation on it."""
        state = self._states.get(symbol)
        return state is None or not _is_stale(state, self.settings_for(symbol), now_s)

    def may_liquidate(self, symbol: str, now_s: float) -> bool:
        """False while stale, or while a deviation holds liquidations (``hold_on_deviation``)."""
        return self.may_decide(symbol, now_s) and not self._holding(symbol)

    def state(self, symbol: str, now_s: float) -> dict[str, object]:
        """A snapshot for dashboards and metrics; Decimals as strings.

        Keys: ``mark``, ``mark_source``, ``mark_ts_ms``, ``age_s`` (seconds
        since the last accepted mark), ``index`` (the current median),
        ``index_sources`` (how many fresh sources it is the median of),
        ``stale``, ``deviation`` (current ``|mark/index − 1|``), ``deviating``
        (a ``price_deviation`` alert is outstanding) and ``holding``
        (liquidations are held because of it).
        """
        settings = self.settings_for(symbol)
        state = self._states.get(symbol)
        mark = state.mark if state is not None else None
        index = _median_index(state, settings, now_s)
        deviation = (
            _relative_change(mark.price, index) if mark is not None and index is not None else None
        )
        return {
            "mark": str(mark.price) if mark is not None else None,
            "mark_source": mark.source if mark is not None else None,
            "mark_ts_ms": mark.ts_ms if mark is not None else None,
            "age_s": now_s - state.mark_received_s
            if state is not None and mark is not None
            else None,
            "index": str(index) if index is not None else None,
            "index_sources": len(_fresh_index(state, settings, now_s)),
            "stale": state is not None and _is_stale(state, settings, now_s),
            "deviation": str(deviation) if deviation is not None else None,
            "deviating": state is not None and state.deviating,
            "holding": self._holding(symbol),
        }

    def _holding(self, symbol: str) -> bool:
        state = self._states.get(symbol)
        return state is not None and state.deviating and self.settings_for(symbol).hold_on_deviation


def _rejection(
    tick: PriceTick, settings: GuardSettings, state: _SymbolState | None, now_s: float
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


def _is_stale(state: _SymbolState, settings: GuardSettings, now_s: float) -> bool:
    """Rule 2 (a symbol with no mark yet is not stale)."""
    return state.mark is not None and now_s - state.mark_received_s > settings.stale_after_s


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
    symbol: str,
    state: _SymbolState,
    settings: GuardSettings,
    index: Decimal | None,
    now_s: float,
) -> list[Alert]:
    """Rule 5: the deviation alert this tick raises or clears, if any."""
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
    return [Alert(symbol, kind, detail, now_s)]


def _stale_alert(symbol: str, mark: PriceTick, age_s: float, now_s: float) -> Alert:
    detail = {"age_s": _seconds(age_s), "mark": str(mark.price)}
    return Alert(symbol, AlertType.FEED_STALE, detail, now_s)


def _relative_change(price: Decimal, reference: Decimal) -> Decimal:
    """``|price/reference − 1|`` for finite positive prices (Infinity on overflow)."""
    return _MATH.abs(_MATH.subtract(_MATH.divide(price, reference), 1))


def _seconds(value: float) -> str:
    return f"{value:.3f}"


GUARD_KEYS = frozenset(
    {
        "stale_after_s",
        "max_mark_index_deviation",
        "hold_on_deviation",
        "max_jump",
        "mark_source",
        "index_source",
        "index_sources",
    }
)
"""The keys :func:`parse_guard_settings` reads."""


def parse_guard_settings(
    table: Mapping[str, Any], where: str, base: GuardSettings = DEFAULT_GUARDS
) -> GuardSettings:
    """Validate a decoded TOML table of guard settings; missing keys come from ``base``.

    ``where`` is how the table is named in errors, file first, e.g.
    ``"liqmon.toml: symbols.BTCUSDT.guards"``; a problem raises
    :class:`~monitor.errors.ConfigError` as ``FILE: KEY: PROBLEM``. Decimals
    may be strings or numbers; ``false`` turns off ``max_mark_index_deviation``
    or ``max_jump``, and makes ``mark_source`` any source. ``index_source =
    "NAME"`` is shorthand for ``index_sources = ["NAME"]``.
    """

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}.{key}: {problem}")

    for key in table:
        if key not in GUARD_KEYS:
            raise fail(key, "unknown key")

    stale_after_s = base.stale_after_s
    if "stale_after_s" in table:
        value = table["stale_after_s"]
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise fail("stale_after_s", f"must be a number of seconds, got {value!r}")
        stale_after_s = float(value)
        if not isfinite(stale_after_s) or stale_after_s <= 0:
            raise fail("stale_after_s", f"must be a positive number of seconds, got {value!r}")

    def fraction(key: str, default: Decimal | None) -> Decimal | None:
        if key not in table:
            return default
        value = table[key]
        if value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise fail(key, f"must be a decimal string or number (or false), got {value!r}")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise fail(key, f"must be a decimal, got {value!r}") from None
        if not number.is_finite() or number <= 0:
            raise fail(key, f"must be a finite positive decimal, got {value!r}")
        return number

    hold = table.get("hold_on_deviation", base.hold_on_deviation)
    if not isinstance(hold, bool):
        raise fail("hold_on_deviation", f"must be true or false, got {hold!r}")

    mark_source = table.get("mark_source", base.mark_source)
    if mark_source is False:
        mark_source = None
    elif mark_source is not None and (not isinstance(mark_source, str) or not mark_source):
        raise fail("mark_source", f"must be a source name (or false), got {mark_source!r}")

    index_sources = base.index_sources
    if "index_source" in table and "index_sources" in table:
        raise fail("index_source", "give index_source or index_sources, not both")
    if "index_source" in table:
        name = table["index_source"]
        if not isinstance(name, str) or not name:
            raise fail("index_source", f"must be a source name, got {name!r}")
        index_sources = (name,)
    elif "index_sources" in table:
        names = table["index_sources"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise fail("index_sources", f"must be an array of source names, got {names!r}")
        if len(set(names)) != len(names):
            raise fail("index_sources", f"names a source twice: {names!r}")
        index_sources = tuple(names)

    return GuardSettings(
        stale_after_s=stale_after_s,
        max_mark_index_deviation=fraction(
            "max_mark_index_deviation", base.max_mark_index_deviation
        ),
        hold_on_deviation=hold,
        max_jump=fraction("max_jump", base.max_jump),
        mark_source=mark_source,
        index_sources=index_sources,
    )
