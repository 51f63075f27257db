"""Isolated-margin math: pure, synchronous, Decimal.

Nothing here does I/O or knows about Redis, MQTT or asyncio; every input is an
argument. The formulas follow the venues' published ones:

linear (quote-margined, e.g. BTCUSDT), size ``q`` in base units::

    notional N = q·P            PnL = s·q·(P − E)

inverse (coin-margined, e.g. BTCUSD), ``n`` contracts of ``c`` quote each::

    notional N = n·c / P        PnL = s·n·c·(1/E − 1/P)      (both in coin)

and for both: margin balance ``MB = M + PnL``, maintenance margin
``MM = N·mmr − cum + N·close_fee_rate`` with ``(mmr, cum)`` from the bracket
that contains ``N``. A position is liquidatable when ``MB ≤ MM``.

Bracket membership: a bracket covers ``floor < N ≤ notional_cap``, so a
notional exactly at a cap belongs to the *lower* bracket (the first bracket
also covers ``N = 0``). Every function here uses :meth:`Contract.bracket_for`
or the same rule.

Trigger prices solve ``a·MB(P) = b·MM(P)`` in closed form, bracket by bracket:
``(a, b) = (1, 1)`` is the liquidation price, ``(ratio, 1)`` the price where
``MM/MB = ratio`` and ``(1, 0)`` the bankruptcy price. The configuration
guarantees (see :func:`check_brackets`) that ``MM`` is continuous across caps
and that ``a·MB − b·MM`` is strictly monotonic in ``P``, so each threshold is
unique: a long's status worsens only as the price falls, a short's only as it
rises. That is what lets a sorted set of trigger prices replace a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    getcontext,
    localcontext,
    setcontext,
)
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.core.venues.base import VenueModel

ZERO = Decimal(0)
ONE = Decimal(1)
INFINITY = Decimal("Infinity")

# Solving runs at extra precision so that the bracket test of a root that lies
# exactly on a cap is not decided by rounding noise; results are rounded to
# the 28 significant digits of the default context before they leave.
# The per-position paths (assess, _threshold) make these contexts current with
# setcontext and restore the caller's after, rather than entering a
# localcontext copy: a third of the cost, and nothing reads their flags.
_SOLVE = Context(
    prec=50, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
_RESULT = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])
_BRACKET_TOLERANCE = Decimal("1e-40")


class Side(StrEnum):
    """Direction of a position."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for a long, -1 for a short."""
        return 1 if self is Side.LONG else -1


class ContractKind(StrEnum):
    """How a contract's notional and PnL are denominated."""

    LINEAR = "linear"
    INVERSE = "inverse"


# Enum members as plain names: the per-position paths test them often.
_LINEAR = ContractKind.LINEAR
_SIGN = {Side.LONG: 1, Side.SHORT: -1}


@dataclass(frozen=True, slots=True)
class Bracket:
    """One maintenance-margin tier; ``notional_cap`` None means no upper bound."""

    notional_cap: Decimal | None
    mmr: Decimal
    cum: Decimal


@dataclass(frozen=True, slots=True)
class Contract:
    """A symbol's contract terms: kind, tier table, and fees reserved at close."""

    symbol: str
    kind: ContractKind
    brackets: tuple[Bracket, ...]
    contract_size: Decimal = ONE
    close_fee_rate: Decimal = ZERO
    model: VenueModel | None = field(default=None, repr=False)
    """The venue model that judges this contract; None: Binance's, which is this module.

    Callers ask :func:`monitor.core.models.model_for`, never this field or this
    module's functions, so that one place decides which model applies.
    """
    _solver: _Solver | None = field(default=None, init=False, repr=False, compare=False)
    """The brackets prepared for solving, made on first use (see :func:`_threshold`)."""
    _binance: VenueModel | None = field(default=None, init=False, repr=False, compare=False)
    """This module as a :class:`VenueModel`, made on first use (see ``model_for``)."""

    def bracket_for(self, notional: Decimal) -> Bracket:
        """The bracket containing ``notional`` (a notional at a cap is in the lower one).

        Beyond the last finite cap (a size the venue would not allow) the last
        bracket's rates still apply: the monitor must judge every position it
        holds, and the highest tier is the conservative choice.
        """
        for bracket in self.brackets:
            if bracket.notional_cap is None or notional <= bracket.notional_cap:
                return bracket
        return self.brackets[-1]


