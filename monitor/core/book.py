"""The liquidation book: one symbol's open positions filed by price, with their sums.

Pure and synchronous. :class:`LiquidationBook` holds, for one contract, every
open position (healthy or in margin call, with a size) filed three times, per
side, by the price at which something happens to it:

``LIQUIDATION``
    its liquidation price ``L`` (:meth:`VenueModel.liquidation_price`);
``BANKRUPTCY``
    the price ``T`` past which ``M + PnL < 0`` (what the shortfall counts);
``MARGIN_CALL``
    its margin-call price ``C`` at ``margin_call_ratio``
    (:meth:`VenueModel.margin_call_price`).

Each filing goes in a *cell*: the price's first :data:`CELL_DIGITS`
significant digits (``64123.456`` is in ``[64123, 64124)``, ``0.0812345`` in
``[0.081234, 0.081235)``), a relative width of 0.001 % to 0.01 %. Every cell
keeps its members' ids and the sums of :class:`~monitor.core.stress.Sums`
(``count``, ``Σx``, ``Σx·E``, ``ΣM``, ``Σx/E``, and ``Σ x·L``, the notional at
the liquidation price the map reports), and every *block* of cells (the first
:data:`BLOCK_DIGITS` digits) keeps the sums of its cells. The sums are
changed by each position filed or taken out (:meth:`LiquidationBook.apply`),
never recomputed.

A stress at ``P`` needs, per side and filing, the sums over the positions
whose price lies beyond ``P`` (a long liquidates at ``P`` when ``P ≤ L``, a
short when ``P ≥ L``; the same for ``C``; bankrupt when ``P < T``, a short
``P > T``). Those are the blocks beyond ``P``'s block, the cells of ``P``'s block
beyond ``P``'s cell, and, in ``P``'s own cell, the members the model's exact
test selects (the same tests as :class:`~monitor.core.stress.StressTally`).
That is exact because the condition changes side once, and every threshold a
model returns is a 28-digit price within one 28-digit step of where it does
(settled exactly on the losing side, or Binance's rounded half-even); when
``P`` lies within one step of its cell's edge, the cell beyond the edge is
tested member by member too, so no position filed in a cell read as a whole
lies on the other side of ``P``. So a stress costs the blocks, the cells of
one block, and the positions of one cell per filing: not the book's size.

The margin-call figure is the positions whose ``C`` is beyond ``P`` less those
liquidated at ``P``: a position liquidatable at ``P`` has reached every margin
ratio below 1 there (``ratio·MB ≤ MB ≤ MM``), so the second set lies in the
first and its sums subtract exactly.

The map asks for the positions whose ``L`` falls in each ``[low, high)`` bucket:
a block inside one bucket adds its sums, and so does a cell; a cell an edge cuts
adds its members one by one (the edges of a map whose ``low`` and ``step`` have
at most the blocks' digits fall on block edges, and the map costs the blocks).

Exactness. ``Σx``, ``Σx·E``, ``ΣM`` and ``Σx·L`` are Decimal sums in
:data:`~monitor.core.stress.SUMS`: exact, and a position taken out subtracts what
it added. ``x/E`` and ``x/L`` (inverse contracts) are rationals; each is kept as
an integer count of ``10^-INVERSE_PLACES`` (rounded half-even once per
position), so that adding and taking out stay exact and a figure is off the
exact rational by at most half a unit per position, far below the 28
significant digits it is printed with.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from enum import Enum
from fractions import Fraction

from monitor.core.margin import Contract, ContractKind, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits
from monitor.core.stress import (
    OPEN,
    SIGN,
    SUMS,
    MapTally,
    Stress,
    Sums,
    Within,
    bankrupt_at,
    exposure,
    figures,
)

CELL_DIGITS = 5
"""Significant digits that name a cell: members of one cell are walked one by one."""

BLOCK_DIGITS = 3
"""Significant digits that name a block of cells: what a stress sums over."""

_Test = Callable[[PositionRecord], bool]

ZERO = Decimal(0)

INVERSE_PLACES = 60
"""Decimal places kept of each ``x/E`` and ``x/L`` of an inverse contract."""

_CELL_SPAN: int = 10**CELL_DIGITS
_PER_BLOCK: int = 10 ** (CELL_DIGITS - BLOCK_DIGITS)
_EXPONENT_OFFSET = 1_000
_INVERSE_UNIT: int = 10**INVERSE_PLACES
_FLOOR = Context(prec=40, rounding=ROUND_FLOOR)
_CEILING = Context(prec=40, rounding=ROUND_CEILING)
_STEP = Context(prec=28)
"""A threshold is a 28-digit price within one step of where its condition changes."""


class Filing(Enum):
    """The three prices a position is filed by."""

    LIQUIDATION = "liquidation"
    BANKRUPTCY = "bankruptcy"
    MARGIN_CALL = "margin_call"


def cell_of(price: Decimal) -> int:
    """The cell of a positive price: an integer that sorts as the prices do."""
    exponent = price.adjusted()
    with localcontext(SUMS):
        digits = int(price.scaleb(CELL_DIGITS - 1 - exponent))
    return (exponent + _EXPONENT_OFFSET) * _CELL_SPAN + digits


def cell_bounds(cell: int) -> tuple[Decimal, Decimal]:
    """The cell's ``[low, high)``, exact."""
    exponent, digits = divmod(cell, _CELL_SPAN)
    scale = exponent - _EXPONENT_OFFSET - (CELL_DIGITS - 1)
    return Decimal(digits).scaleb(scale), Decimal(digits + 1).scaleb(scale)


