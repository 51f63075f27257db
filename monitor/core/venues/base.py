"""What every venue model offers, and the exact engine four of them share.

A model is pure and synchronous: it holds one contract's terms (kind,
multiplier, tiers in the venue's own shape, fee) and answers questions about a
position on that contract at a mark price, or for the mark price at which
something happens. Positions are :class:`monitor.core.margin.Position` (or any
:class:`~monitor.core.margin.Holding`): ``qty`` is the size in the venue's own
unit and ``margin`` the isolated margin as the venue reports it (each model's
docstring says which unit and which field).

:class:`ExactModel` is the shared engine. A model built on it describes its
maintenance margin at a price as :class:`Terms`,

    MM(P) = rate·N(P) + entry_rate·N(E) + fixed

(``N`` the notional: ``x·P`` linear, ``x/P`` inverse, with ``x = size ×
multiplier``), and finds a threshold in two steps: a closed-form root at 50
digits, then :meth:`ExactModel._settle`, which moves it to the first 28-digit
price on the losing side where the condition holds, deciding each step with
:meth:`ExactModel._crossed`, an exact comparison (inverse terms are multiplied
through by ``P·E`` so that no division is needed). So each threshold ``T``
returned satisfies, exactly: the condition holds at ``T`` and does not hold at
the next 28-digit price on the winning side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Protocol

from monitor.core.margin import ContractKind, Holding, Side

ZERO = Decimal(0)
ONE = Decimal(1)
INFINITY = Decimal("Infinity")

_TRAPS = [InvalidOperation, DivisionByZero, Overflow]
SOLVE = Context(prec=50, rounding=ROUND_HALF_EVEN, traps=_TRAPS)
"""Closed-form roots: close enough that settling takes a step or two."""
RESULT = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])
"""What leaves a model: the 28 significant digits of the default context."""
EXACT = Context(prec=400, rounding=ROUND_HALF_EVEN, traps=_TRAPS)
"""Comparisons: only products and sums, exact while operands have under 100 digits."""
_SETTLE_STEPS = 8
_SEARCH_STEPS = 400


class RatioDirection(StrEnum):
    """Which way a venue's own margin ratio moves as a position nears liquidation."""

    RISES = "rises"
    """Maintenance over balance (Binance's margin ratio): liquidation at 100 % and above."""
    FALLS = "falls"
    """Balance over maintenance (OKX's margin ratio): liquidation at 100 % and below."""


@dataclass(frozen=True, slots=True)
class VenueState:
    """A position at one mark price, as a venue model sees it.

    ``margin_ratio`` is liqmon's ``MM / MB`` (Infinity when ``MB ≤ 0``), rising
    toward 1 at liquidation on every venue; ``venue_ratio`` is the venue's own
    figure, in the direction of the model's :class:`RatioDirection`. Status
    decisions ask :meth:`ratio_reached`, which the model's trigger prices agree with.
    """

    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    maintenance_margin: Decimal
    margin_ratio: Decimal
    venue_ratio: Decimal
    liquidatable: bool
    exact: tuple[Decimal, Decimal] | None = field(default=None, repr=False, compare=False)
    """``(MB, MM)`` unrounded (multiplied by ``P·E`` for an inverse contract), or None
    to decide on ``margin_ratio`` as :mod:`monitor.core.margin` does (Binance)."""

    def ratio_reached(self, ratio: Decimal) -> bool:
        """``MM / MB ≥ ratio``: exactly ``ratio·MB ≤ MM`` when the exact terms are known.

        That is the condition :meth:`VenueModel.margin_call_price` settles on,
        so a status decided here changes exactly at the trigger price; the
        28-digit ``margin_ratio`` could round across it.
        """
        if self.exact is None:
            return self.margin_ratio >= ratio
        balance, maintenance = self.exact
        with localcontext(EXACT):
            return ratio * balance <= maintenance


