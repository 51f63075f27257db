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


def _floor(value: Fraction) -> Decimal:
    """The 40-digit decimal at or below a positive rational: its cell is the rational's."""
    return _FLOOR.divide(Decimal(value.numerator), Decimal(value.denominator))


def _inverse_units(x: Decimal, price: Decimal) -> int:
    """``x/price`` in units of ``10^-INVERSE_PLACES``, rounded half-even."""
    return round(Fraction(x) * _INVERSE_UNIT / Fraction(price))


Part = tuple[int, Decimal, Decimal, Decimal | int, Decimal | int]
"""Sums over some positions (one position's, a cell's or a block's): ``count``, ``Σx``,
``ΣM``, ``Σx·E`` (an inverse contract's ``Σx/E`` in units of ``10^-INVERSE_PLACES``)
and ``Σ N(L)`` (``Σx·L``; inverse: ``Σx/L`` in units). A tuple of numbers: Python's
garbage collector stops tracking it, where a book of a million positions has hundreds
of thousands of cells that its passes would otherwise go through."""


class CellSums:
    """A :data:`Part` being added up (a question's answer)."""

    __slots__ = ("at_liquidation", "count", "margin", "x", "x_entry")

    def __init__(self) -> None:
        self.count = 0
        self.x: Decimal = ZERO
        self.margin: Decimal = ZERO
        self.x_entry: Decimal | int = 0
        self.at_liquidation: Decimal | int = 0

    def add(self, part: Part) -> None:
        """Add ``part`` (call inside ``SUMS``)."""
        count, x, margin, x_entry, at_liquidation = part
        self.count += count
        self.x += x
        self.margin += margin
        self.x_entry += x_entry
        self.at_liquidation += at_liquidation

    def sums(self, kind: ContractKind) -> Sums:
        """As the stress module's :class:`~monitor.core.stress.Sums`."""
        if kind is ContractKind.LINEAR:
            return Sums(self.count, self.x, Decimal(self.x_entry), self.margin)
        over_entry = Fraction(int(self.x_entry), _INVERSE_UNIT)
        return Sums(self.count, self.x, ZERO, self.margin, over_entry)

    def notional_at_liquidation(self, kind: ContractKind) -> Decimal | Fraction:
        """``Σ N(L)``: each position's notional at its own liquidation price."""
        return _notional(kind, self.at_liquidation)


def _notional(kind: ContractKind, at_liquidation: Decimal | int) -> Decimal | Fraction:
    if kind is ContractKind.LINEAR:
        return Decimal(at_liquidation)
    return Fraction(int(at_liquidation), _INVERSE_UNIT)


# What each filing's questions need, changed by one position (call inside SUMS): the
# liquidated set's count, Σx, ΣM and Σ N(L); the bankrupt set's Σx, ΣM and Σx·E; the
# called set's count and Σx. The rest of a cell's part stays as it was created.


def _change_liquidation(into: Part, part: Part, sign: int) -> Part:
    count, x, margin, x_entry, at_liquidation = into
    return (
        count + sign,
        x + sign * part[1],
        margin + sign * part[2],
        x_entry,
        at_liquidation + sign * part[4],
    )


def _change_bankruptcy(into: Part, part: Part, sign: int) -> Part:
    count, x, margin, x_entry, at_liquidation = into
    return (
        count + sign,
        x + sign * part[1],
        margin + sign * part[2],
        x_entry + sign * part[3],
        at_liquidation,
    )


def _change_margin_call(into: Part, part: Part, sign: int) -> Part:
    count, x, margin, x_entry, at_liquidation = into
    return (count + sign, x + sign * part[1], margin, x_entry, at_liquidation)


_Change = Callable[[Part, Part, int], Part]
_CHANGES: dict[Filing, _Change] = {
    Filing.LIQUIDATION: _change_liquidation,
    Filing.BANKRUPTCY: _change_bankruptcy,
    Filing.MARGIN_CALL: _change_margin_call,
}