def block_of(cell: int) -> int:
    """The block a cell belongs to: its first :data:`BLOCK_DIGITS` digits."""
    exponent, digits = divmod(cell, _CELL_SPAN)
    return exponent * _CELL_SPAN + digits // _PER_BLOCK


def block_cells(block: int) -> tuple[int, int]:
    """The first and the last cell of a block."""
    exponent, digits = divmod(block, _CELL_SPAN)
    first = exponent * _CELL_SPAN + digits * _PER_BLOCK
    return first, first + _PER_BLOCK - 1


def block_bounds(block: int) -> tuple[Decimal, Decimal]:
    """The block's ``[low, high)``, exact."""
    first, last = block_cells(block)
    return cell_bounds(first)[0], cell_bounds(last)[1]


def _floor(value: Fraction) -> Decimal:
    """The 40-digit decimal at or below a positive rational: its cell is the rational's."""
    return _FLOOR.divide(Decimal(value.numerator), Decimal(value.denominator))


def _inverse_units(x: Decimal, price: Decimal) -> int:
    """``x/price`` in units of ``10^-INVERSE_PLACES``, rounded half-even."""
    return round(Fraction(x) * _INVERSE_UNIT / Fraction(price))


class CellSums:
    """The sums of :class:`~monitor.core.stress.Sums` over some positions (a cell's, with
    its ``members``, or a block's), kept so that a position can be taken out again
    exactly: ``count``, ``Σx``, ``ΣM``, ``Σx·E`` (an inverse contract's ``Σx/E`` in units
    of ``10^-INVERSE_PLACES``) and ``Σ N(L)`` (``Σx·L``; inverse: ``Σx/L`` in units).

    A cell holds only the sums its filing needs (:data:`_NEEDS`): most hold one to a
    few positions, and a million-position book has hundreds of thousands of them.
    """

    __slots__ = ("at_liquidation", "count", "margin", "members", "x", "x_entry")

    def __init__(self, members: dict[str, None] | None = None) -> None:
        self.count = 0
        self.x: Decimal = ZERO
        self.margin: Decimal = ZERO
        self.x_entry: Decimal | int = ZERO
        self.at_liquidation: Decimal | int = ZERO
        self.members = members
        """The ids filed in a cell (None: a block, or a position's own sums)."""

    def add(self, other: CellSums) -> None:
        """Add ``other``'s sums (call inside ``SUMS``)."""
        self.count += other.count
        self.x += other.x
        self.margin += other.margin
        self.x_entry += other.x_entry
        self.at_liquidation += other.at_liquidation

    def sums(self, kind: ContractKind) -> Sums:
        """As the stress module's :class:`~monitor.core.stress.Sums`."""
        if kind is ContractKind.LINEAR:
            return Sums(self.count, self.x, Decimal(self.x_entry), self.margin)
        return Sums(
            self.count, self.x, ZERO, self.margin, Fraction(int(self.x_entry), _INVERSE_UNIT)
        )

    def notional_at_liquidation(self, kind: ContractKind) -> Decimal | Fraction:
        """``Σ N(L)``: each position's notional at its own liquidation price."""
        if kind is ContractKind.LINEAR:
            return Decimal(self.at_liquidation)
        return Fraction(int(self.at_liquidation), _INVERSE_UNIT)


