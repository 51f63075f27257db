"""``/api/stress`` and ``/api/liquidation-map``: where the positions come from, then the
pure math.

In the daemon (an :class:`~monitor.web.api.Api` with ``books``), both answer from
the symbol's liquidation book (:mod:`monitor.state.books`,
:class:`~monitor.core.book.LiquidationBook`), brought up to date with every write
made before the request: the cost is the book's cells, not its size, and nothing
is walked in the daemon's loop beside its ticks. A book still being filed after
:data:`BOOK_WAIT_S` is a 503 saying how far it is.

A one-off command (``liqmon stress``, ``liqmon map``: no book to keep) reads
instead the positions the trigger index says may count, feeding each to the
core's tallies (:class:`~monitor.core.stress.StressTally`,
:class:`~monitor.core.stress.MapTally`) as it is read. Every open position sits in
its side's worsening trigger set at a score never on the far side of its
liquidation price (a long's score is at or above it, a short's at or below), so

* stress at ``P`` reads a long side's worsening set from ``P`` up (a short
  side's from ``P`` down) and the side's improving set (positions in margin
  call, which may be in margin call at ``P`` though their liquidation price
  is beyond it);
* the map of ``[low, high)`` reads the longs scored at or above ``low`` and
  the shorts scored at or below ``high`` (its cumulative curves count every
  long liquidating at or above ``low`` and every short below ``high``).

That walk is the read model's (:meth:`~monitor.state.readmodel.ReadModel.reach_in_turns`):
each bound is widened by one ulp of the float score so that rounding a price to a
double never leaves a position out, and the exact tests in the core decide. Its
pages are not one snapshot: a position moved while they are read counts as it
stood when its record was read. The map's liquidation prices come from the API's
record cache (keyed by the stored bytes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from monitor.core.book import LiquidationBook
from monitor.core.margin import Contract, Side
from monitor.core.position import PositionRecord
from monitor.core.stress import Bucket, MapTally, Stress, StressTally, bucket_edges
from monitor.core.triggers import TriggerSet
from monitor.state.books import BookPending
from monitor.web.api import Api, ApiError, bad_request

BOOK_WAIT_S = 5.0
"""How long a stress or map waits for its symbol's book to be filed or brought up to date
before it is refused (503, saying how far the filing is)."""

MAX_MOVE = Decimal(10)
"""The largest relative move accepted (``move`` lies in ``(-1, MAX_MOVE]``)."""


def parse_price(name: str, value: str) -> Decimal:
    """A positive, finite decimal price (``price``, ``low``, ``high``, ``step``)."""
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise bad_request(f"{name} must be a positive decimal, got {value!r}") from None
    if not price.is_finite() or price <= 0 or price.adjusted() > 27 or price.adjusted() < -27:
        raise bad_request(f"{name} must be a positive decimal, got {value!r}")
    return price


def parse_move(value: str) -> Decimal:
    """A relative move of the mark above −1 (−0.1: ten per cent down)."""
    try:
        move = Decimal(value)
    except InvalidOperation:
        raise bad_request(f"move must be a decimal above -1, got {value!r}") from None
    if not move.is_finite() or not -1 < move <= MAX_MOVE or move.adjusted() < -27:
        raise bad_request(f"move must be a decimal above -1 and at most {MAX_MOVE}, got {value!r}")
    return move


def parse_symbols(value: str, symbols: Sequence[str]) -> list[str]:
    """A comma-separated list of configured symbols, each once."""
    names = value.split(",")
    unknown = [name for name in names if name not in symbols]
    if unknown:
        raise bad_request(f"unknown symbol {unknown[0]!r} (configured: {', '.join(symbols)})")
    if len(set(names)) != len(names):
        raise bad_request("a symbol is named twice")
    return names


@dataclass(frozen=True, slots=True)
class StressQuery:
    """Which symbols, at which price or move."""

    symbols: list[str]
    price: Decimal | None
    move: Decimal | None
    everywhere: bool = False
    """No symbol named: every configured symbol that has a mark."""


def stress_query(
    configured: Sequence[str], symbol: str | None, price: str | None, move: str | None
) -> StressQuery:
    """The query of ``GET /api/stress`` (and ``liqmon stress``); a 400 when it is not one."""
    if (price is None) == (move is None):
        raise bad_request("give exactly one of price and move")
    if symbol is None and price is not None:
        raise bad_request("a price needs one symbol")
    symbols = list(configured) if symbol is None else parse_symbols(symbol, configured)
    if price is not None and len(symbols) != 1:
        raise bad_request("a price needs one symbol (a move may name several)")
    return StressQuery(
        symbols,
        parse_price("price", price) if price is not None else None,
        parse_move(move) if move is not None else None,
        everywhere=symbol is None,
    )


async def stress_documents(api: Api, query: StressQuery) -> list[dict[str, Any]]:
    """Per symbol, the stress figures at the query's price, or at its move from the mark
    (a 409 for a symbol named with no mark stored yet)."""
    quotes = await api.quotes(query.symbols)
    documents = []
    for symbol in query.symbols:
        quote = quotes[symbol]
        if query.everywhere and quote is None:
            continue  # every symbol was asked for: those with a mark
        mark = quote.mark if quote is not None else None
        if query.price is not None:
            price = query.price
        else:
            assert query.move is not None
            if mark is None:
                raise ApiError(409, f"no mark stored for {symbol} yet: give a price")
            price = mark * (1 + query.move)
        if api.books is not None:
            result = (await _book(api, symbol)).stress(price)
        else:
            result = await _walked_stress(api, api.contracts[symbol], price)
        document = result.document(mark)
        document["move"] = None if query.move is None else str(query.move)
        documents.append(document)
    return documents


async def map_document(
    api: Api, symbol: str, low: Decimal, high: Decimal, step: Decimal
) -> dict[str, Any]:
    """The liquidation map of ``symbol`` over ``[low, high)`` in buckets of ``step``."""
    if not low < high:
        raise bad_request(f"low must be below high, got {low} and {high}")
    try:
        bucket_edges(low, high, step)
    except ValueError as refused:
        raise bad_request(str(refused)) from None
    contract = api.contracts[symbol]
    quote = (await api.quotes([symbol]))[symbol]
    if api.books is not None:
        tally = (await _book(api, symbol)).liquidation_map(low, high, step)
    else:
        tally = MapTally(contract, low, high, step)
        for side, reach in ((Side.LONG, low), (Side.SHORT, high)):
            trigger_set = TriggerSet.worsening_of(side)
            async for position_id, raw in _read(api, contract, trigger_set, reach):
                tally.add(*api.cache.get(contract, position_id, raw))
    buckets: list[Bucket] = tally.buckets()
    return {
        "symbol": symbol,
        "mark": None if quote is None else str(quote.mark),
        "low": str(low),
        "high": str(high),
        "step": str(step),
        "buckets": [bucket.document() for bucket in buckets],
    }


async def _walked_stress(api: Api, contract: Contract, price: Decimal) -> Stress:
    """The stress at ``price``, from the positions it may reach (a one-off command's)."""
    tally = StressTally(contract, price, api.risk)
    for side in (Side.LONG, Side.SHORT):
        for trigger_set, reach in (
            (TriggerSet.worsening_of(side), price),
            (TriggerSet.improving_of(side), None),
        ):
            async for position_id, raw in _read(api, contract, trigger_set, reach):
                tally.add(PositionRecord.decode(position_id, contract.symbol, raw))
    return tally.result()


async def _book(api: Api, symbol: str) -> LiquidationBook:
    """The daemon's book of ``symbol``, up to date (a 503 while it is being filed)."""
    assert api.books is not None
    try:
        return await api.books.book(symbol, BOOK_WAIT_S)
    except BookPending as pending:
        raise ApiError(503, str(pending)) from None


def _read(
    api: Api, contract: Contract, trigger_set: TriggerSet, price: Decimal | None
) -> AsyncIterator[tuple[str, bytes]]:
    """The stored ``(id, record)`` of the trigger set's members a mark at ``price`` reaches
    (None: all of them), a page a round trip, with the loop given back as the caller
    goes (:meth:`~monitor.state.readmodel.ReadModel.reach_in_turns`): a stress or a map
    is computed in the daemon's loop, beside its ticks."""
    return api.reads.reach_in_turns(contract.symbol, trigger_set, price)
