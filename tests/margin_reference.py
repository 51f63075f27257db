"""The margin math as it was before the solver was prepared per contract: the oracle.

:mod:`monitor.core.margin` now keeps each contract's per-bracket constants and
hoists per-position terms out of the bracket loop, and evaluates a state in one
context switch. This module is the previous implementation, verbatim, so that
``test_margin_reference.py`` can show the two agree digit for digit.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from monitor.core.margin import (
    _BRACKET_TOLERANCE,
    _RESULT,
    _SOLVE,
    INFINITY,
    ONE,
    ZERO,
    Bracket,
    Contract,
    ContractKind,
    MarginState,
    Position,
    Side,
)


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