def _change_liquidation(into: CellSums, sums: CellSums, sign: int) -> None:
    into.count += sign
    into.x += sign * sums.x
    into.margin += sign * sums.margin
    into.at_liquidation += sign * sums.at_liquidation


def _change_bankruptcy(into: CellSums, sums: CellSums, sign: int) -> None:
    into.count += sign
    into.x += sign * sums.x
    into.margin += sign * sums.margin
    into.x_entry += sign * sums.x_entry


def _change_margin_call(into: CellSums, sums: CellSums, sign: int) -> None:
    into.count += sign
    into.x += sign * sums.x


_Change = Callable[[CellSums, CellSums, int], None]
_CHANGES: dict[Filing, _Change] = {
    Filing.LIQUIDATION: _change_liquidation,
    Filing.BANKRUPTCY: _change_bankruptcy,
    Filing.MARGIN_CALL: _change_margin_call,
}


class Shelf:
    """One side's filings by one price: cells and blocks, with their keys in order.

    ``change`` adds or takes out the sums this filing's questions need
    (:class:`CellSums`): the liquidated set's count, ``Σx``, ``ΣM`` and ``Σ N(L)``;
    the bankrupt set's ``Σx``, ``ΣM`` and ``Σx·E``; the called set's count and ``Σx``.
    """

    __slots__ = ("_change", "block_keys", "blocks", "cell_keys", "cells")

    def __init__(self, filing: Filing) -> None:
        self.cells: dict[int, CellSums] = {}
        self.cell_keys: list[int] = []
        self.blocks: dict[int, CellSums] = {}
        self.block_keys: list[int] = []
        self._change: _Change = _CHANGES[filing]

    def change(self, position_id: str, key: int, sums: CellSums, sign: int) -> None:
        """File (``sign`` 1) or take out (-1) one position's sums in cell ``key`` (call
        inside ``SUMS``)."""
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = CellSums({})
            insort(self.cell_keys, key)
        block_key = block_of(key)
        block = self.blocks.get(block_key)
        if block is None:
            block = self.blocks[block_key] = CellSums()
            insort(self.block_keys, block_key)
        self._change(cell, sums, sign)
        self._change(block, sums, sign)
        members = cell.members
        assert members is not None
        if sign > 0:
            members[position_id] = None
        else:
            del members[position_id]
        if not members:
            del self.cells[key]
            del self.cell_keys[bisect_left(self.cell_keys, key)]
        if block.count == 0:
            del self.blocks[block_key]
            del self.block_keys[bisect_left(self.block_keys, block_key)]

    def beyond(self, key: int, upwards: bool) -> CellSums:
        """The sums of every cell after ``key`` (above it when ``upwards``, else below),
        ``key``'s own cell left out: whole blocks, then the cells of ``key``'s block."""
        total = CellSums()
        block_key = block_of(key)
        keys = self.block_keys
        blocks = (
            keys[bisect_right(keys, block_key) :]
            if upwards
            else keys[: bisect_left(keys, block_key)]
        )
        cells = self.cell_keys
        if upwards:
            at = bisect_right(cells, key)
            near = (k for k in cells[at : at + _PER_BLOCK] if block_of(k) == block_key)
        else:
            at = bisect_left(cells, key)
            near = (k for k in cells[max(0, at - _PER_BLOCK) : at] if block_of(k) == block_key)
        with localcontext(SUMS):
            for k in blocks:
                total.add(self.blocks[k])
            for k in near:
                total.add(self.cells[k])
        return total

    def members(self, key: int) -> Iterable[str]:
        """The ids filed in cell ``key``."""
        cell = self.cells.get(key)
        return () if cell is None or cell.members is None else cell.members

    def between(self, low: int, high: int) -> Iterator[tuple[int, CellSums]]:
        """The cells from ``low`` to ``high`` (both included), in order."""
        keys = self.cell_keys
        for key in keys[bisect_left(keys, low) : bisect_right(keys, high)]:
            yield key, self.cells[key]

    def blocks_between(self, low: int, high: int) -> Iterator[tuple[int, CellSums]]:
        """The blocks holding the cells from ``low`` to ``high``, in order."""
        keys = self.block_keys
        for key in keys[bisect_left(keys, block_of(low)) : bisect_right(keys, block_of(high))]:
            yield key, self.blocks[key]


