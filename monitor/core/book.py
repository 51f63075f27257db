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
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
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

INVERSE_PLACES = 60
"""Decimal places kept of each ``x/E`` and ``x/L`` of an inverse contract."""

_CELL_SPAN: int = 10**CELL_DIGITS
_PER_BLOCK: int = 10 ** (CELL_DIGITS - BLOCK_DIGITS)
_EXPONENT_OFFSET = 1_000
_INVERSE_UNIT: int = 10**INVERSE_PLACES
_FLOOR = Context(prec=40, rounding=ROUND_FLOOR)
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


@dataclass(slots=True)
class CellSums:
    """The sums of :class:`~monitor.core.stress.Sums` over some positions, kept so that
    a position can be taken out again exactly (``x/E`` and ``x·L`` of an inverse
    contract in units of ``10^-INVERSE_PLACES``)."""

    count: int = 0
    x: Decimal = Decimal(0)
    x_entry: Decimal = Decimal(0)
    margin: Decimal = Decimal(0)
    x_over_entry: int = 0
    at_liquidation: Decimal = Decimal(0)
    at_liquidation_units: int = 0

    def change(self, other: CellSums, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) ``other``'s sums (call inside ``SUMS``)."""
        self.count += sign * other.count
        self.x += sign * other.x
        self.x_entry += sign * other.x_entry
        self.margin += sign * other.margin
        self.x_over_entry += sign * other.x_over_entry
        self.at_liquidation += sign * other.at_liquidation
        self.at_liquidation_units += sign * other.at_liquidation_units

    def sums(self) -> Sums:
        """As the stress module's :class:`~monitor.core.stress.Sums`."""
        return Sums(
            self.count,
            self.x,
            self.x_entry,
            self.margin,
            Fraction(self.x_over_entry, _INVERSE_UNIT),
        )

    def notional_at_liquidation(self, kind: ContractKind) -> Decimal | Fraction:
        """``Σ N(L)``: each position's notional at its own liquidation price."""
        if kind is ContractKind.LINEAR:
            return self.at_liquidation
        return Fraction(self.at_liquidation_units, _INVERSE_UNIT)


