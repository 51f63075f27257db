"""Binance USDⓈ-M (linear) and COIN-M (inverse) futures, isolated margin: today's model.

Binance publishes the liquidation price (support FAQ "How to Calculate
Liquidation Price of USDⓈ-M Futures Contracts" and "... of COIN-M Futures
Contracts"); in isolated mode ``TMM = UPNL = 0`` and ``WB`` is the isolated
wallet balance, leaving ``WB + PnL(P) = N(P)·mmr − cum``. The bracket is the
one containing the notional at the liquidation price (the COIN-M FAQ's note:
recalculate with the bracket of the position valued at the liquidation
price), and the maintenance amount ``cum`` of bracket n is
``floor_n × (mmr_n − mmr_{n−1}) + cum_{n−1}`` (the COIN-M FAQ), which keeps MM
continuous. That is :mod:`monitor.core.margin`, so :class:`BinanceModel`
delegates every answer to it and returns its digits unchanged.

Units: ``qty`` is base units (USDⓈ-M) or contracts (COIN-M, each
``contract_size`` USD); ``margin`` is the position's ``isolatedWallet`` (the
isolated wallet balance, without unrealized PnL), in quote or in coin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from monitor.core import margin
from monitor.core.margin import Bracket, Contract, ContractKind, Holding
from monitor.core.venues.base import ONE, RESULT, ZERO, RatioDirection, VenueState


@dataclass(frozen=True, slots=True)
class BinanceBracket:
    """One leverage bracket as Binance lists it: ``floor < N ≤ cap``, ``maintMarginRatio``, ``cum``.

    USDⓈ-M brackets are notional in quote (``notionalFloor``, ``notionalCap``);
    COIN-M ones are in coin (``qtyFloor``, ``qtyCap``). ``cap`` None leaves the
    last bracket open.
    """

    floor: Decimal
    cap: Decimal | None
    maint_margin_ratio: Decimal
    cum: Decimal


def maintenance_amount(
    floor: Decimal, mmr: Decimal, previous_mmr: Decimal, previous_cum: Decimal
) -> Decimal:
    """Binance's maintenance amount of a bracket from the one below it.

    ``floor × (mmr − previous_mmr) + previous_cum``, as the COIN-M FAQ states it.
    """
    return floor * (mmr - previous_mmr) + previous_cum


class BinanceModel:
    """Binance isolated margin, answered by :mod:`monitor.core.margin` digit for digit."""

    venue = "binance"
    ratio_direction = RatioDirection.RISES

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        # Asked on every margin-call price: computed once, not per position.
        self._highest = max((b.mmr for b in contract.brackets), default=ZERO) + (
            contract.close_fee_rate
        )

    @classmethod
    def from_brackets(
        cls,
        symbol: str,
        kind: ContractKind,
        brackets: Sequence[BinanceBracket],
        contract_size: Decimal = ONE,
        close_fee_rate: Decimal = ZERO,
    ) -> BinanceModel:
        """A model from Binance's own bracket rows; refuses gaps, overlaps and jumps in MM."""
        problems: list[str] = []
        expected_floor = ZERO
        for index, row in enumerate(brackets):
            if row.floor != expected_floor:
                problems.append(
                    f"brackets[{index}].floor must be {expected_floor} (the cap below), "
                    f"got {row.floor}"
                )
            expected_floor = row.cap if row.cap is not None else expected_floor
        table = tuple(Bracket(row.cap, row.maint_margin_ratio, row.cum) for row in brackets)
        problems.extend(margin.check_brackets(table, close_fee_rate, ONE))
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            Contract(
                symbol=symbol,
                kind=kind,
                brackets=table,
                contract_size=contract_size,
                close_fee_rate=close_fee_rate,
            )
        )

    @property
    def kind(self) -> ContractKind:
        """Linear (USDⓈ-M) or inverse (COIN-M)."""
        return self.contract.kind

    def maintenance_margin(self, position: Holding, mark: Decimal) -> Decimal:
        """``N·mmr − cum + N·close_fee_rate`` with the bracket of the notional at ``mark``."""
        return margin.maintenance_margin(
            self.contract, margin.notional(self.contract, position, mark)
        )

    def assess(self, position: Holding, mark: Decimal) -> VenueState:
        """margin.assess; Binance's margin ratio is the same ``MM / MB``."""
        state = margin.assess(self.contract, position, mark)
        return VenueState(
            mark_price=state.mark_price,
            notional=state.notional,
            unrealized_pnl=state.unrealized_pnl,
            margin_balance=state.margin_balance,
            maintenance_margin=state.maintenance_margin,
            margin_ratio=state.margin_ratio,
            venue_ratio=state.margin_ratio,
            liquidatable=state.liquidatable,
        )

    def short_of(self, position: Holding, mark: Decimal, ratio: Decimal) -> bool:
        """True when :meth:`assess` at ``mark`` is neither liquidatable nor at ``ratio``
        (margin.short_of: the same digits, without building the state)."""
        return margin.short_of(self.contract, position, mark, ratio)

    def margin_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """``MM / MB`` at ``mark``."""
        return margin.assess(self.contract, position, mark).margin_ratio

    def venue_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """Binance's margin ratio, ``MM / MB``: liquidation at 100 %."""
        return self.margin_ratio(position, mark)

    def liquidatable(self, position: Holding, mark: Decimal) -> bool:
        """``MB ≤ MM`` at ``mark``, as margin.assess decides it (28 digits)."""
        return margin.assess(self.contract, position, mark).liquidatable

    def liquidation_price(self, position: Holding) -> Decimal | None:
        """margin.liquidation_price."""
        return margin.liquidation_price(self.contract, position)

    def bankruptcy_price(self, position: Holding) -> Decimal | None:
        """margin.bankruptcy_price."""
        return margin.bankruptcy_price(self.contract, position)

    def margin_call_price(self, position: Holding, ratio: Decimal) -> Decimal | None:
        """margin.ratio_price; ``ratio`` must exceed every ``mmr + close_fee_rate``."""
        highest = self._highest
        if ratio <= highest:
            raise ValueError(f"ratio {ratio} must exceed the highest mmr + fee, {highest}")
        return margin.ratio_price(self.contract, position, ratio)

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """Initial margin: the notional at entry over the leverage."""
        with localcontext(RESULT):
            if self.kind is ContractKind.LINEAR:
                return size * entry_price / leverage
            return size * self.contract.contract_size / entry_price / leverage