class VenueModel(Protocol):
    """One contract on one venue: its maintenance margin and trigger prices.

    Every price returned is positive with at most 28 significant digits, or
    None when no positive mark price reaches the threshold (the position is
    then on the same side of it at every price). Ratios passed in are liqmon's
    ``MM / MB`` (a margin call at 0.8 means maintenance is 80 % of balance).
    """

    @property
    def venue(self) -> str:
        """The venue's name, as the configuration will spell it."""
        ...

    @property
    def kind(self) -> ContractKind:
        """Linear (quote-margined) or inverse (coin-margined)."""
        ...

    @property
    def ratio_direction(self) -> RatioDirection:
        """Which way :meth:`venue_ratio` moves toward liquidation."""
        ...

    def maintenance_margin(self, position: Holding, mark: Decimal) -> Decimal:
        """The maintenance margin at ``mark``, in the settlement currency."""
        ...

    def assess(self, position: Holding, mark: Decimal) -> VenueState:
        """Everything about the position at one mark price."""
        ...

    def margin_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """liqmon's ``MM / MB`` at ``mark`` (Infinity when ``MB ≤ 0``)."""
        ...

    def short_of(self, position: Holding, mark: Decimal, ratio: Decimal) -> bool:
        """True when :meth:`assess` at ``mark`` is neither liquidatable nor at ``ratio``:
        a healthy position stays healthy there (what nearly every new version meets,
        so a model may answer it without building the state)."""
        ...

    def venue_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """The venue's own margin ratio at ``mark``."""
        ...

    def liquidatable(self, position: Holding, mark: Decimal) -> bool:
        """True when the venue would liquidate the position at ``mark``."""
        ...

    def liquidation_price(self, position: Holding) -> Decimal | None:
        """The mark price at which the position becomes liquidatable."""
        ...

    def bankruptcy_price(self, position: Holding) -> Decimal | None:
        """The mark price at which the margin balance reaches zero."""
        ...

    def margin_call_price(self, position: Holding, ratio: Decimal) -> Decimal | None:
        """The mark price at which ``MM / MB`` reaches ``ratio``."""
        ...

    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """The isolated margin the venue sets aside for a new position at ``leverage``."""
        ...


@dataclass(frozen=True, slots=True)
class Terms:
    """``MM(P) = rate·N(P) + entry_rate·N(E) + fixed`` for one position at one price.

    ``rate`` already includes any fee the venue adds on the mark notional.
    """

    rate: Decimal
    entry_rate: Decimal
    fixed: Decimal


def sign(position: Holding) -> int:
    """+1 for a long, -1 for a short."""
    return 1 if position.side is Side.LONG else -1


def check_rates(rates: list[Decimal], what: str) -> None:
    """Refuse a rate at or above 1, or not positive: thresholds would not be unique."""
    for index, rate in enumerate(rates):
        if not ZERO < rate < ONE:
            raise ValueError(f"{what}[{index}] must lie strictly between 0 and 1, got {rate}")