@dataclass(frozen=True, slots=True)
class Filed:
    """Where one position is filed and what it adds: its cell per filing (None: no
    price does that to it) and its sums."""

    side: Side
    cells: dict[Filing, int | None]
    sums: CellSums


class LiquidationBook:
    """One contract's open positions, filed (module doc); fed by :meth:`apply`.

    ``records`` keeps each filed position's stored bytes: what it was filed
    from, so that a new version takes out exactly what the old one added.
    """

    def __init__(self, contract: Contract, risk: RiskLimits) -> None:
        self.contract = contract
        self.risk = risk
        self.model = model_for(contract)
        self.records: dict[str, bytes] = {}
        self._shelves = {(filing, side): Shelf(filing) for filing in Filing for side in Side}

    def __len__(self) -> int:
        return len(self.records)

    def apply(self, position_id: str, raw: bytes | None) -> None:
        """Make ``position_id``'s filing that of its stored ``raw`` record (None: it is
        gone): the old version's sums out, the new one's in (if it is open).

        A record that cannot be read raises (ValueError or ArithmeticError) with the
        position left out of the book.
        """
        old = self.records.pop(position_id, None)
        if old is not None:
            self._file(position_id, self.filed(self._decode(position_id, old)), -1)
        if raw is None:
            return
        record = self._decode(position_id, raw)
        if record.status in OPEN and record.qty > 0:
            self._file(position_id, self.filed(record), 1)
            self.records[position_id] = raw

    def filed(self, record: PositionRecord) -> Filed:
        """Where ``record`` (open) is filed, and its sums."""
        model = self.model
        liquidation = model.liquidation_price(record)
        call = model.margin_call_price(record, self.risk.margin_call_ratio)
        sums = self.sums(record, liquidation)
        bankruptcy = _bankruptcy_cell(
            model.kind, SIGN[record.side], sums.x, record.entry_price, record.margin
        )
        cells = {
            Filing.LIQUIDATION: None if liquidation is None else cell_of(liquidation),
            Filing.MARGIN_CALL: None if call is None else cell_of(call),
            Filing.BANKRUPTCY: bankruptcy,
        }
        return Filed(record.side, cells, sums)

    def sums(self, record: PositionRecord, liquidation: Decimal | None) -> CellSums:
        """What ``record`` adds to the sums of a cell it is filed in (``liquidation``, its
        liquidation price, gives its notional there)."""
        model = self.model
        sums = CellSums()
        sums.count = 1
        with localcontext(SUMS):
            x = sums.x = exposure(self.contract, model, record)
            sums.margin = record.margin
            if model.kind is ContractKind.LINEAR:
                sums.x_entry = x * record.entry_price
                if liquidation is not None:
                    sums.at_liquidation = x * liquidation
            else:
                sums.x_entry = _inverse_units(x, record.entry_price)
                if liquidation is not None:
                    sums.at_liquidation = _inverse_units(x, liquidation)
        return sums

    def _file(self, position_id: str, filed: Filed, sign: int) -> None:
        with localcontext(SUMS):
            for filing, key in filed.cells.items():
                if key is not None:
                    self._shelves[filing, filed.side].change(position_id, key, filed.sums, sign)

    def _decode(self, position_id: str, raw: bytes) -> PositionRecord:
        return PositionRecord.decode(position_id, self.contract.symbol, raw)

    # ----------------------------------------------------------------- questions

    def selected(self, filing: Filing, side: Side, price: Decimal) -> CellSums:
        """The sums of ``side``'s positions that ``filing``'s condition selects at ``price``:
        the cells beyond ``price``'s, and the members of its cell that the exact test
        passes (and of the next cell, when ``price`` is within a 28-digit step of it)."""
        near = sorted(
            {cell_of(_STEP.next_minus(price)), cell_of(price), cell_of(_STEP.next_plus(price))}
        )
        shelf = self._shelves[filing, side]
        # A long is liquidated (called, bankrupt) below its price: those priced above P.
        long = side is Side.LONG
        total = shelf.beyond(near[-1] if long else near[0], upwards=long)
        test = self._test(filing, price)
        with localcontext(SUMS):
            for key in near:
                for position_id in shelf.members(key):
                    record = self._decode(position_id, self.records[position_id])
                    if test(record):
                        total.add(self.sums(record, None))
        return total

    def _test(self, filing: Filing, price: Decimal) -> _Test:
        model = self.model
        if filing is Filing.LIQUIDATION:
            return lambda record: model.liquidatable(record, price)
        if filing is Filing.MARGIN_CALL:
            ratio = self.risk.margin_call_ratio
            return lambda record: model.assess(record, price).ratio_reached(ratio)
        kind = model.kind

        def bankrupt(record: PositionRecord) -> bool:
            with localcontext(SUMS):
                x = exposure(self.contract, model, record)
                return bankrupt_at(
                    kind, SIGN[record.side], x, record.entry_price, record.margin, price
                )

        return bankrupt

    def stress(self, price: Decimal) -> Stress:
        """What :func:`~monitor.core.stress.stress` answers at ``price`` over the book."""
        if not price > 0:
            raise ValueError(f"a stress price must be positive, got {price}")
        liquidated, bankrupt, called = {}, {}, {}
        for side in Side:
            kind = self.model.kind
            gone = self.selected(Filing.LIQUIDATION, side, price)
            reached = self.selected(Filing.MARGIN_CALL, side, price)
            liquidated[side] = gone.sums(kind)
            with localcontext(SUMS):
                called[side] = Sums(reached.count - gone.count, reached.x - gone.x)
            bankrupt[side] = self.selected(Filing.BANKRUPTCY, side, price).sums(kind)
        return figures(self.contract.symbol, self.model.kind, price, liquidated, bankrupt, called)

    def within(self, mark: Decimal, distances: Iterable[Decimal]) -> Within:
        """The liquidating notional per side at each distance against it (what
        :class:`~monitor.core.stress.Within` counts position by position)."""
        within = Within(self.contract, mark, distances)
        for (side, distance), price in within.prices.items():
            selected = self.selected(Filing.LIQUIDATION, side, price)
            within.take(side, distance, selected.sums(self.model.kind))
        return within

    def liquidation_map(self, low: Decimal, high: Decimal, step: Decimal) -> MapTally:
        """The map of :func:`~monitor.core.stress.liquidation_map` over the book, as a
        filled :class:`~monitor.core.stress.MapTally` (its ``buckets()`` are the answer).

        One sweep over the blocks, then the cells, from ``low``'s cell to ``high``'s,
        comparing cell numbers with the edges' (integers); only the members of a cell
        an edge cuts are read one by one.
        """
        tally = MapTally(self.contract, low, high, step)
        edges, kind = tally.edges, self.model.kind
        fence = _Fence(edges)
        first, last = fence.cells[0], fence.cells[-1]
        for side in Side:
            shelf = self._shelves[Filing.LIQUIDATION, side]
            # Longs at or above high, shorts below low: every cumulative curve counts them.
            outside = (
                shelf.beyond(last, upwards=True)
                if side is Side.LONG
                else shelf.beyond(first, upwards=False)
            )
            tally.add_outside(side, outside.notional_at_liquidation(kind))
            counts = [0] * fence.buckets
            values: list[Decimal | int] = [ZERO if kind is ContractKind.LINEAR else 0] * len(counts)
            with localcontext(SUMS):
                for block_key, block in shelf.blocks_between(first, last):
                    block_first, block_last = block_cells(block_key)
                    n = fence.holding(block_first, block_last)
                    if n is not None:
                        counts[n] += block.count
                        values[n] += block.at_liquidation
                        continue
                    cells = shelf.between(max(first, block_first), min(last, block_last))
                    for key, cell in cells:
                        n = fence.holding(key, key)
                        if n is not None:
                            counts[n] += cell.count
                            values[n] += cell.at_liquidation
                            continue
                        for position_id in shelf.members(key):
                            record = self._decode(position_id, self.records[position_id])
                            tally.add(record, self.model.liquidation_price(record))
            for n, count in enumerate(counts):
                if count:
                    total = CellSums()
                    total.at_liquidation = values[n]
                    tally.add_cell(side, n, count, total.notional_at_liquidation(kind))
        return tally