@dataclass(slots=True)
class Cell:
    """One cell: its members' ids and their sums."""

    sums: CellSums = field(default_factory=CellSums)
    members: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class Shelf:
    """One side's filings by one price: cells and blocks, with their keys in order."""

    cells: dict[int, Cell] = field(default_factory=dict)
    cell_keys: list[int] = field(default_factory=list)
    blocks: dict[int, CellSums] = field(default_factory=dict)
    block_keys: list[int] = field(default_factory=list)

    def change(self, position_id: str, key: int, sums: CellSums, sign: int) -> None:
        """File (``sign`` 1) or take out (-1) one position's sums in cell ``key``."""
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
            insort(self.cell_keys, key)
        block_key = block_of(key)
        block = self.blocks.get(block_key)
        if block is None:
            block = self.blocks[block_key] = CellSums()
            insort(self.block_keys, block_key)
        with localcontext(SUMS):
            cell.sums.change(sums, sign)
            block.change(sums, sign)
        if sign > 0:
            cell.members[position_id] = None
        else:
            del cell.members[position_id]
        if not cell.members:
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
                total.change(self.blocks[k], 1)
            for k in near:
                total.change(self.cells[k].sums, 1)
        return total

    def members(self, key: int) -> Iterable[str]:
        """The ids filed in cell ``key``."""
        cell = self.cells.get(key)
        return () if cell is None else cell.members

    def between(self, low: int, high: int) -> Iterator[tuple[int, Cell]]:
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
        self._shelves = {(filing, side): Shelf() for filing in Filing for side in Side}

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
        with localcontext(SUMS):
            bankruptcy = _bankruptcy(
                model.kind, SIGN[record.side], sums.x, record.entry_price, record.margin
            )
        cells = {
            Filing.LIQUIDATION: None if liquidation is None else cell_of(liquidation),
            Filing.MARGIN_CALL: None if call is None else cell_of(call),
            Filing.BANKRUPTCY: None if bankruptcy is None else cell_of(_floor(bankruptcy)),
        }
        return Filed(record.side, cells, sums)

    def sums(self, record: PositionRecord, liquidation: Decimal | None) -> CellSums:
        """What ``record`` adds to the sums of a cell it is filed in (``liquidation``, its
        liquidation price, gives its notional there)."""
        model = self.model
        with localcontext(SUMS):
            x = exposure(self.contract, model, record)
            entry, margin = record.entry_price, record.margin
            sums = CellSums(1, x, Decimal(0), margin)
            if model.kind is ContractKind.LINEAR:
                sums.x_entry = x * entry
                if liquidation is not None:
                    sums.at_liquidation = x * liquidation
            else:
                sums.x_over_entry = _inverse_units(x, entry)
                if liquidation is not None:
                    sums.at_liquidation_units = _inverse_units(x, liquidation)
        return sums

    def _file(self, position_id: str, filed: Filed, sign: int) -> None:
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
                        total.change(self.sums(record, None), 1)
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
            gone = self.selected(Filing.LIQUIDATION, side, price)
            reached = self.selected(Filing.MARGIN_CALL, side, price)
            with localcontext(SUMS):
                reached.change(gone, -1)
            liquidated[side] = gone.sums()
            called[side] = reached.sums()
            bankrupt[side] = self.selected(Filing.BANKRUPTCY, side, price).sums()
        return figures(self.contract.symbol, self.model.kind, price, liquidated, bankrupt, called)

    def within(self, mark: Decimal, distances: Iterable[Decimal]) -> Within:
        """The liquidating notional per side at each distance against it (what
        :class:`~monitor.core.stress.Within` counts position by position)."""
        within = Within(self.contract, mark, distances)
        for (side, distance), price in within.prices.items():
            within.take(side, distance, self.selected(Filing.LIQUIDATION, side, price).sums())
        return within

    def liquidation_map(self, low: Decimal, high: Decimal, step: Decimal) -> MapTally:
        """The map of :func:`~monitor.core.stress.liquidation_map` over the book, as a
        filled :class:`~monitor.core.stress.MapTally` (its ``buckets()`` are the answer)."""
        tally = MapTally(self.contract, low, high, step)
        edges, kind = tally.edges, self.model.kind
        first, last = cell_of(edges[0]), cell_of(edges[-1])
        for side in Side:
            shelf = self._shelves[Filing.LIQUIDATION, side]
            # Longs at or above high, shorts below low: every cumulative curve counts them.
            outside = (
                shelf.beyond(last, upwards=True)
                if side is Side.LONG
                else shelf.beyond(first, upwards=False)
            )
            tally.add_outside(side, outside.notional_at_liquidation(kind))
            for block_key, block in shelf.blocks_between(first, last):
                n = _bucket_holding(edges, *block_bounds(block_key))
                if n is not None:
                    tally.add_cell(side, n, block.count, block.notional_at_liquidation(kind))
                    continue
                block_first, block_last = block_cells(block_key)
                for key, cell in shelf.between(max(first, block_first), min(last, block_last)):
                    n = _bucket_holding(edges, *cell_bounds(key))
                    if n is not None:
                        sums = cell.sums
                        tally.add_cell(side, n, sums.count, sums.notional_at_liquidation(kind))
                        continue
                    for position_id in cell.members:
                        record = self._decode(position_id, self.records[position_id])
                        tally.add(record, self.model.liquidation_price(record))
        return tally


def _bucket_holding(edges: list[Decimal], low: Decimal, high: Decimal) -> int | None:
    """The number of the bucket ``[edges[n], edges[n + 1])`` that holds all of ``[low,
    high)``, or None when an edge cuts it or it is not inside the map."""
    n = bisect_right(edges, low) - 1
    if 0 <= n < len(edges) - 1 and high <= edges[n + 1]:
        return n
    return None


def _bankruptcy(
    kind: ContractKind, sign: int, x: Decimal, entry: Decimal, margin: Decimal
) -> Fraction | None:
    """The price past which ``M + PnL < 0`` (:func:`~monitor.core.stress.bankrupt_at`),
    exactly, or None when no positive price is: ``E − s·M/x`` linear,
    ``s·x·E / (M·E + s·x)`` inverse (a long below it, a short above)."""
    if x <= 0:
        return None
    if kind is ContractKind.LINEAR:
        price = Fraction(entry) - sign * Fraction(margin) / Fraction(x)
    else:
        denominator = Fraction(margin) * Fraction(entry) + sign * Fraction(x)
        if denominator == 0:
            return None
        price = sign * Fraction(x) * Fraction(entry) / denominator
    return price if price > 0 else None