class ExactModel(ABC):
    """The shared engine: exact conditions, closed-form roots, settled to 28 digits.

    Subclasses set :attr:`kind` and :attr:`multiplier` and say how the
    maintenance margin is made (:meth:`terms_at`). The default
    :meth:`_raw_threshold` assumes the terms do not depend on the price (tiers
    chosen by size or by entry value); a model whose tiers follow the mark
    notional overrides it.
    """

    venue: str
    kind: ContractKind
    multiplier: Decimal
    ratio_direction: RatioDirection = RatioDirection.RISES

    @abstractmethod
    def terms_at(self, position: Holding, price: Decimal) -> Terms:
        """The maintenance-margin terms at ``price``; the tier choice is exact in :data:`EXACT`."""

    @abstractmethod
    def highest_rate(self, position: Holding) -> Decimal:
        """The largest ``rate`` the position can meet at any price (bounds the ratios)."""

    @abstractmethod
    def isolated_margin(self, size: Decimal, entry_price: Decimal, leverage: Decimal) -> Decimal:
        """The isolated margin for a new position at ``leverage``, the venue's way."""

    # ------------------------------------------------------------------ at a mark

    def exposure(self, position: Holding) -> Decimal:
        """``x = size × multiplier``: base units (linear) or quote face value (inverse)."""
        return position.qty * self.multiplier

    def _notional(self, position: Holding, price: Decimal) -> Decimal:
        if self.kind is ContractKind.LINEAR:
            return self.exposure(position) * price
        return self.exposure(position) / price

    def _pnl(self, position: Holding, mark: Decimal) -> Decimal:
        x = self.exposure(position)
        if self.kind is ContractKind.LINEAR:
            return sign(position) * x * (mark - position.entry_price)
        return sign(position) * x * (ONE / position.entry_price - ONE / mark)

    def _maintenance(self, position: Holding, mark: Decimal) -> Decimal:
        terms = self.terms_at(position, mark)
        at_entry = self._notional(position, position.entry_price)
        return (
            terms.rate * self._notional(position, mark) + terms.entry_rate * at_entry + terms.fixed
        )

    def maintenance_margin(self, position: Holding, mark: Decimal) -> Decimal:
        """The maintenance margin at ``mark``, to 28 digits."""
        with localcontext(RESULT):
            return self._maintenance(position, mark)

    def assess(self, position: Holding, mark: Decimal) -> VenueState:
        """Everything about the position at ``mark``; ``liquidatable`` is decided exactly."""
        with localcontext(RESULT):
            value = self._notional(position, mark)
            pnl = self._pnl(position, mark)
            mm = self._maintenance(position, mark)
            balance = position.margin + pnl
            ratio = mm / balance if balance > 0 else INFINITY
            venue = self._venue_ratio(balance, mm)
        exact = self._sides(position, mark)
        return VenueState(
            mark_price=mark,
            notional=value,
            unrealized_pnl=pnl,
            margin_balance=balance,
            maintenance_margin=mm,
            margin_ratio=ratio,
            venue_ratio=venue,
            liquidatable=exact[0] <= exact[1],
            exact=exact,
        )

    def _venue_ratio(self, balance: Decimal, mm: Decimal) -> Decimal:
        """The venue's ratio from MB and MM (in the caller's context)."""
        if self.ratio_direction is RatioDirection.FALLS:
            return balance / mm if mm > 0 else INFINITY
        return mm / balance if balance > 0 else INFINITY

    def margin_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """liqmon's ``MM / MB`` at ``mark``."""
        return self.assess(position, mark).margin_ratio

    def short_of(self, position: Holding, mark: Decimal, ratio: Decimal) -> bool:
        """Neither liquidatable nor at ``ratio`` at ``mark`` (from :meth:`assess`)."""
        state = self.assess(position, mark)
        return not state.liquidatable and not state.ratio_reached(ratio)

    def venue_ratio(self, position: Holding, mark: Decimal) -> Decimal:
        """The venue's own ratio at ``mark``."""
        return self.assess(position, mark).venue_ratio

    def liquidatable(self, position: Holding, mark: Decimal) -> bool:
        """True when ``MB ≤ MM`` at ``mark``, compared exactly."""
        return self._crossed(position, mark, ONE, ONE)

    # ------------------------------------------------------------------ thresholds

    def liquidation_price(self, position: Holding) -> Decimal | None:
        """The first 28-digit price, from the winning side, at which ``MB ≤ MM``."""
        return self._threshold(position, ONE, ONE)

    def bankruptcy_price(self, position: Holding) -> Decimal | None:
        """The first 28-digit price, from the winning side, at which ``MB ≤ 0``."""
        return self._threshold(position, ONE, ZERO)

    def margin_call_price(self, position: Holding, ratio: Decimal) -> Decimal | None:
        """The first 28-digit price, from the winning side, at which ``ratio·MB ≤ MM``.

        ``ratio`` must exceed every rate the position can meet (``mmr + fee``),
        or the condition would not change side only once.
        """
        highest = self.highest_rate(position)
        if ratio <= highest:
            raise ValueError(f"ratio {ratio} must exceed the highest mmr + fee, {highest}")
        return self._threshold(position, ratio, ONE)

    def _threshold(self, position: Holding, a: Decimal, b: Decimal) -> Decimal | None:
        return self._settle(position, self._raw_threshold(position, a, b), a, b)

    def _crossed(self, position: Holding, price: Decimal, a: Decimal, b: Decimal) -> bool:
        """``a·MB(P) ≤ b·MM(P)``, exactly: the inverse form is multiplied by ``P·E > 0``."""
        balance, maintenance = self._sides(position, price)
        with localcontext(EXACT):
            return a * balance <= b * maintenance

    def _sides(self, position: Holding, price: Decimal) -> tuple[Decimal, Decimal]:
        """``(MB, MM)`` at ``price``, exact; both times ``P·E > 0`` for an inverse contract."""
        with localcontext(EXACT):
            terms = self.terms_at(position, price)
            x, entry, margin = self.exposure(position), position.entry_price, position.margin
            s = sign(position)
            if self.kind is ContractKind.LINEAR:
                balance = margin + s * x * (price - entry)
                maintenance = terms.rate * x * price + terms.entry_rate * x * entry + terms.fixed
            else:
                balance = margin * price * entry + s * x * (price - entry)
                maintenance = (
                    terms.rate * x * entry
                    + terms.entry_rate * x * price
                    + terms.fixed * price * entry
                )
            return balance, maintenance

    def _raw_threshold(self, position: Holding, a: Decimal, b: Decimal) -> Decimal | None:
        """The root of ``a·MB = b·MM`` at 50 digits, for terms that do not depend on P.

        With ``c0 = entry_rate·N(E) + fixed`` and ``c1 = rate``::

            linear:  P = (a·s·x·E − a·M + b·c0) / (x·(a·s − b·c1))
            inverse: P = x·(a·s + b·c1) / (a·M + a·s·x/E − b·c0)
        """
        terms = self.terms_at(position, position.entry_price)
        with localcontext(SOLVE):
            x, entry, margin = self.exposure(position), position.entry_price, position.margin
            s = sign(position)
            c0 = terms.entry_rate * self._notional(position, entry) + terms.fixed
            c1 = terms.rate
            if self.kind is ContractKind.LINEAR:
                denominator = x * (a * s - b * c1)
                if denominator == 0:
                    return None
                root = (a * s * x * entry - a * margin + b * c0) / denominator
            else:
                denominator = a * margin + a * s * x / entry - b * c0
                if denominator == 0:
                    return None
                root = x * (a * s + b * c1) / denominator
        return root if root > 0 else None

    def _settle(
        self, position: Holding, root: Decimal | None, a: Decimal, b: Decimal
    ) -> Decimal | None:
        """The first 28-digit price at or beyond ``root`` on the losing side that is crossed.

        The losing side is below for a long and above for a short, linear or
        inverse alike. The condition changes side once (the rates are below
        ``a``), so the result is crossed and its 28-digit neighbour on the
        winning side is not.
        """
        if root is None:
            return None
        long = position.side is Side.LONG
        digits = Context(prec=28, rounding=ROUND_FLOOR if long else ROUND_CEILING)
        price = digits.plus(root)
        for _ in range(_SETTLE_STEPS):
            if price <= 0:
                return None
            if not self._crossed(position, price, a, b):
                price = digits.next_minus(price) if long else digits.next_plus(price)
                continue
            neighbour = digits.next_plus(price) if long else digits.next_minus(price)
            if neighbour > 0 and self._crossed(position, neighbour, a, b):
                price = neighbour
                continue
            return price
        return self._search(position, digits.plus(root), a, b)

    def _search(self, position: Holding, start: Decimal, a: Decimal, b: Decimal) -> Decimal | None:
        """The first crossed 28-digit price, found from ``start`` by doubling steps and then
        halving, for a root the closed form placed more than a few steps off.

        That happens where the closed form loses digits to cancellation, e.g. a short
        inverse position whose margin nearly equals its value (a price near 1e28). The
        condition changes side once, so the halving ends on the exact answer.
        """
        long = position.side is Side.LONG
        digits = Context(prec=28, rounding=ROUND_FLOOR if long else ROUND_CEILING)
        losing = -1 if long else 1
        step = Decimal(1).scaleb(start.adjusted() - 27)
        won, lost = (None, start) if self._crossed(position, start, a, b) else (start, None)
        for _ in range(_SEARCH_STEPS):
            if won is not None and lost is not None:
                break
            if won is None:
                assert lost is not None
                candidate = digits.plus(lost - losing * step)
                if candidate <= 0 or not self._crossed(position, candidate, a, b):
                    won = candidate
                else:
                    lost = candidate
            else:
                candidate = digits.plus(won + losing * step)
                if candidate <= 0:
                    return None
                if self._crossed(position, candidate, a, b):
                    lost = candidate
                else:
                    won = candidate
            step *= 2
        if won is None or lost is None:
            raise ArithmeticError(f"no crossing found around {start}")
        for _ in range(_SEARCH_STEPS):
            neighbour = digits.next_plus(lost) if long else digits.next_minus(lost)
            if neighbour == won or (long and neighbour >= won) or (not long and neighbour <= won):
                return lost
            with localcontext(EXACT):
                middle = digits.plus((won + lost) / 2)
            if middle in (won, lost):
                middle = neighbour
            if middle > 0 and self._crossed(position, middle, a, b):
                lost = middle
            else:
                won = middle
        raise ArithmeticError(f"no crossing found around {start}")
