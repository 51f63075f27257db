"""Gate USDT-M (linear) and BTC-M (inverse) perpetuals, isolated margin.

Gate's published estimate (Gate support's reply on the liquidation price, Gate
Square post 3870211 of 2023-07-02, read at gatenode.pro/post/status/3870211)::

    linear:  LP = (E ∓ M / multiplier / size) / (1 ∓ (mmr + taker fee))   (− long, + short)
    inverse: LP = size·E·(1 ± mmr ± taker fee) / (size ± M·E)           (+ long, − short)

Both are the roots of ``M + PnL(P) = N(P)·(mmr + taker fee)`` with the
notional at the mark. Since the risk-limit upgrade of July 2025 Gate picks the
tier from the position value and subtracts a ``deduction`` (its
``risk_limit_tiers``: ``risk_limit``, ``maintenance_rate``, ``deduction``), so
the maintenance margin is ``N·maintenance_rate − deduction + N·taker_fee``:
Binance's algebra, solved by :mod:`monitor.core.margin` and settled exactly.

Units: ``qty`` is the size in contracts; ``multiplier`` is the contract's
``quanto_multiplier`` (base units per contract, linear) or its face value in
quote (inverse); ``margin`` is the position's margin as Gate shows it
(initial margin plus any margin added), in the settlement currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from monitor.core.margin import Bracket, ContractKind
from monitor.core.venues.base import RESULT, ZERO, RatioDirection
from monitor.core.venues.tiered import MarkTieredModel, build_contract


@dataclass(frozen=True, slots=True)
class GateTier:
    """One row of Gate's ``risk_limit_tiers``: ``risk_limit`` is the tier's top position value."""

    risk_limit: Decimal
    maintenance_rate: Decimal
    deduction: Decimal = ZERO


class GateModel(MarkTieredModel):
    """Gate isolated margin: tiers by mark value, deduction, taker fee on the mark notional."""

    venue = "gate"
    ratio_direction = RatioDirection.RISES

    def __init__(
        self,
        symbol: str,
        kind: ContractKind,
        tiers: Sequence[GateTier],
        multiplier: Decimal,
        taker_fee_rate: Decimal,
    ) -> None:
        self.kind = kind
        self.multiplier = multiplier
        self.tiers = tuple(tiers)
        brackets = [Bracket(t.risk_limit, t.maintenance_rate, t.deduction) for t in self.tiers]
        self.contract = build_contract(symbol, kind, brackets, multiplier, taker_fee_rate)

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """Position value at entry over leverage (``size × multiplier × E / L``, or ``/ E / L``)."""
        with localcontext(RESULT):
            exposure = size * self.multiplier
            if self.kind is ContractKind.LINEAR:
                return exposure * entry_price / leverage
            return exposure / entry_price / leverage
