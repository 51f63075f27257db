"""Stress at a price and the liquidation map, exactly: pure, synchronous.

Given open positions of one contract and a price ``P``, :func:`stress` says
what the venue model (:func:`monitor.core.models.model_for`, the one the
monitor decides with) would do at ``P``:

``liquidated``
    open positions (healthy or in margin call) whose liquidation condition
    holds at ``P`` (``MB(P) ≤ MM(P)``, :meth:`VenueModel.liquidatable`): their
    count, their notional at ``P`` and their isolated margin;
``margin_call``
    open positions not liquidatable at ``P`` whose margin ratio at ``P`` is at
    least ``margin_call_ratio`` (:meth:`VenueState.ratio_reached`, the test the
    status table makes): count and notional at ``P``;
``shortfall``
    ``Σ max(0, −(M + PnL(P)))`` over the liquidated: what closing them all at
    ``P`` costs beyond their margin.

:func:`liquidation_map` buckets the open positions by liquidation price.
:class:`Within` gives, per side, the ``liquidated`` notional of a stress at a
few distances against that side (the daemon's gauges and cluster alerts).

The algebra, and why every figure is exact
------------------------------------------

With ``x`` a position's exposure (size × multiplier: base units for a linear
contract, quote face value for an inverse one), ``s = ±1`` its side, ``E``
its entry and ``M`` its margin, and sums over a selected set of positions::

    linear:   N(P) = x·P                 Σ N(P)   = P·Σx
              PnL(P) = s·x·(P − E)       Σ PnL(P) = s·(P·Σx − Σ(x·E))
    inverse:  N(P) = x/P                 Σ N(P)   = (Σx)/P
              PnL(P) = s·x·(1/E − 1/P)   Σ PnL(P) = s·(Σ(x/E) − (Σx)/P)

``max(0, ·)`` in the shortfall does not break the sums: ``M + PnL(P) < 0``
holds exactly for the positions past their bankruptcy price at ``P``
(``MB`` is monotonic in ``P``), so the shortfall of one side is
``−(ΣM + Σ PnL(P))`` over the positions beyond bankruptcy, a sum of the same
kind. Selection (which positions are liquidated, past bankruptcy, in margin
call) is decided position by position with the model's exact comparison;
each set then keeps only the sums of :class:`Sums` (``count``, ``Σx``,
``Σx·E``, ``ΣM``, and ``Σx/E`` for inverse contracts), and the figures come
from those sums by the algebra above. ``Σx``, ``Σx·E`` and ``ΣM`` are Decimal
sums in :data:`SUMS`, which traps any rounding; ``Σx/E`` and the final
figures are :class:`~fractions.Fraction`. So a linear figure is a finite
decimal, printed with every digit; an inverse one (``x/P``, ``x/E``) is a
rational, printed once, rounded half-even to 28 significant digits
(:func:`decimal_text`). Nothing is rounded before it is summed. The same
sums, kept per price bucket, are what would make the cost flat in the book's
size (README, "Stress at a price and the liquidation map").

Which positions must be read (the shell's business, :mod:`monitor.web.stress`):
the monitor keeps every open position in its side's worsening trigger set,
scored by its margin-call price while healthy and by its liquidation price in
margin call, each score widened one ulp away from the mark; both prices lie
on the mark's side of the liquidation price. So a long liquidatable at ``P``,
or in margin call at ``P`` while healthy now, has a score at or above ``P``
(a short at or below); a position already in margin call whose liquidation
price is beyond ``P`` is in the improving set. Those two reads select a
superset of every position that counts at ``P``; the exact tests here decide.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from fractions import Fraction
from itertools import pairwise
from typing import Any

from monitor.core.margin import Contract, ContractKind, Holding, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.venues.base import ExactModel, VenueModel

ZERO = Decimal(0)

OPEN = frozenset({Status.HEALTHY, Status.MARGIN_CALL})
"""The statuses a price can still move: the only ones stress and the map count."""

MAX_BUCKETS = 2_000
"""The most buckets one map may have."""

_DIGITS = Context(prec=28)
"""How an inexact (inverse) rational is printed: 28 significant digits, half even."""


def decimal_text(value: Fraction) -> str:
    """``value`` as a decimal string: every digit when it is a finite decimal, else
    rounded half-even to 28 significant digits (the default context's)."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator == 1:
        places = max(twos, fives)
        scaled = value.numerator * 10**places // value.denominator
        return format(Decimal(scaled).scaleb(-places), "f")
    with localcontext(_DIGITS):
        return format(Decimal(value.numerator) / Decimal(value.denominator), "f")


def exposure(contract: Contract, model: VenueModel, position: Holding) -> Decimal:
    """``x``: base units (linear) or quote face value (inverse), as the model counts them."""
    if isinstance(model, ExactModel):
        return model.exposure(position)
    if contract.kind is ContractKind.LINEAR:
        return position.qty
    return position.qty * contract.contract_size


SUMS = Context(prec=400, traps=[Inexact, InvalidOperation, Overflow])
"""Sums of products of position fields: exact, or an error (never silently rounded)."""


@dataclass(slots=True)
class Sums:
    """The sums of the module doc over one side's positions in one set.

    ``x_entry`` (``Σ x·E``) serves linear contracts and ``x_over_entry``
    (``Σ x/E``, a rational) inverse ones; each counts only for its kind.
    """

    count: int = 0
    x: Decimal = ZERO
    x_entry: Decimal = ZERO
    margin: Decimal = ZERO
    x_over_entry: Fraction = field(default_factory=Fraction)

    def add(self, kind: ContractKind, x: Decimal, entry: Decimal, margin: Decimal) -> None:
        """Count one position (call inside :data:`SUMS`)."""
        self.count += 1
        self.x += x
        self.margin += margin
        if kind is ContractKind.LINEAR:
            self.x_entry += x * entry
        else:
            self.x_over_entry += Fraction(x) / Fraction(entry)

    def notional(self, kind: ContractKind, price: Decimal) -> Fraction:
        """``Σ N(P)``: ``P·Σx`` linear, ``Σx/P`` inverse."""
        if kind is ContractKind.LINEAR:
            return Fraction(price) * Fraction(self.x)
        return Fraction(self.x) / Fraction(price)

    def add_x(self, x: Decimal) -> None:
        """Count one position by its exposure alone (what :meth:`notional` needs; call
        inside :data:`SUMS`)."""
        self.count += 1
        self.x += x

    def balance(self, kind: ContractKind, sign: int, price: Decimal) -> Fraction:
        """``Σ (M + PnL(P))``: ``ΣM + s·(P·Σx − Σx·E)`` linear,
        ``ΣM + s·(Σx/E − Σx/P)`` inverse."""
        if kind is ContractKind.LINEAR:
            pnl = Fraction(price) * Fraction(self.x) - Fraction(self.x_entry)
        else:
            pnl = self.x_over_entry - Fraction(self.x) / Fraction(price)
        return Fraction(self.margin) + sign * pnl


@dataclass(frozen=True, slots=True)
class Tally:
    """A count of positions with their notional (at a price) and margin, exact."""

    count: int
    notional: Fraction
    margin: Fraction


@dataclass(frozen=True, slots=True)
class Stress:
    """What happens to one symbol's open positions if the mark goes to ``price``."""

    symbol: str
    price: Decimal
    liquidated: Tally
    margin_call: Tally
    shortfall: Fraction

    def document(self, mark: Decimal | None) -> dict[str, object]:
        """The JSON document ``GET /api/stress`` and ``liqmon stress`` answer for it."""
        return {
            "symbol": self.symbol,
            "mark": None if mark is None else str(mark),
            "price": str(self.price),
            "liquidated": {
                "count": self.liquidated.count,
                "notional": decimal_text(self.liquidated.notional),
                "margin": decimal_text(self.liquidated.margin),
            },
            "margin_call": {
                "count": self.margin_call.count,
                "notional": decimal_text(self.margin_call.notional),
            },
            "shortfall": decimal_text(self.shortfall),
        }


SIGN = {Side.LONG: 1, Side.SHORT: -1}


Seen = dict[str, None]
"""The ids counted so far by one computation. A dict, not a set: a dict holding only
strings is not tracked by Python's garbage collector, where a set of the hundreds of
thousands of ids a large walk counts was traversed by each of its passes."""


def counted(record: PositionRecord, seen: Seen) -> bool:
    """Whether ``record`` counts: open, with a size, and its id not ``seen`` before (it is
    then noted in ``seen``)."""
    if record.status not in OPEN or record.qty <= 0 or record.id in seen:
        return False
    seen[record.id] = None
    return True


def stress(
    contract: Contract, records: Iterable[PositionRecord], price: Decimal, risk: RiskLimits
) -> Stress:
    """The figures at ``price`` over ``records`` (any that are not open are skipped, and
    each id counts once), decided by the contract's venue model (:class:`StressTally`)."""
    tally = StressTally(contract, price, risk)
    for record in records:
        tally.add(record)
    return tally.result()


class StressTally:
    """:func:`stress` fed one position at a time (:meth:`add`), so that the caller chooses
    when to give the loop back; :meth:`result` gives the figures.

    Each position is only sorted into its sets (liquidated, of those past
    bankruptcy, margin call), per side; the figures come from each set's sums
    by the module doc's algebra.
    """

    def __init__(self, contract: Contract, price: Decimal, risk: RiskLimits) -> None:
        if not price > 0:
            raise ValueError(f"a stress price must be positive, got {price}")
        self.contract = contract
        self.price = price
        self.risk = risk
        self.model = model_for(contract)
        self._liquidated = {side: Sums() for side in Side}
        self._bankrupt = {side: Sums() for side in Side}
        self._called = {side: Sums() for side in Side}
        self._seen: Seen = {}

    def add(self, record: PositionRecord) -> None:
        """Sort ``record`` into its sets at the price (if it is open and not seen before)."""
        if not counted(record, self._seen):
            return
        model, price, kind = self.model, self.price, self.model.kind
        # The models choose their own contexts; the sums below are made in SUMS.
        side = record.side
        if model.liquidatable(record, price):
            chosen = self._liquidated[side]
        elif model.assess(record, price).ratio_reached(self.risk.margin_call_ratio):
            chosen = self._called[side]
        else:
            return
        with localcontext(SUMS):
            x, entry, margin = (
                exposure(self.contract, model, record),
                record.entry_price,
                record.margin,
            )
            chosen.add(kind, x, entry, margin)
            if chosen is self._liquidated[side] and bankrupt_at(
                kind, SIGN[side], x, entry, margin, price
            ):
                self._bankrupt[side].add(kind, x, entry, margin)

    def result(self) -> Stress:
        """The figures over the positions added so far."""
        return figures(
            self.contract.symbol,
            self.model.kind,
            self.price,
            self._liquidated,
            self._bankrupt,
            self._called,
        )


def figures(
    symbol: str,
    kind: ContractKind,
    price: Decimal,
    liquidated: dict[Side, Sums],
    bankrupt: dict[Side, Sums],
    called: dict[Side, Sums],
) -> Stress:
    """The stress figures at ``price`` from each side's sums of its liquidated positions,
    of those of them past bankruptcy, and of those in margin call (the module doc's
    algebra)."""
    return Stress(
        symbol,
        price,
        Tally(
            sum(sums.count for sums in liquidated.values()),
            sum((sums.notional(kind, price) for sums in liquidated.values()), Fraction()),
            sum((Fraction(sums.margin) for sums in liquidated.values()), Fraction()),
        ),
        Tally(
            sum(sums.count for sums in called.values()),
            sum((sums.notional(kind, price) for sums in called.values()), Fraction()),
            Fraction(),
        ),
        -sum(
            (sums.balance(kind, SIGN[side], price) for side, sums in bankrupt.items()),
            Fraction(),
        ),
    )


def against(mark: Decimal, side: Side, distance: Decimal) -> Decimal:
    """The price ``distance`` (a fraction of the mark) against ``side``: ``mark × (1 − d)``
    for longs, ``mark × (1 + d)`` for shorts, exactly."""
    if not 0 < distance < 1:
        raise ValueError(f"a distance lies in (0, 1), got {distance}")
    with localcontext(SUMS):
        return mark * (1 - distance) if side is Side.LONG else mark * (1 + distance)


class Within:
    """Per side and distance, the notional that liquidates if the mark moves that far
    against the side: the ``liquidated.notional`` of :func:`stress` at
    :func:`against` ``(mark, side, d)`` over that side's positions alone.

    Fed one position at a time (:meth:`add`), so the caller chooses when to give the
    loop back; each position is tested once per distance with the model's exact
    comparison (no assumption that liquidation is monotonic in the price), and the
    figures come from the sums of :class:`Sums`. A position fed twice counts once.
    """

    def __init__(self, contract: Contract, mark: Decimal, distances: Iterable[Decimal]) -> None:
        self.contract = contract
        self.model = model_for(contract)
        self.distances = tuple(sorted(set(distances)))
        self.prices = {(side, d): against(mark, side, d) for side in Side for d in self.distances}
        self._sums = {key: Sums() for key in self.prices}
        self._seen: Seen = {}

    def add(self, record: PositionRecord) -> None:
        """Count ``record`` at every distance at which it liquidates (if it is open)."""
        if not counted(record, self._seen):
            return
        side = record.side
        x: Decimal | None = None
        for distance in self.distances:
            if self.model.liquidatable(record, self.prices[side, distance]):
                with localcontext(SUMS):
                    if x is None:
                        x = exposure(self.contract, self.model, record)
                    self._sums[side, distance].add_x(x)

    def take(self, side: Side, distance: Decimal, sums: Sums) -> None:
        """Take ``sums`` as what liquidates of ``side`` at ``distance``: counted elsewhere
        (:meth:`~monitor.core.book.LiquidationBook.within`) instead of by :meth:`add`."""
        self._sums[side, distance] = sums

    def notional(self, side: Side, distance: Decimal) -> Fraction:
        """The liquidating notional of ``side`` at ``distance`` (one of the distances)."""
        return self._sums[side, distance].notional(self.model.kind, self.prices[side, distance])

    def count(self, side: Side, distance: Decimal) -> int:
        """How many of ``side``'s positions liquidate at ``distance``."""
        return self._sums[side, distance].count


def bankrupt_at(
    kind: ContractKind, sign: int, x: Decimal, entry: Decimal, margin: Decimal, price: Decimal
) -> bool:
    """``M + PnL(P) < 0``, exactly: the inverse form multiplied through by ``E·P > 0``
    (call inside :data:`SUMS`)."""
    if kind is ContractKind.LINEAR:
        return margin + sign * x * (price - entry) < 0
    return margin * entry * price + sign * x * (price - entry) < 0


@dataclass(frozen=True, slots=True)
class Bucket:
    """Positions whose liquidation price lies in ``[low, high)``, by side, with the
    cumulative notional counted outwards from the mark (see :func:`liquidation_map`)."""

    low: Decimal
    high: Decimal
    long_count: int
    long_notional: Fraction
    short_count: int
    short_notional: Fraction
    long_cumulative: Fraction
    short_cumulative: Fraction

    def document(self) -> dict[str, object]:
        """One bucket as ``GET /api/liquidation-map`` answers it."""
        return {
            "low": str(self.low),
            "high": str(self.high),
            "long": {"count": self.long_count, "notional": decimal_text(self.long_notional)},
            "short": {"count": self.short_count, "notional": decimal_text(self.short_notional)},
            "long_cumulative": decimal_text(self.long_cumulative),
            "short_cumulative": decimal_text(self.short_cumulative),
        }


def bucket_edges(low: Decimal, high: Decimal, step: Decimal) -> list[Decimal]:
    """``low, low + step, …`` up to and including ``high`` (the last bucket is cut at
    ``high`` when the step does not divide the range: a ragged end). Exact."""
    if not (0 < low < high and step > 0):
        raise ValueError("need 0 < low < high and step > 0")
    span = Fraction(high) - Fraction(low)
    count = -(-span // Fraction(step))  # ceiling
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} buckets: at most {MAX_BUCKETS} (widen the step)")
    with localcontext(Context(prec=200)):
        edges = [low + n * step for n in range(int(count))]
    return [*edges, high]


def liquidation_map(
    contract: Contract,
    records: Iterable[PositionRecord],
    low: Decimal,
    high: Decimal,
    step: Decimal,
) -> list[Bucket]:
    """Buckets ``[low, low+step), …, [.., high)`` of liquidation price.

    Each bucket holds the count and notional (each at its own liquidation price)
    of the open longs and shorts whose liquidation price falls in it, and the
    cumulative curves outwards from the mark: ``long_cumulative`` is the notional
    of every open long (in the whole book) whose liquidation price is at or above
    the bucket's ``low``, what liquidates if the mark falls to ``low``;
    ``short_cumulative`` that of every short whose liquidation price is below the
    bucket's ``high``, what liquidates as the mark rises through the bucket.
    """
    model = model_for(contract)
    priced = (
        (record, model.liquidation_price(record) if record.qty > 0 else None) for record in records
    )
    return map_of(contract, priced, low, high, step)


def map_of(
    contract: Contract,
    priced: Iterable[tuple[PositionRecord, Decimal | None]],
    low: Decimal,
    high: Decimal,
    step: Decimal,
) -> list[Bucket]:
    """:func:`liquidation_map` over records whose liquidation prices (the model's, None
    when no price liquidates) are known already: the API keeps them in a cache."""
    tally = MapTally(contract, low, high, step)
    for record, liquidation in priced:
        tally.add(record, liquidation)
    return tally.buckets()


class MapTally:
    """:func:`liquidation_map` fed one position at a time (:meth:`add`, with its
    liquidation price), so that the caller chooses when to give the loop back;
    :meth:`buckets` gives the buckets.

    Each position adds its notional to its bucket's sum (found by bisection of
    the edges), or to the longs at or above ``high`` or the shorts below
    ``low``, which every cumulative curve counts; nothing is sorted or kept
    per position. A linear notional ``x·P`` is a finite decimal, summed exactly
    in :data:`SUMS` (and much faster than as a Fraction); an inverse one ``x/P``
    is a rational.
    """

    def __init__(self, contract: Contract, low: Decimal, high: Decimal, step: Decimal) -> None:
        self.contract = contract
        self.model = model_for(contract)
        self.edges = bucket_edges(low, high, step)
        self._linear = self.model.kind is ContractKind.LINEAR
        zero: Decimal | Fraction = ZERO if self._linear else Fraction()
        count = len(self.edges) - 1
        self._counts = {side: [0] * count for side in Side}
        self._notionals: dict[Side, list[Any]] = {side: [zero] * count for side in Side}
        self._longs_above: Any = zero
        self._shorts_below: Any = zero
        self._seen: Seen = {}

    def add(self, record: PositionRecord, liquidation: Decimal | None) -> None:
        """Count ``record`` at its liquidation price (None: no price liquidates it; it is
        then left out, as are positions not open and ids seen before)."""
        if not counted(record, self._seen) or liquidation is None:
            return
        side, edges = record.side, self.edges
        with localcontext(SUMS):
            x = exposure(self.contract, self.model, record)
            value = x * liquidation if self._linear else Fraction(x) / Fraction(liquidation)
            if liquidation >= edges[-1]:
                if side is Side.LONG:
                    self._longs_above += value
            elif liquidation < edges[0]:
                if side is Side.SHORT:
                    self._shorts_below += value
            else:
                n = bisect_right(edges, liquidation) - 1
                self._counts[side][n] += 1
                self._notionals[side][n] += value

    def add_cell(self, side: Side, bucket: int, count: int, notional: Decimal | Fraction) -> None:
        """Count ``count`` positions of ``side`` with their ``notional`` (each at its own
        liquidation price) in bucket number ``bucket``: a cell of
        :class:`~monitor.core.book.LiquidationBook` that lies inside it."""
        with localcontext(SUMS):
            self._counts[side][bucket] += count
            self._notionals[side][bucket] += notional

    def add_outside(self, side: Side, notional: Decimal | Fraction) -> None:
        """Count the notional of longs liquidating at or above ``high`` (``side`` long), or
        of shorts below ``low`` (short): the cells beyond the map's range."""
        with localcontext(SUMS):
            if side is Side.LONG:
                self._longs_above += notional
            else:
                self._shorts_below += notional

    def buckets(self) -> list[Bucket]:
        """The buckets over the positions added so far, with their cumulative curves: the
        longs at or above each bucket's ``low``, the shorts below its ``high``."""
        counts, notionals = self._counts, self._notionals
        size = len(self.edges) - 1
        with localcontext(SUMS):
            long_cumulative: list[Any] = [self._longs_above] * (size + 1)
            for n in range(size - 1, -1, -1):
                long_cumulative[n] = long_cumulative[n + 1] + notionals[Side.LONG][n]
            short_cumulative = self._shorts_below
            buckets = []
            for n, (low, high) in enumerate(pairwise(self.edges)):
                short_cumulative += notionals[Side.SHORT][n]
                buckets.append(
                    Bucket(
                        low,
                        high,
                        counts[Side.LONG][n],
                        Fraction(notionals[Side.LONG][n]),
                        counts[Side.SHORT][n],
                        Fraction(notionals[Side.SHORT][n]),
                        Fraction(long_cumulative[n]),
                        Fraction(short_cumulative),
                    )
                )
        return buckets
