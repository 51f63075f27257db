"""OKX perpetual and expiry swaps (USDT-margined linear, coin-margined inverse), isolated margin.

OKX's isolated margin ratio (the formula the issue quotes; OKX's "Tiered
maintenance margin ratio rules": liquidation when the margin ratio falls to
100 %, i.e. equity at or below maintenance margin plus fees)::

    margin ratio = (margin + uPnL) / (ctVal × |contracts| × mark × (mmr + taker fee))   linear
    margin ratio = (margin + uPnL) / (ctVal × |contracts| / mark × (mmr + taker fee))   inverse

with uPnL ``ctVal·n·(P − E)`` (linear, in quote) or ``ctVal·n·(1/E − 1/P)``
(inverse, in coin), signed by side. The venue ratio falls toward 100 %; liqmon's
``MM / MB`` is its reciprocal.

Tiers are by position size in contracts (``/api/v5/public/position-tiers``:
``minSz``, ``maxSz``, ``mmr``), with no deduction, so MM jumps where one tier
meets the next. That jump is in the *size*, not the price: a position's size
does not change with the mark, so its tier, and ``mmr``, are constants of the
position, and ``MB − MM`` is ``M + PnL(P) − r·N(P)`` with one ``r``, strictly
monotonic in P for ``r < 1``: one root. A tier covers ``minSz ≤ n ≤ maxSz``;
the model takes the first tier whose ``maxSz`` is at least ``n`` (so a
fractional size between two integer tiers goes up), the last tier beyond.

Units: ``qty`` is the number of contracts; ``contract_value`` is ``ctVal``
(base units per contract, linear; USD per contract, inverse); ``margin`` is
the position's ``margin`` (isolated margin, added or reduced), in the
settlement currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from monitor.core.margin import ContractKind, Holding
from monitor.core.venues.base import (
    RESULT,
    ZERO,
    ExactModel,
    RatioDirection,
    Terms,
    check_rates,
)


@dataclass(frozen=True, slots=True)
class OkxTier:
    """One row of OKX's position tiers: sizes in contracts, ``mmr`` a fraction."""

    min_size: Decimal
    max_size: Decimal
    mmr: Decimal


class OkxModel(ExactModel):
    """OKX isolated margin: tier by size in contracts, MM and taker fee on the mark value."""

    venue = "okx"
    ratio_direction = RatioDirection.FALLS

    def __init__(
        self,
        inst_id: str,
        kind: ContractKind,
        tiers: Sequence[OkxTier],
        contract_value: Decimal,
        taker_fee_rate: Decimal,
    ) -> None:
        if not tiers:
            raise ValueError("at least one tier is required")
        check_rates([t.mmr + taker_fee_rate for t in tiers], "tiers.mmr + taker_fee_rate")
        for index, tier in enumerate(tiers):
            if tier.min_size > tier.max_size:
                raise ValueError(f"tiers[{index}].min_size must not exceed max_size")
            if index and tier.max_size <= tiers[index - 1].max_size:
                raise ValueError(f"tiers[{index}].max_size must exceed the previous one")
        self.inst_id = inst_id
        self.kind = kind
        self.multiplier = contract_value
        self.taker_fee_rate = taker_fee_rate
        self.tiers = tuple(tiers)

    def tier_for(self, contracts: Decimal) -> OkxTier:
        """The tier of a position of ``contracts``: the first whose ``maxSz`` covers it."""
        for tier in self.tiers:
            if contracts <= tier.max_size:
                return tier
        return self.tiers[-1]

    def terms_at(self, position: Holding, price: Decimal) -> Terms:
        """``MM = N(P) × (mmr + taker fee)`` with the tier of the position's size."""
        rate = self.tier_for(position.qty).mmr + self.taker_fee_rate
        return Terms(rate=rate, entry_rate=ZERO, fixed=ZERO)

    def highest_rate(self, position: Holding) -> Decimal:
        """The position's own ``mmr + taker fee`` (its tier never changes with the price)."""
        return self.tier_for(position.qty).mmr + self.taker_fee_rate

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """``ctVal × n × E / L`` (linear) or ``ctVal × n / E / L`` (inverse)."""
        with localcontext(RESULT):
            exposure = size * self.multiplier
            if self.kind is ContractKind.LINEAR:
                return exposure * entry_price / leverage
            return exposure / entry_price / leverage