class Shelf:
    """One side's filings by one price: each cell's :data:`Part` and member ids, each
    block's part, with the cell and block numbers in order."""

    __slots__ = ("_change", "_zero", "block_keys", "blocks", "cell_keys", "cells", "ids")

    def __init__(self, filing: Filing, zero: Part) -> None:
        self.cells: dict[int, Part] = {}
        self.ids: dict[int, dict[str, None]] = {}
        self.cell_keys: list[int] = []
        self.blocks: dict[int, Part] = {}
        self.block_keys: list[int] = []
        self._change: _Change = _CHANGES[filing]
        self._zero = zero

    def change(self, position_id: str, key: int, part: Part, sign: int) -> None:
        """File (``sign`` 1) or take out (-1) one position's part in cell ``key`` (call
        inside ``SUMS``)."""
        cells, blocks = self.cells, self.blocks
        cell = cells.get(key)
        if cell is None:
            cell = self._zero
            self.ids[key] = {}
            insort(self.cell_keys, key)
        block_key = block_of(key)
        block = blocks.get(block_key)
        if block is None:
            block = self._zero
            insort(self.block_keys, block_key)
        cell = cells[key] = self._change(cell, part, sign)
        block = blocks[block_key] = self._change(block, part, sign)
        members = self.ids[key]
        if sign > 0:
            members[position_id] = None
        else:
            del members[position_id]
        if not members:
            del cells[key], self.ids[key]
            del self.cell_keys[bisect_left(self.cell_keys, key)]
        if block[0] == 0:
            del blocks[block_key]
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
        return self.ids.get(key, ())

    def between(self, low: int, high: int) -> Iterator[tuple[int, Part]]:
        """The cells from ``low`` to ``high`` (both included), in order."""
        keys = self.cell_keys
        for key in keys[bisect_left(keys, low) : bisect_right(keys, high)]:
            yield key, self.cells[key]

    def blocks_between(self, low: int, high: int) -> Iterator[tuple[int, Part]]:
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
    part: Part


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
        zero: Part = (0, ZERO, ZERO, ZERO, ZERO)
        if self.model.kind is ContractKind.INVERSE:
            zero = (0, ZERO, ZERO, 0, 0)
        self._shelves = {(filing, side): Shelf(filing, zero) for filing in Filing for side in Side}

    def __len__(self) -> int:
        return len(self.records)

    def apply(self, position_id: str, raw: bytes | None) -> None:
        """Make ``position_id``'s filing that of its stored ``raw`` record (None: it is
        gone): the old version's sums out, the new one's in (if it is open).

        A record that cannot be read raises (ValueError or ArithmeticError) with the
        position left out of the book.
        """
        old = self.records.pop(position_id, None)
        before = None if old is None else self._decode(position_id, old)
        try:
            record = None if raw is None else self._decode(position_id, raw)
        except (ValueError, ArithmeticError):
            if before is not None:
                self._file(position_id, self.filed(before), -1)
            raise
        if raw is None or record is None or record.status not in OPEN or record.qty <= 0:
            if before is not None:
                self._file(position_id, self.filed(before), -1)
            return
        # A status change alone (healthy to margin call and back) leaves the position
        # where it was filed, with the same sums: no price is solved again.
        if before is None or before.position != record.position:
            if before is not None:
                self._file(position_id, self.filed(before), -1)
            self._file(position_id, self.filed(record), 1)
        self.records[position_id] = raw

    def filed(self, record: PositionRecord) -> Filed:
        """Where ``record`` (open) is filed, and its sums."""
        model = self.model
        liquidation = model.liquidation_price(record)
        call = model.margin_call_price(record, self.risk.margin_call_ratio)
        part = self.part(record, liquidation)
        bankruptcy = _bankruptcy_cell(
            model.kind, SIGN[record.side], part[1], record.entry_price, record.margin
        )
        cells = {
            Filing.LIQUIDATION: None if liquidation is None else cell_of(liquidation),
            Filing.MARGIN_CALL: None if call is None else cell_of(call),
            Filing.BANKRUPTCY: bankruptcy,
        }
        return Filed(record.side, cells, part)

    def part(self, record: PositionRecord, liquidation: Decimal | None) -> Part:
        """What ``record`` adds to a cell it is filed in (``liquidation``, its liquidation
        price, gives its notional there)."""
        model = self.model
        with localcontext(SUMS):
            x = exposure(self.contract, model, record)
            if model.kind is ContractKind.LINEAR:
                at = ZERO if liquidation is None else x * liquidation
                return (1, x, record.margin, x * record.entry_price, at)
            units = 0 if liquidation is None else _inverse_units(x, liquidation)
            return (1, x, record.margin, _inverse_units(x, record.entry_price), units)

    def _file(self, position_id: str, filed: Filed, sign: int) -> None:
        with localcontext(SUMS):
            for filing, key in filed.cells.items():
                if key is not None:
                    self._shelves[filing, filed.side].change(position_id, key, filed.part, sign)

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
                        total.add(self.part(record, None))
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
                        counts[n] += block[0]
                        values[n] += block[4]
                        continue
                    cells = shelf.between(max(first, block_first), min(last, block_last))
                    for key, cell in cells:
                        n = fence.holding(key, key)
                        if n is not None:
                            counts[n] += cell[0]
                            values[n] += cell[4]
                            continue
                        for position_id in shelf.members(key):
                            record = self._decode(position_id, self.records[position_id])
                            tally.add(record, self.model.liquidation_price(record))
            for n, count in enumerate(counts):
                if count:
                    tally.add_cell(side, n, count, _notional(kind, values[n]))
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
