"""Hyperliquid perpetuals (USDC-margined, linear), isolated margin.

From Hyperliquid's docs (Trading › Liquidations and Trading › Margin tiers):
the maintenance margin is half the initial margin at the asset's maximum
leverage, and with margin tiers::

    maintenance_margin = notional · maintenance_margin_rate − maintenance_deduction
    maintenance_margin_rate(tier n) = 1 / (2 · max_leverage(tier n))
    maintenance_deduction(0) = 0
    maintenance_deduction(n) = maintenance_deduction(n − 1)
        + lower_bound(n) · (rate(n) − rate(n − 1))

so MM is continuous in the notional at the mark. An isolated position is
liquidated when its margin plus unrealized PnL falls below that. The
single-tier liquidation price Hyperliquid's engine shows, as printed by HyENA's
docs (a HIP-3 DEX on it: docs.hyena.trade/trading/liquidation), ``liq = E −
side · margin_available / size / (1 − l · side)`` with ``l = 1 / maintenance
leverage``, is the root of the same equation with ``margin_available = M −
size·E·l``. No closing fee is reserved.

The tiers come from the ``meta`` info response (``marginTables``:
``lowerBound``, ``maxLeverage``). Units: ``qty`` is the size in coins,
``margin`` the USDC the isolated position holds, without its unrealized PnL.
The rate ``1 / (2·L)`` is kept to 28 significant digits where it does not
terminate (3x: 0.1666…7); deductions are derived from those digits without
rounding, so MM stays exactly continuous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from monitor.core.margin import Bracket, ContractKind
from monitor.core.venues.base import EXACT, ONE, RESULT, ZERO, RatioDirection
from monitor.core.venues.tiered import MarkTieredModel, build_contract


@dataclass(frozen=True, slots=True)
class HyperliquidTier:
    """One margin tier: from ``lower_bound`` of notional, at most ``max_leverage``."""

    lower_bound: Decimal
    max_leverage: int


def maintenance_rate(max_leverage: int) -> Decimal:
    """Half the initial margin rate at ``max_leverage``: ``1 / (2·L)``, to 28 digits."""
    if max_leverage < 1:
        raise ValueError(f"max_leverage must be at least 1, got {max_leverage}")
    with localcontext(RESULT):
        return ONE / (2 * Decimal(max_leverage))


def brackets_from_tiers(tiers: Sequence[HyperliquidTier]) -> list[Bracket]:
    """The tiers as brackets: rates, derived deductions, caps at the next lower bound."""
    if not tiers or tiers[0].lower_bound != 0:
        raise ValueError("the first margin tier must start at a notional of 0")
    brackets: list[Bracket] = []
    deduction = ZERO
    previous_rate: Decimal | None = None
    for index, tier in enumerate(tiers):
        rate = maintenance_rate(tier.max_leverage)
        if previous_rate is not None:
            # Exact (no rounding to 28 digits), or MM would jump by the rounding at the bound.
            with localcontext(EXACT):
                deduction = deduction + tier.lower_bound * (rate - previous_rate)
        following = tiers[index + 1].lower_bound if index + 1 < len(tiers) else None
        brackets.append(Bracket(notional_cap=following, mmr=rate, cum=deduction))
        previous_rate = rate
    return brackets


class HyperliquidModel(MarkTieredModel):
    """Hyperliquid isolated margin: tiers by mark notional, MM half the max-leverage IM."""

    venue = "hyperliquid"
    ratio_direction = RatioDirection.RISES
    kind = ContractKind.LINEAR
    multiplier = ONE

    def __init__(self, coin: str, tiers: Sequence[HyperliquidTier]) -> None:
        self.tiers = tuple(tiers)
        self.contract = build_contract(
            coin, ContractKind.LINEAR, brackets_from_tiers(self.tiers), ONE, ZERO
        )

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """``size × price / leverage``, the docs' margin to open, at the entry price."""
        with localcontext(RESULT):
            return size * entry_price / leverage