@dataclass(frozen=True, slots=True)
class Position:
    """The fields of a position that its margin depends on.

    ``qty`` is in base units for a linear contract and in contracts for an
    inverse one; ``margin`` is in the settlement currency (quote for linear,
    coin for inverse).
    """

    side: Side
    qty: Decimal
    entry_price: Decimal
    margin: Decimal


class Holding(Protocol):
    """What the margin math reads from a position (:class:`Position` or a stored record)."""

    @property
    def side(self) -> Side: ...

    @property
    def qty(self) -> Decimal: ...

    @property
    def entry_price(self) -> Decimal: ...

    @property
    def margin(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class MarginState:
    """A position's margin at one mark price. ``margin_ratio`` is Infinity when MB ≤ 0."""

    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    maintenance_margin: Decimal
    margin_ratio: Decimal

    @property
    def liquidatable(self) -> bool:
        """True when the margin balance has fallen to the maintenance margin."""
        return self.margin_balance <= self.maintenance_margin

    def ratio_reached(self, ratio: Decimal) -> bool:
        """``margin_ratio ≥ ratio``, on the 28-digit ratio."""
        return self.margin_ratio >= ratio


def notional(contract: Contract, position: Holding, mark: Decimal) -> Decimal:
    """Position value at ``mark``: quote units (linear) or coin (inverse)."""
    with localcontext(_RESULT):
        return _notional_at(contract, position, mark)


def unrealized_pnl(contract: Contract, position: Holding, mark: Decimal) -> Decimal:
    """Unrealized PnL at ``mark`` in the settlement currency."""
    with localcontext(_RESULT):
        return _pnl_at(contract, position, mark)


def maintenance_margin(contract: Contract, notional_value: Decimal) -> Decimal:
    """Maintenance margin for a notional, with the closing fee if the venue reserves it."""
    with localcontext(_RESULT):
        return _maintenance_at(contract, notional_value)


def _at(contract: Contract, position: Holding, mark: Decimal) -> tuple[Decimal, ...]:
    """Notional, PnL, MM, MB and ``MM / MB`` (Infinity when ``MB ≤ 0``) at ``mark``, in
    the context every margin decision is made in."""
    outer = getcontext()
    setcontext(_RESULT)
    try:
        value = _notional_at(contract, position, mark)
        pnl = _pnl_at(contract, position, mark)
        mm = _maintenance_at(contract, value)
        balance = position.margin + pnl
        return value, pnl, mm, balance, mm / balance if balance > 0 else INFINITY
    finally:
        setcontext(outer)


def assess(contract: Contract, position: Holding, mark: Decimal) -> MarginState:
    """Everything about a position's margin at one mark price."""
    value, pnl, mm, balance, ratio = _at(contract, position, mark)
    return MarginState(
        mark_price=mark,
        notional=value,
        unrealized_pnl=pnl,
        margin_balance=balance,
        maintenance_margin=mm,
        margin_ratio=ratio,
    )


def short_of(contract: Contract, position: Holding, mark: Decimal, ratio: Decimal) -> bool:
    """True when the :func:`assess` state at ``mark`` is neither liquidatable nor at
    ``ratio`` (``not state.liquidatable and not state.ratio_reached(ratio)``), from the
    same figures, without the state built around them (a healthy position judged at a
    mark far from its triggers, as every version a load brings, asks only this)."""
    _, _, mm, balance, margin_ratio = _at(contract, position, mark)
    return balance > mm and margin_ratio < ratio


def liquidation_price(contract: Contract, position: Holding) -> Decimal | None:
    """The mark price at which MB = MM, or None if no positive price reaches it."""
    return _threshold(contract, position, a=ONE, b=ONE)


def ratio_price(contract: Contract, position: Holding, ratio: Decimal) -> Decimal | None:
    """The mark price at which MM/MB = ``ratio`` (the margin-call or clearing price)."""
    return _threshold(contract, position, a=ratio, b=ONE)


def bankruptcy_price(contract: Contract, position: Holding) -> Decimal | None:
    """The mark price at which MB = 0, or None if no positive price reaches it."""
    return _threshold(contract, position, a=ONE, b=ZERO)


# Everything below runs in the context its caller entered (_RESULT for a state,
# _SOLVE for a threshold), so that one position costs one context switch.


def _notional_at(contract: Contract, position: Holding, price: Decimal) -> Decimal:
    """The notional at ``price`` in the current context."""
    if contract.kind is _LINEAR:
        return position.qty * price
    return position.qty * contract.contract_size / price


def _pnl_at(contract: Contract, position: Holding, mark: Decimal) -> Decimal:
    """The unrealized PnL at ``mark`` in the current context."""
    sign = _SIGN[position.side]
    if contract.kind is _LINEAR:
        return sign * position.qty * (mark - position.entry_price)
    face = position.qty * contract.contract_size
    return sign * face * (ONE / position.entry_price - ONE / mark)


def _maintenance_at(contract: Contract, notional_value: Decimal) -> Decimal:
    """The maintenance margin of a notional in the current context."""
    bracket = contract.bracket_for(notional_value)
    return notional_value * bracket.mmr - bracket.cum + notional_value * contract.close_fee_rate


@dataclass(frozen=True, slots=True)
class _Tier:
    """A bracket as the solver meets it, with its bounds widened by the tolerance.

    ``floor_low`` is None for a floor of 0 (the first bracket: any positive
    notional is above it), ``cap_high`` None for an open cap.
    """

    cap: Decimal | None
    floor_low: Decimal | None
    cap_high: Decimal | None
    cum: Decimal
    rate: Decimal
    """``mmr + close_fee_rate``."""


class _Solver:
    """A contract's brackets prepared for :func:`_threshold`, computed once per contract.

    Every value here is what the solving loop would otherwise compute again
    for each position and bracket, by the same operations in the same
    context, so the roots are the same to the last digit.
    """

    __slots__ = ("_coefficients", "linear", "tiers")

    def __init__(self, contract: Contract) -> None:
        self.linear = contract.kind is _LINEAR
        tiers = []
        floor = ZERO
        with localcontext(_SOLVE):
            low, high = ONE - _BRACKET_TOLERANCE, ONE + _BRACKET_TOLERANCE
            for bracket in contract.brackets:
                cap = bracket.notional_cap
                tiers.append(
                    _Tier(
                        cap=cap,
                        floor_low=None if floor == 0 else floor * low,
                        cap_high=None if cap is None else cap * high,
                        cum=bracket.cum,
                        rate=bracket.mmr + contract.close_fee_rate,
                    )
                )
                if cap is not None:
                    floor = cap
        self.tiers = tuple(tiers)
        self._coefficients: dict[tuple[int, int, int], tuple[Decimal, Decimal, _Coefficients]] = {}

    def coefficients(self, a: Decimal, b: Decimal, sign: int) -> _Coefficients:
        """``(a·s, ((tier_k, slope_k, b·cum_k) for each bracket k))`` for ``a·MB = b·MM``.

        The slope is ``a·s − b·rate`` (linear) or ``a·s + b·rate`` (inverse).
        Kept per Decimal *object*: equal ratios spelt differently ("0.8",
        "0.80") lead to roots spelt differently, so they must not share.
        """
        key = (id(a), id(b), sign)
        found = self._coefficients.get(key)
        if found is not None and found[0] is a and found[1] is b:
            return found[2]
        with localcontext(_SOLVE):
            a_s = a * sign
            if self.linear:
                slopes = [a_s - b * tier.rate for tier in self.tiers]
            else:
                slopes = [a_s + b * tier.rate for tier in self.tiers]
            steps = tuple(
                (tier, slope, b * tier.cum) for tier, slope in zip(self.tiers, slopes, strict=True)
            )
        if len(self._coefficients) < _MAX_COEFFICIENT_SETS:
            # Holding a and b keeps their ids from being reused by other objects.
            self._coefficients[key] = (a, b, (a_s, steps))
        return a_s, steps


_Coefficients = tuple[Decimal, tuple[tuple[_Tier, Decimal, Decimal], ...]]
_MAX_COEFFICIENT_SETS = 64
"""Ratio objects per contract kept prepared (the configuration's need six)."""


def _solver(contract: Contract) -> _Solver:
    solver = contract._solver
    if solver is None:
        solver = _Solver(contract)
        object.__setattr__(contract, "_solver", solver)
    return solver


def _threshold(contract: Contract, position: Holding, a: Decimal, b: Decimal) -> Decimal | None:
    """Solve ``a·MB(P) = b·MM(P)`` for P, keeping the root that lies in its own bracket.

    Bracket by bracket, the root of ``a·MB − b·MM`` as if that bracket's
    ``(mmr, cum)`` applied everywhere (closed form, below); the
    first root whose notional lies in its own bracket (within a relative
    tolerance of 1e-40) is the threshold. For the bankruptcy price (``b = 0``)
    the brackets do not matter and the first root decides.

    When the last cap is finite and the root lies beyond it on the side where the
    position is *better* off, every covered price is already past the threshold;
    the root of the last bracket, extended past its cap, is returned so that the
    position still reads as crossed at every covered price (None would say it
    never is). A root beyond the cap on the worse side stays None: no covered
    price reaches it.
    """
    solver = _solver(contract)
    if not solver.tiers:
        return None
    sign = _SIGN[position.side]
    a_s, steps = solver.coefficients(a, b, sign)
    linear = solver.linear
    qty = position.qty
    root: Decimal | None = None
    outer = getcontext()
    setcontext(_SOLVE)
    try:
        # linear:  root_k = (a·s·q·E − a·M − b·cum_k) / (q·slope_k)
        # inverse: root_k = face·slope_k / (a·M + a·s·face/E + b·cum_k)
        # The terms without k are computed once (for linear, as the reference
        # order of operations first needs them: after a non-zero denominator).
        linear_offset: Decimal | None = None
        face = inverse_offset = ZERO
        if not linear:
            face = qty * contract.contract_size
            inverse_offset = a * position.margin + a_s * face / position.entry_price
        for tier, slope, b_cum in steps:
            if linear:
                denominator = qty * slope
                if denominator == 0:
                    root = None
                else:
                    if linear_offset is None:
                        linear_offset = a_s * qty * position.entry_price - a * position.margin
                    root = (linear_offset - b_cum) / denominator
            else:
                denominator = inverse_offset + b_cum
                numerator = face * slope
                root = None
                if denominator != 0:
                    root = numerator / denominator
                    if root <= 0:
                        root = None
            if root is not None and b == 0:
                return None if root <= 0 else _RESULT.plus(root)
            if root is not None and root > 0:
                value = qty * root if linear else face / root
                if (tier.floor_low is None or value > tier.floor_low) and (
                    tier.cap_high is None or value <= tier.cap_high
                ):
                    return _RESULT.plus(root)
        # ``root`` is now the last bracket's. Moving to the worse side lowers the
        # notional for a linear long (price falls) and an inverse short (price
        # rises): the covered range then lies on the worse side of any root
        # beyond the last cap.
        last_cap = solver.tiers[-1].cap
        if last_cap is not None and linear == (sign == 1) and root is not None and root > 0:
            value = qty * root if linear else face / root
            if value > last_cap:
                return _RESULT.plus(root)
    finally:
        setcontext(outer)
    return None


def check_brackets(
    brackets: Sequence[Bracket], close_fee_rate: Decimal, lowest_ratio: Decimal
) -> list[str]:
    """Problems that would make thresholds ambiguous, as human-readable strings.

    Caps must rise strictly and only the last may be open; ``cum`` must keep
    the maintenance margin continuous at every cap (as the venues' tables do:
    ``cum_k = cum_{k-1} + cap_{k-1}·(mmr_k − mmr_{k-1})``), and every bracket's
    ``mmr + close_fee_rate`` must stay below 1 and below ``lowest_ratio`` (the
    margin-call clearing ratio) so that each threshold price is unique.
    """
    problems: list[str] = []
    if not brackets:
        return ["at least one bracket is required"]
    previous: Bracket | None = None
    for index, bracket in enumerate(brackets):
        where = f"brackets[{index}]"
        if bracket.mmr <= 0:
            problems.append(f"{where}.mmr must be positive, got {bracket.mmr}")
        if bracket.cum < 0:
            problems.append(f"{where}.cum must not be negative, got {bracket.cum}")
        if bracket.mmr + close_fee_rate >= min(ONE, lowest_ratio):
            problems.append(
                f"{where}.mmr + close_fee_rate ({bracket.mmr + close_fee_rate}) must be below "
                f"margin_call_clear_ratio ({lowest_ratio}) and 1"
            )
        if bracket.notional_cap is None and index != len(brackets) - 1:
            problems.append(f"{where}.notional_cap may be omitted only on the last bracket")
        if previous is not None and previous.notional_cap is not None:
            if bracket.notional_cap is not None and bracket.notional_cap <= previous.notional_cap:
                problems.append(f"{where}.notional_cap must exceed the previous cap")
            expected = previous.cum + previous.notional_cap * (bracket.mmr - previous.mmr)
            if bracket.cum != expected:
                problems.append(
                    f"{where}.cum must be {expected} to keep the maintenance margin "
                    f"continuous at notional {previous.notional_cap}, got {bracket.cum}"
                )
        elif previous is None and bracket.cum != 0:
            problems.append(f"{where}.cum must be 0 for the first bracket, got {bracket.cum}")
        previous = bracket
    return problems
