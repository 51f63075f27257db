"""Bybit (v5, Unified Trading Account) USDT/USDC linear and inverse contracts, isolated margin.

Bybit publishes (help centre "Liquidation Price (USDT Contract)" and
"Liquidation Price Calculation under Isolated Mode (Unified Trading
Account)")::

    linear long:   LP = E − (IM − MM) / size − extra margin / size
    linear short:  LP = E + (IM − MM) / size + extra margin / size
    inverse long:  LP = Qty / (PV + (IM − MM))
    inverse short: LP = Qty / (PV − (IM − MM))

with ``PV`` the position value *at entry* (``size × E``, or ``Qty / E``),
``IM = PV / leverage`` and ``MM = PV × MMR − mmDeduction``, the rate and
deduction from the risk-limit tier. Both are the roots of
``M + PnL(P) = MM`` with ``M = IM + extra margin`` and MM a constant of the
position: it does not move with the mark. The estimated fee to close is added
by Bybit to both IM and MM and cancels out of ``IM − MM`` (the pages' note on
"minor differences" from fees), so the model leaves it out of both.

Tier: the first risk-limit row whose ``riskLimitValue`` is at least the
position value at entry (the last row beyond). As the value is fixed for the
position, so is MM; ``M + PnL(P)`` moves one way with the price, hence one root.

The same article as revised in 2026 (its copy at kbybit.com, "Last updated on
2026-05-27") values inverse positions at the mark instead: ``Position Value =
Contract Quantity ÷ Mark Price`` and::

    inverse long:  LP = Size·(MMR + 1) / (Size/E + Size/E/Leverage + extra/(1 + fee) + MMded)
    inverse short: LP = Size·(1 − MMR) / (Size/E − Size/E/Leverage − extra/(1 − fee) − MMded)

the roots of ``M + PnL(P) = Size/P·MMR − MMded``. ``inverse_value_at_mark=True``
selects that reading (the tier still by the entry value, so the rate is a
constant of the position and the root unique for ``MMR < 1``); the extra-margin
fee factor is not modelled, so pass extra margin already divided by it.

MM is never below zero. The formula's deduction, applied to a value below its
tier's (a short's value at the mark once the price has risen far, or a table
whose first row already deducts), would make it negative and put the
liquidation price past bankruptcy; MM is taken as ``max(0, PV × MMR −
mmDeduction)``, so such a position liquidates where its margin balance reaches
zero. The condition still changes side once (MM, clamped, moves with the price
more slowly than the margin balance).

Units: ``qty`` is the size in base units (linear) or the contract quantity in
USD (inverse, ``contract_size`` USD each); ``margin`` is the position margin
Bybit holds for it (its initial margin plus any extra margin added), without
the reserved fee to close.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import pairwise

from monitor.core.margin import ContractKind, Holding
from monitor.core.venues.base import (
    ONE,
    RESULT,
    ZERO,
    ExactModel,
    RatioDirection,
    Terms,
    check_rates,
)


@dataclass(frozen=True, slots=True)
class BybitRiskLimit:
    """One row of Bybit's ``/v5/market/risk-limit``.

    Its ``riskLimitValue``, ``maintenanceMargin`` (as a fraction: 0.005 for
    0.5 %) and ``mmDeduction``.
    """

    risk_limit_value: Decimal
    maintenance_margin_rate: Decimal
    mm_deduction: Decimal = ZERO


class BybitModel(ExactModel):
    """Bybit isolated margin: maintenance margin on the entry value, tier by entry value."""

    venue = "bybit"
    ratio_direction = RatioDirection.RISES

    def __init__(
        self,
        symbol: str,
        kind: ContractKind,
        risk_limits: Sequence[BybitRiskLimit],
        contract_size: Decimal = ONE,
        inverse_value_at_mark: bool = False,
    ) -> None:
        if not risk_limits:
            raise ValueError("at least one risk limit is required")
        check_rates([r.maintenance_margin_rate for r in risk_limits], "risk_limits.mmr")
        for index, (low, high) in enumerate(pairwise(risk_limits)):
            if high.risk_limit_value <= low.risk_limit_value:
                raise ValueError(f"risk_limits[{index + 1}].risk_limit_value must rise")
        for index, row in enumerate(risk_limits):
            if row.mm_deduction < 0:
                raise ValueError(f"risk_limits[{index}].mm_deduction must not be negative")
        self.symbol = symbol
        self.kind = kind
        self.multiplier = contract_size
        self.risk_limits = tuple(risk_limits)
        self.value_at_mark = inverse_value_at_mark and kind is ContractKind.INVERSE

    def risk_limit_for(self, position: Holding) -> BybitRiskLimit:
        """The row covering the position value at entry (compared without division)."""
        x, entry = self.exposure(position), position.entry_price
        for row in self.risk_limits:
            cap = row.risk_limit_value
            within = x * entry <= cap if self.kind is ContractKind.LINEAR else x <= cap * entry
            if within:
                return row
        return self.risk_limits[-1]

    def terms_at(self, position: Holding, price: Decimal) -> Terms:
        """``MM = PV × MMR − mmDeduction``, PV at entry (or at the mark, if so configured)."""
        row = self.risk_limit_for(position)
        if self.value_at_mark:
            return Terms(rate=row.maintenance_margin_rate, entry_rate=ZERO, fixed=-row.mm_deduction)
        return Terms(rate=ZERO, entry_rate=row.maintenance_margin_rate, fixed=-row.mm_deduction)

    def _maintenance(self, position: Holding, mark: Decimal) -> Decimal:
        return max(super()._maintenance(position, mark), ZERO)

    def _sides(self, position: Holding, price: Decimal) -> tuple[Decimal, Decimal]:
        balance, maintenance = super()._sides(position, price)
        return balance, max(maintenance, ZERO)

    def _raw_threshold(self, position: Holding, a: Decimal, b: Decimal) -> Decimal | None:
        root = super()._raw_threshold(position, a, b)
        if root is not None and root > 0 and super()._sides(position, root)[1] < 0:
            # Past the price where MM reaches zero the condition is MB ≤ 0: bankruptcy.
            return super()._raw_threshold(position, ONE, ZERO)
        return root

    def highest_rate(self, position: Holding) -> Decimal:
        """The MMR when PV follows the mark; zero otherwise (MM is then a constant)."""
        return self.terms_at(position, position.entry_price).rate

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """``IM = PV / leverage`` with the position value at entry."""
        with localcontext(RESULT):
            exposure = size * self.multiplier
            if self.kind is ContractKind.LINEAR:
                return exposure * entry_price / leverage
            return exposure / entry_price / leverage
