"""An independent judge for the venue models: each venue's condition in exact fractions.

Nothing here calls a model's arithmetic: the margin balance and maintenance
margin are written again from the published formulas in
:class:`fractions.Fraction`, so a threshold a model returns can be checked
against the venue's condition with no rounding at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from fractions import Fraction

from monitor.core.margin import ContractKind, Holding, Side
from monitor.core.venues import (
    BybitRiskLimit,
    GateTier,
    HyperliquidTier,
    OkxTier,
)
from monitor.core.venues.hyperliquid import maintenance_rate

Condition = Callable[[Holding, Decimal, Decimal, Decimal], bool]
"""``(position, price, a, b) -> a·MB(P) ≤ b·MM(P)``, exactly."""

DIGITS = Context(prec=28)


def balance(kind: ContractKind, x: Fraction, position: Holding, price: Decimal) -> Fraction:
    """``M + PnL(P)`` for exposure ``x`` (base units, or quote face for inverse)."""
    s = 1 if position.side is Side.LONG else -1
    entry, mark = Fraction(position.entry_price), Fraction(price)
    if kind is ContractKind.LINEAR:
        return Fraction(position.margin) + s * x * (mark - entry)
    return Fraction(position.margin) + s * x * (1 / entry - 1 / mark)


def value(kind: ContractKind, x: Fraction, price: Decimal | Fraction) -> Fraction:
    """The notional at ``price``."""
    p = Fraction(price)
    return x * p if kind is ContractKind.LINEAR else x / p


def bybit(
    kind: ContractKind,
    rows: Sequence[BybitRiskLimit],
    multiplier: Decimal,
    at_mark: bool = False,
) -> Condition:
    """Bybit: ``MM = max(0, PV·MMR − mmDeduction)``, PV at entry (or at the mark), row by entry
    value."""

    def crossed(position: Holding, price: Decimal, a: Decimal, b: Decimal) -> bool:
        x = Fraction(position.qty) * Fraction(multiplier)
        entry_value = value(kind, x, position.entry_price)
        row = next((r for r in rows if entry_value <= Fraction(r.risk_limit_value)), rows[-1])
        valued = value(kind, x, price) if at_mark else entry_value
        mm = max(valued * Fraction(row.maintenance_margin_rate) - Fraction(row.mm_deduction), 0)
        return Fraction(a) * balance(kind, x, position, price) <= Fraction(b) * mm

    return crossed


def okx(kind: ContractKind, tiers: Sequence[OkxTier], ct_val: Decimal, fee: Decimal) -> Condition:
    """OKX: ``MM = N(P)·(mmr + fee)``, the tier by size in contracts."""

    def crossed(position: Holding, price: Decimal, a: Decimal, b: Decimal) -> bool:
        x = Fraction(position.qty) * Fraction(ct_val)
        tier = next((t for t in tiers if position.qty <= t.max_size), tiers[-1])
        mm = value(kind, x, price) * (Fraction(tier.mmr) + Fraction(fee))
        return Fraction(a) * balance(kind, x, position, price) <= Fraction(b) * mm

    return crossed


def gate(
    kind: ContractKind, tiers: Sequence[GateTier], multiplier: Decimal, fee: Decimal
) -> Condition:
    """Gate: ``MM = N(P)·(rate + fee) − deduction``, the tier by the value at the mark."""

    def crossed(position: Holding, price: Decimal, a: Decimal, b: Decimal) -> bool:
        x = Fraction(position.qty) * Fraction(multiplier)
        n = value(kind, x, price)
        tier = next((t for t in tiers if n <= Fraction(t.risk_limit)), tiers[-1])
        mm = n * (Fraction(tier.maintenance_rate) + Fraction(fee)) - Fraction(tier.deduction)
        return Fraction(a) * balance(kind, x, position, price) <= Fraction(b) * mm

    return crossed


def hyperliquid(tiers: Sequence[HyperliquidTier]) -> Condition:
    """Hyperliquid: ``MM = N·rate − deduction``, deductions summed from the lower bounds."""
    rates = [Fraction(maintenance_rate(t.max_leverage)) for t in tiers]
    deductions = [Fraction(0)]
    for index in range(1, len(tiers)):
        step = Fraction(tiers[index].lower_bound) * (rates[index] - rates[index - 1])
        deductions.append(deductions[-1] + step)

    def crossed(position: Holding, price: Decimal, a: Decimal, b: Decimal) -> bool:
        x = Fraction(position.qty)
        n = value(ContractKind.LINEAR, x, price)
        index = 0
        for k, tier in enumerate(tiers):
            if n > Fraction(tier.lower_bound) or k == 0:
                index = k
        mm = n * rates[index] - deductions[index]
        return Fraction(a) * balance(ContractKind.LINEAR, x, position, price) <= Fraction(b) * mm

    return crossed


def winning_neighbour(side: Side, price: Decimal) -> Decimal:
    """The next 28-digit price on the side where the position is better off."""
    return DIGITS.next_plus(price) if side is Side.LONG else DIGITS.next_minus(price)


def step(side: Side, price: Decimal, factor: str, worse: bool) -> Decimal:
    """``price`` moved by a relative ``factor`` toward the losing or the winning side."""
    down = (side is Side.LONG) == worse
    return price * (1 - Decimal(factor)) if down else price * (1 + Decimal(factor))
