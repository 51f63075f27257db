"""Venue-exact isolated-margin models (issue #14): pure, synchronous, Decimal.

Every model answers the :class:`~monitor.core.venues.base.VenueModel`
questions for one contract: maintenance margin at a mark, liqmon's margin
ratio (``MM / MB``, rising to 1 at liquidation), the venue's own ratio,
whether the position is liquidatable, and the liquidation, bankruptcy and
margin-call prices; and ``isolated_margin`` derives the margin a venue sets
aside for a leverage. ``qty`` is always the venue's own size unit and
``margin`` the venue's own isolated-margin figure, per the table below.

Per venue (formulas, sources, inputs)
-------------------------------------

binance (:mod:`.binance`) — USDⓈ-M and COIN-M. ``WB + PnL(P) = N(P)·mmr − cum``
  with the bracket of the notional at the mark, ``cum_n = floor_n·(mmr_n −
  mmr_{n−1}) + cum_{n−1}``. Sources: Binance support FAQ "How to Calculate
  Liquidation Price of USDⓈ-M Futures Contracts" (binance.com support FAQ
  b3c689c1f50a44cabb3a84e663b81d93) and "... of COIN-M Futures Contracts"
  (FAQ ceccfcfb4e3a45e3b48b0b1bb1a8ae46). Margin:
  ``isolatedWallet``. Ratio ``MM / MB``, rises. Tiers: notional at the mark
  (quote, or coin for COIN-M). Solver: :mod:`monitor.core.margin` itself,
  digit for digit.

bybit (:mod:`.bybit`) — linear and inverse. ``LP = E ∓ (IM − MM)/size ∓
  extra/size`` (linear), ``LP = Qty / (PV ± (IM − MM))`` (inverse), ``MM =
  PV·MMR − mmDeduction`` on the position value at entry. Sources: Bybit help
  centre "Liquidation Price (USDT Contract)" and "Liquidation Price
  Calculation under Isolated Mode (Unified Trading Account)". Margin: the
  position margin (IM + extra margin), without the fee to close, which Bybit
  adds to IM and MM alike. Ratio: liqmon's ``MM / MB`` (the pages read give
  no other isolated ratio), rises. Tiers: risk-limit row by entry value (the
  article's 2026 revision values inverse positions at the mark:
  ``inverse_value_at_mark``). Solver: MM is a constant of the position, so ``MB − MM`` is
  monotonic in P; closed form, settled exactly.

okx (:mod:`.okx`) — linear and inverse. Margin ratio ``(margin + uPnL) /
  (ctVal·|n|·mark·(mmr + taker fee))`` (``/mark`` inverse), liquidation at or
  below 100 %. Sources: the formula as issue #14 states it; OKX help "Tiered
  maintenance margin ratio rules" (liquidation when the margin ratio falls to
  100 %). Margin: the position's ``margin``. Ratio ``MB / MM``, falls. Tiers:
  size in contracts (``minSz``, ``maxSz``), no deduction, so MM jumps between
  tiers; but the size is fixed for a position, so its tier is too and the
  condition ``M + PnL(P) ≤ r·N(P)`` has one ``r``: closed form, unique, settled
  exactly.

gate (:mod:`.gate`) — linear and inverse. ``LP = (E ∓ M/multiplier/size) / (1 ∓
  (mmr + taker fee))``, inverse ``LP = size·E·(1 ± mmr ± fee) / (size ± M·E)``.
  Source: Gate support's reply on the liquidation price (Gate Square post
  3870211, 2023-07-02, read at gatenode.pro/post/status/3870211). Tiers
  ``risk_limit``, ``maintenance_rate``, ``deduction``: since Gate's July 2025
  risk-limit upgrade (as reported on Binance Square, post 27630175253050) the
  tier follows the position value and MM is computed by gradient. Margin: the
  position margin. Ratio: liqmon's ``MM / MB`` (no other isolated ratio
  found), rises. Tiers: value at the mark, deduction continuous (checked
  exactly). Solver: margin.py's, settled exactly.

hyperliquid (:mod:`.hyperliquid`) — linear (USDC). ``MM = N·rate − deduction``,
  ``rate = 1/(2·max leverage)``, deductions derived so MM is continuous;
  liquidation when margin + uPnL falls below MM. Sources: Hyperliquid docs,
  Trading › Liquidations and Trading › Margin tiers
  (hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers); the
  single-tier liquidation price as HyENA's docs (a HIP-3 DEX) print it. Margin: the
  USDC the isolated position holds, without uPnL. Ratio: liqmon's ``MM / MB``
  (no other isolated ratio found), rises. Tiers:
  notional at the mark (``lowerBound``, ``maxLeverage``). Solver: margin.py's,
  settled exactly.

Exact and unique
----------------

A threshold solves ``a·MB(P) = b·MM(P)`` (liquidation ``(1, 1)``, margin call
``(ratio, 1)``, bankruptcy ``(1, 0)``). For every model ``MM(P) = r·N(P) + c``
piece by piece, and ``a·MB − b·MM`` is strictly monotonic in P when ``a >
b·r``: each model refuses rates at or above 1, and a margin-call ratio at or
below the highest rate the position can meet. Where tiers follow the mark,
MM must be continuous (deductions checked), so the pieces join without a jump
and the crossing is single; where MM is not continuous across tiers (OKX) the
tier does not follow the mark. Binance returns margin.py's prices unchanged
(half-even to 28 digits). The other four settle the closed-form root to the
first 28-digit price on the losing side at which the condition holds, checked
with an exact comparison (no division: inverse conditions are multiplied
through by ``P·E``), so the condition holds at the returned price and fails at
its 28-digit neighbour on the winning side.

Wiring: the configuration (``[symbols.NAME] venue``, :mod:`monitor.config.model`)
attaches a model to each non-Binance :class:`~monitor.core.margin.Contract`;
:func:`monitor.core.models.model_for` is the one place that picks it, for the
evaluation, the trigger index, the views, ``liqmon calc`` and the rest. Status
decisions use :meth:`VenueState.ratio_reached`, the exact condition the
thresholds settle on. Not here: ``tiers import`` and funding.
"""

from monitor.core.venues.base import RatioDirection, VenueModel, VenueState
from monitor.core.venues.binance import BinanceBracket, BinanceModel
from monitor.core.venues.bybit import BybitModel, BybitRiskLimit
from monitor.core.venues.gate import GateModel, GateTier
from monitor.core.venues.hyperliquid import HyperliquidModel, HyperliquidTier
from monitor.core.venues.okx import OkxModel, OkxTier

__all__ = [
    "BinanceBracket",
    "BinanceModel",
    "BybitModel",
    "BybitRiskLimit",
    "GateModel",
    "GateTier",
    "HyperliquidModel",
    "HyperliquidTier",
    "OkxModel",
    "OkxTier",
    "RatioDirection",
    "VenueModel",
    "VenueState",
]