class _Fence:
    """A map's edges as cell numbers: which bucket holds a run of cells."""

    def __init__(self, edges: list[Decimal]) -> None:
        self.cells = [cell_of(edge) for edge in edges]
        self.clean = [
            cell_bounds(cell)[0] == edge for cell, edge in zip(self.cells, edges, strict=True)
        ]
        self.buckets = len(edges) - 1

    def holding(self, first: int, last: int) -> int | None:
        """The bucket ``[edges[n], edges[n + 1])`` that holds every cell from ``first`` to
        ``last``, or None when an edge cuts one of them or they are not in the map."""
        n = bisect_right(self.cells, first) - 1
        if not 0 <= n < self.buckets:
            return None
        if self.cells[n] == first and not self.clean[n]:
            return None  # the edge lies inside the first cell
        # A cell before the next edge's cell ends at or before that edge.
        return n if last < self.cells[n + 1] else None


def _bankruptcy_cell(
    kind: ContractKind, sign: int, x: Decimal, entry: Decimal, margin: Decimal
) -> int | None:
    """The cell of the price past which ``M + PnL < 0``
    (:func:`~monitor.core.stress.bankrupt_at`), or None when no positive price is:
    ``(x·E − s·M) / x`` linear, ``s·x·E / (M·E + s·x)`` inverse (a long below it, a
    short above). Numerator and denominator are exact; the quotient is taken rounded
    down and rounded up, and when the two fall in one cell, so does the exact price
    between them (else it is found with rationals)."""
    if x <= 0:
        return None
    with localcontext(SUMS):
        if kind is ContractKind.LINEAR:
            numerator, denominator = x * entry - sign * margin, x
        else:
            numerator, denominator = sign * x * entry, margin * entry + sign * x
    if denominator == 0 or (numerator > 0) != (denominator > 0) or numerator == 0:
        return None
    below = cell_of(_FLOOR.divide(numerator, denominator))
    if below == cell_of(_CEILING.divide(numerator, denominator)):
        return below
    return cell_of(_floor(Fraction(numerator) / Fraction(denominator)))
