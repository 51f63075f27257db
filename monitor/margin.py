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
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum

ZERO = Decimal(0)
ONE = Decimal(1)
INFINITY = Decimal("Infinity")

# Solving runs at extra precision so that the bracket test of a root that lies
# exactly on a cap is not decided by rounding noise; results are rounded to
# the 28 significant digits of the default context before they leave.
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


def notional(contract: Contract, position: Position, mark: Decimal) -> Decimal:
    """Position value at ``mark``: quote units (linear) or coin (inverse)."""
    with localcontext(_RESULT):
        if contract.kind is ContractKind.LINEAR:
            return position.qty * mark
        return position.qty * contract.contract_size / mark


def unrealized_pnl(contract: Contract, position: Position, mark: Decimal) -> Decimal:
    """Unrealized PnL at ``mark`` in the settlement currency."""
    with localcontext(_RESULT):
        if contract.kind is ContractKind.LINEAR:
            return position.side.sign * position.qty * (mark - position.entry_price)
        face = position.qty * contract.contract_size
        return position.side.sign * face * (ONE / position.entry_price - ONE / mark)


def maintenance_margin(contract: Contract, notional_value: Decimal) -> Decimal:
    """Maintenance margin for a notional, with the closing fee if the venue reserves it."""
    bracket = contract.bracket_for(notional_value)
    with localcontext(_RESULT):
        return notional_value * bracket.mmr - bracket.cum + notional_value * contract.close_fee_rate


def assess(contract: Contract, position: Position, mark: Decimal) -> MarginState:
    """Everything about a position's margin at one mark price."""
    value = notional(contract, position, mark)
    pnl = unrealized_pnl(contract, position, mark)
    mm = maintenance_margin(contract, value)
    with localcontext(_RESULT):
        balance = position.margin + pnl
        ratio = mm / balance if balance > 0 else INFINITY
    return MarginState(
        mark_price=mark,
        notional=value,
        unrealized_pnl=pnl,
        margin_balance=balance,
        maintenance_margin=mm,
        margin_ratio=ratio,
    )


def liquidation_price(contract: Contract, position: Position) -> Decimal | None:
    """The mark price at which MB = MM, or None if no positive price reaches it."""
    return _threshold(contract, position, a=ONE, b=ONE)


def ratio_price(contract: Contract, position: Position, ratio: Decimal) -> Decimal | None:
    """The mark price at which MM/MB = ``ratio`` (the margin-call or clearing price)."""
    return _threshold(contract, position, a=ratio, b=ONE)


def bankruptcy_price(contract: Contract, position: Position) -> Decimal | None:
    """The mark price at which MB = 0, or None if no positive price reaches it."""
    return _threshold(contract, position, a=ONE, b=ZERO)


def _threshold(contract: Contract, position: Position, a: Decimal, b: Decimal) -> Decimal | None:
    """Solve ``a·MB(P) = b·MM(P)`` for P, keeping the root that lies in its own bracket.

    When the last cap is finite and the root lies beyond it on the side where the
    position is *better* off, every covered price is already past the threshold;
    the root of the last bracket, extended past its cap, is returned so that the
    position still reads as crossed at every covered price (None would say it
    never is). A root beyond the cap on the worse side stays None: no covered
    price reaches it.
    """
    floor = ZERO
    with localcontext(_SOLVE):
        for bracket in contract.brackets:
            root = _root_in_bracket(contract, position, bracket, a, b)
            if root is not None and b == 0:
                if root <= 0:
                    return None
                with localcontext(_RESULT):
                    return +root
            if root is not None and root > 0:
                value = _notional_at(contract, position, root)
                above_floor = value > floor * (ONE - _BRACKET_TOLERANCE) or floor == 0
                below_cap = bracket.notional_cap is None or value <= bracket.notional_cap * (
                    ONE + _BRACKET_TOLERANCE
                )
                if above_floor and below_cap:
                    with localcontext(_RESULT):
                        return +root
            if bracket.notional_cap is not None:
                floor = bracket.notional_cap
        last = contract.brackets[-1] if contract.brackets else None
        # Moving to the worse side lowers the notional for a linear long (price
        # falls) and an inverse short (price rises): the covered range then lies
        # on the worse side of any root beyond the last cap.
        worse_lowers_notional = (contract.kind is ContractKind.LINEAR) == (
            position.side is Side.LONG
        )
        if last is not None and last.notional_cap is not None and worse_lowers_notional:
            root = _root_in_bracket(contract, position, last, a, b)
            if (
                root is not None
                and root > 0
                and _notional_at(contract, position, root) > last.notional_cap
            ):
                with localcontext(_RESULT):
                    return +root
    return None


def _notional_at(contract: Contract, position: Position, price: Decimal) -> Decimal:
    """The notional at ``price`` in the current (solving) context."""
    if contract.kind is ContractKind.LINEAR:
        return position.qty * price
    return position.qty * contract.contract_size / price


def _root_in_bracket(
    contract: Contract, position: Position, bracket: Bracket, a: Decimal, b: Decimal
) -> Decimal | None:
    """The root of ``a·MB − b·MM`` if ``bracket``'s (mmr, cum) applied everywhere."""
    s = position.side.sign
    rate = bracket.mmr + contract.close_fee_rate
    if contract.kind is ContractKind.LINEAR:
        q, entry = position.qty, position.entry_price
        denominator = q * (a * s - b * rate)
        if denominator == 0:
            return None
        return (a * s * q * entry - a * position.margin - b * bracket.cum) / denominator
    face = position.qty * contract.contract_size
    denominator = a * position.margin + a * s * face / position.entry_price + b * bracket.cum
    numerator = face * (a * s + b * rate)
    if denominator == 0 or numerator / denominator <= 0:
        return None
    return numerator / denominator


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
