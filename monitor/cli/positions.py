"""``liqmon positions list | show``: the book as a table or JSON, through the API's own queries."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import orjson

from monitor.config.model import Settings
from monitor.core.evaluation import Quote
from monitor.core.margin import Side
from monitor.service.loading import open_read_model

if TYPE_CHECKING:
    from monitor.web.api import Listing, PositionsQuery


TABLE_COLUMNS = (
    "id",
    "account",
    "symbol",
    "side",
    "qty",
    "mark_price",
    "liquidation_price",
    "distance_pct",
    "margin_ratio",
    "status",
)
RATIO_PLACES = 4


def price_places(quote: Quote | None, row: Mapping[str, Any]) -> int:
    """Decimals a table shows a symbol's prices with: those of its mark as the venue
    quoted it (``55000`` → 0, ``11794.15000000`` → 8), else of the row's entry price."""
    exponent = quote.mark.as_tuple().exponent if quote is not None else None
    if not isinstance(exponent, int):
        exponent = Decimal(str(row["entry_price"])).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _rounded(text: str | None, places: int, rounding: str) -> str:
    if text is None:
        return "-"
    # Fixed decimals, trailing zeros kept: a column of prices lines up.
    return format(Decimal(text).quantize(Decimal(1).scaleb(-places), rounding), "f")


def table_cells(row: Mapping[str, Any], quote: Quote | None) -> list[str]:
    """A :func:`describe` row as table cells: prices at the symbol's precision
    (:func:`price_places`), the ratio at :data:`RATIO_PLACES` decimals.

    A liquidation price is rounded towards the mark (a long's up, a short's down),
    so the table never shows more room than there is. JSON keeps every digit.
    """
    places = price_places(quote, row)
    toward_mark = ROUND_CEILING if row["side"] == Side.LONG.value else ROUND_FLOOR
    shown = {
        **{column: "-" if row[column] is None else str(row[column]) for column in TABLE_COLUMNS},
        "mark_price": _rounded(row["mark_price"], places, ROUND_HALF_EVEN),
        "liquidation_price": _rounded(row["liquidation_price"], places, toward_mark),
        "margin_ratio": _rounded(row["margin_ratio"], RATIO_PLACES, ROUND_HALF_EVEN),
    }
    return [shown[column] for column in TABLE_COLUMNS]


def count_line(listing: Listing, query: PositionsQuery) -> str:
    """The closing line of a table: how many of how many matching positions it shows."""
    shown = len(listing.rows)
    if listing.matched is None:
        return f"({shown:,} {query.selection} shown; not all were read)"
    return f"({shown:,} of {max(shown, listing.matched):,} {query.selection} shown)"


async def list_positions(settings: Settings, query: PositionsQuery, as_json: bool) -> None:
    """Print the positions ``query`` selects, closest to liquidation first: the
    same selection as ``GET /api/positions`` (:meth:`monitor.web.api.Api.positions`)."""
    from monitor.web.api import Api

    reads = open_read_model(settings)
    try:
        api = Api(reads, settings.symbols)
        listing = await api.positions(query, count=True)
        quotes = await api.quotes(query.symbols)
    finally:
        await reads.aclose()
    if as_json:
        document = listing.document(query.limit)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = [list(TABLE_COLUMNS)] + [
        table_cells(row, quotes[row["symbol"]]) for row in listing.rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_COLUMNS))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
    sys.stdout.write(count_line(listing, query) + "\n")


async def show_position(settings: Settings, position_id: str) -> None:
    """Print one position as JSON, as ``GET /api/positions/{id}`` answers it.

    Raises :class:`monitor.web.api.ApiError` (404) when it is unknown.
    """
    from monitor.web.api import Api

    reads = open_read_model(settings)
    try:
        row = await Api(reads, settings.symbols).position(position_id)
    finally:
        await reads.aclose()
    sys.stdout.write(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode() + "\n")
