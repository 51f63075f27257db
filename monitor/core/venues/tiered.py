"""Tiers chosen by the notional at the mark, with a deduction keeping MM continuous.

Gate and Hyperliquid compute maintenance margin the way Binance does: the tier
is the one containing the position value at the mark price, and
``MM = N·mmr − deduction (+ N·fee)``, the deduction making MM continuous where
tiers meet. That is exactly the algebra of :mod:`monitor.core.margin`, so
:class:`MarkTieredModel` keeps a :class:`~monitor.core.margin.Contract` and
takes its roots from that module's prepared solver, then settles them on the
exact condition like every :class:`~monitor.core.venues.base.ExactModel`.

Uniqueness: with MM continuous in the notional, every rate below 1 and the
ratio above every rate, ``a·MB − b·MM`` changes sign once as the price moves
(the argument in :mod:`monitor.core.margin`), which :func:`build_contract`
enforces with :func:`~monitor.core.margin.check_brackets`.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from monitor.core import margin
from monitor.core.margin import Bracket, Contract, ContractKind, Holding, Position
from monitor.core.venues.base import EXACT, ONE, ZERO, ExactModel, Terms


def build_contract(
    symbol: str,
    kind: ContractKind,
    brackets: list[Bracket],
    multiplier: Decimal,
    fee_rate: Decimal,
) -> Contract:
    """A margin.Contract for the table, its last tier left open; refuses gaps in MM.

    A venue's last tier has a finite cap (the largest position it accepts);
    beyond it the last tier's rates still apply, as in ``bracket_for``, so the
    cap is dropped rather than kept as a special case in the solver.
    """
    if not brackets:
        raise ValueError("at least one tier is required")
    last = brackets[-1]
    table = (*brackets[:-1], Bracket(notional_cap=None, mmr=last.mmr, cum=last.cum))
    # Continuity is checked exactly, not to the 28 digits of the default context.
    with localcontext(EXACT):
        problems = margin.check_brackets(table, fee_rate, ONE)
    if problems:
        raise ValueError("; ".join(problems))
    return Contract(
        symbol=symbol,
        kind=kind,
        brackets=table,
        contract_size=multiplier if kind is ContractKind.INVERSE else ONE,
        close_fee_rate=fee_rate,
    )


class MarkTieredModel(ExactModel):
    """An :class:`ExactModel` whose tier follows the mark notional (margin.py's table)."""

    contract: Contract

    def _as_margin_position(self, position: Holding) -> Position:
        """The position as margin.py counts it (linear sizes in base units)."""
        qty = self.exposure(position) if self.kind is ContractKind.LINEAR else position.qty
        return Position(position.side, qty, position.entry_price, position.margin)

    def terms_at(self, position: Holding, price: Decimal) -> Terms:
        """The bracket containing the notional at ``price``, compared without division.

        Exact in the caller's context when that is :data:`~monitor.core.venues.base.EXACT`
        (``_crossed`` enters it); a notional exactly at a cap is in the lower tier.
        """
        x = self.exposure(position)
        chosen = self.contract.brackets[-1]
        for bracket in self.contract.brackets:
            cap = bracket.notional_cap
            if cap is None:
                chosen = bracket
                break
            with_cap = x * price <= cap if self.kind is ContractKind.LINEAR else x <= cap * price
            if with_cap:
                chosen = bracket
                break
        return Terms(
            rate=chosen.mmr + self.contract.close_fee_rate, entry_rate=ZERO, fixed=-chosen.cum
        )

    def highest_rate(self, position: Holding) -> Decimal:
        """The largest ``mmr + fee`` in the table (a price may reach any tier)."""
        return max(b.mmr for b in self.contract.brackets) + self.contract.close_fee_rate

    def _raw_threshold(self, position: Holding, a: Decimal, b: Decimal) -> Decimal | None:
        """margin.py's root for ``a·MB = b·MM`` (rounded half-even; settled after)."""
        held = self._as_margin_position(position)
        if b == 0:
            return margin.bankruptcy_price(self.contract, held)
        if a == ONE:
            return margin.liquidation_price(self.contract, held)
        return margin.ratio_price(self.contract, held, a)
