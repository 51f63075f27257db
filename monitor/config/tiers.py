"""Venues' own tier tables, as they publish them, turned into ``[symbols.NAME]`` TOML.

Pure: a decoded JSON document in, the core's tier types and TOML text out; the
command that reads a file or asks a venue is :mod:`monitor.cli.tiers`. It lives
in the configuration layer because what it writes is configuration (the keys
of :mod:`monitor.config.model`) and, like the loader, it turns an outside
document into checked values or one line naming the problem
(:class:`TierDocumentError`). Every table is also handed to its venue's model
(:mod:`monitor.core.venues`), so what is printed is a table that model accepts.

The formats, each read as the venue's endpoint returns it (numbers as JSON
numbers or strings, read as exact decimals):

binance — ``GET /fapi/v1/leverageBracket`` (USDⓈ-M; developers.binance.com,
  "Notional and Leverage Brackets (USER_DATA)") and ``GET /dapi/v2/leverageBracket``
  (COIN-M, "Notional Bracket for Symbol"): an array of ``{"symbol", "brackets":
  [{"bracket", "initialLeverage", "notionalCap", "notionalFloor",
  "maintMarginRatio", "cum"}]}`` (COIN-M: ``qtyCap``, ``qtyFloor``, in coin;
  the page's example spells the floor ``qtylFloor``, accepted too), or one such
  object when a symbol was asked for; ``/dapi/v1`` names the row ``pair``. The
  brackets are the account's own (``notionalCoef`` appears when they differ
  from the symbol's default) and are taken as given.
  Checked: floors follow caps from 0, and Binance's maintenance amount
  ``cum_n = floor_n × (mmr_n − mmr_{n−1}) + cum_{n−1}`` (its COIN-M liquidation
  FAQ) holds exactly; the bracket that breaks it is named.

bybit — ``GET /v5/market/risk-limit`` (bybit-exchange.github.io/docs/v5/market/risk-limit):
  ``{"retCode": 0, "result": {"category", "list": [{"id", "symbol",
  "riskLimitValue", "maintenanceMargin", "initialMargin", "isLowestRisk",
  "maxLeverage", "mmDeduction"}]}}``. The page calls the rates "Maintain margin
  rate" without a unit and its example reads ``"maintenanceMargin": "0.5",
  "initialMargin": "1"`` beside ``"maxLeverage": "100.00"`` (percent), while
  the live API answers fractions (``"0.005"``, ``"0.01"``); so the unit is read
  from each row: ``initialMargin × maxLeverage`` is 1 for fractions and 100
  for percent, anything else is refused. ``mmDeduction`` may be ``""`` (none).
  Rows may come in any order; they are sorted by ``riskLimitValue``.

okx — ``GET /api/v5/public/position-tiers`` (okx.com/docs-v5, "Get position
  tiers"): ``{"code": "0", "data": [{"instFamily", "instId", "uly", "tier",
  "minSz", "maxSz", "mmr", "imr", "maxLever", ...}]}``, sizes in contracts,
  rates as fractions. A table is named by its ``instFamily`` (``instId`` or
  ``uly`` when that is empty); a family quoted in ``USD`` (``BTC-USD``) is
  coin-margined, so inverse.

gate — ``GET /futures/{settle}/risk_limit_tiers`` (Gate API v4,
  ``FuturesRiskLimitTier``): an array of ``{"tier", "risk_limit",
  "initial_rate", "maintenance_rate", "leverage_max", "contract",
  "deduction"}``; a contract settled in ``USD`` (``BTC_USD``, settle ``btc``) is
  inverse. Checked like Binance's: ``deduction_n = risk_limit_{n−1} ×
  (rate_n − rate_{n−1}) + deduction_{n−1}``, which keeps MM continuous (the
  Gate model refuses a table that does not).

hyperliquid — ``POST /info {"type": "meta"}`` (hyperliquid.gitbook.io,
  for-developers/api/info-endpoint/perpetuals): ``{"universe": [{"name",
  "szDecimals", "maxLeverage", "marginTableId", ...}], "marginTables": [[id,
  {"description", "marginTiers": [{"lowerBound", "maxLeverage"}]}]]}``; a table
  missing from ``marginTables`` is what ``{"type": "marginTable", "id": N}``
  answers. An id below 50 is a single tier whose maximum leverage is the id (as
  the polynode Hyperliquid API docs, "margin-table", describe the ids); an
  asset without ``marginTableId`` has one tier at its ``maxLeverage``.

The TOML written per venue, the keys of ``[symbols.NAME]`` as
:mod:`monitor.config.model` reads them (:data:`ROW_KEYS` maps each row key to
the field of the core's tier type it holds; see :func:`symbol_table`)::

    binance:     contract, [contract_size (COIN-M)], [close_fee_rate (--taker-fee)],
                 brackets = [{notional_cap, mmr, cum}, ..., {mmr, cum}]
    bybit:       contract, [contract_size = "1" (inverse)],
                 tiers = [{risk_limit_value, mmr, mm_deduction}]
    okx:         contract, contract_size (ctVal), taker_fee_rate,
                 tiers = [{min_size, max_size, mmr}]
    gate:        contract, contract_size (quanto_multiplier), taker_fee_rate,
                 tiers = [{risk_limit, maintenance_rate, deduction}]
    hyperliquid: contract = "linear", tiers = [{lower_bound, max_leverage}]

each with ``venue = "V"`` first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from itertools import pairwise
from typing import Any

from monitor.core.errors import RequestFailed
from monitor.core.margin import ContractKind
from monitor.core.venues import (
    BinanceBracket,
    BinanceModel,
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
)
from monitor.core.venues.base import EXACT
from monitor.core.wire import decimal_str

VENUES = ("binance", "bybit", "okx", "gate", "hyperliquid")
"""The venues whose tier formats are read, as ``--venue`` and ``venue =`` spell them."""

Tier = BinanceBracket | BybitRiskLimit | OkxTier | GateTier | HyperliquidTier

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
_UNIT_TOLERANCE = Decimal("0.05")
"""How far ``initialMargin × maxLeverage`` may stray from 1 (or 100): Bybit rounds
``maxLeverage`` to cents (``66.67`` for 1.5 %)."""
_SINGLE_TIER_IDS = 50
"""Hyperliquid margin table ids below this are one tier at the id's leverage."""


class TierDocumentError(RequestFailed):
    """A document that cannot be turned into a table: the message is one line naming why.

    ``liqmon tiers`` answers it with exit status 1 (the command could not be done as asked).
    """

    status = 1


@dataclass(frozen=True, slots=True)
class VenueTable:
    """One venue symbol's tiers as its venue publishes them, in the core's tier types.

    ``kind`` is what the document says about the contract (Binance's notional or
    quantity brackets, Bybit's ``category``, a family quoted in USD), or None
    when it says nothing.
    """

    venue: str
    venue_symbol: str
    kind: ContractKind | None
    tiers: tuple[Tier, ...]


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """What the tier table does not carry: the contract's kind, size and taker fee."""

    kind: ContractKind
    contract_size: Decimal | None = None
    taker_fee_rate: Decimal | None = None


# ---------------------------------------------------------------------------- reading


def load_document(body: bytes | str, origin: str) -> Any:
    """A JSON body decoded with every number an exact Decimal; ``origin`` names it in errors."""
    try:
        return json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError) as error:
        raise TierDocumentError(f"{origin}: not JSON ({error})") from None


def parse_tables(venue: str, document: Any) -> dict[str, VenueTable]:
    """Every venue symbol's table in ``document``, in the order the venue lists them."""
    try:
        parse = _PARSERS[venue]
    except KeyError:
        raise TierDocumentError(f"unknown venue {venue!r}; one of {', '.join(VENUES)}") from None
    return parse(document)


def _decimal(
    row: Mapping[str, Any], key: str, where: str, *, empty: Decimal | None = None
) -> Decimal:
    """``row[key]`` as a finite Decimal (a JSON number or a numeric string)."""
    if key not in row:
        raise TierDocumentError(f"{where}: no {key!r}")
    value = row[key]
    if value == "" and empty is not None:
        return empty
    if isinstance(value, bool) or not isinstance(value, Decimal | str):
        raise TierDocumentError(f"{where}: {key} must be a number, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise TierDocumentError(f"{where}: {key} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise TierDocumentError(f"{where}: {key} must be finite, got {value!r}")
    return number


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise TierDocumentError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _objects(value: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise TierDocumentError(f"{where} must be an array, got {_json_kind(value)}")
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise TierDocumentError(f"{where}[{index}] must be an object, got {_json_kind(row)}")
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, Decimal) else type(value).__name__


def _grouped(
    rows: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], str]
) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def _check_recurrence(
    where: str,
    label: str,
    rows: Sequence[tuple[str, Decimal, Decimal, Decimal]],
    names: tuple[str, str, str],
) -> None:
    """Each row's amount is ``floor × (rate − previous rate) + previous amount``, exactly.

    ``rows`` holds (row name, floor, rate, amount) from the lowest tier up;
    ``names`` are the venue's names for floor, rate and amount, for the message.
    """
    previous_rate = ZERO
    previous_amount = ZERO
    floor_name, rate_name, amount_name = names
    for name, floor, rate, amount in rows:
        with localcontext(EXACT):  # exact, not to the default context's 28 digits
            expected = floor * (rate - previous_rate) + previous_amount
        if amount != expected:
            raise TierDocumentError(
                f"{where}: {label} {name}: {amount_name} is {decimal_str(amount)}, but "
                f"{floor_name} × ({rate_name} − the previous {rate_name}) + the previous "
                f"{amount_name} is {decimal_str(expected)}: the maintenance margin would jump "
                f"at {decimal_str(floor)}"
            )
        previous_rate, previous_amount = rate, amount


# ---------------------------------------------------------------------------- binance


def _binance(document: Any) -> dict[str, VenueTable]:
    expected = 'not a Binance leverageBracket response: expected [{"symbol", "brackets": [...]}]'
    if isinstance(document, dict) and "brackets" not in document:
        if isinstance(document.get("code"), Decimal) and "msg" in document:
            raise TierDocumentError(
                f"Binance answered an error: code {document['code']}: {document['msg']}"
            )
        raise TierDocumentError(f"{expected}, got an object without brackets")
    entries = [document] if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise TierDocumentError(f"{expected}, got {_json_kind(entries)}")
    where = "leverageBracket"
    tables: dict[str, VenueTable] = {}
    for index, entry in enumerate(_objects(entries, where)):
        here = f"{where}[{index}]"
        if "brackets" not in entry:
            raise TierDocumentError(f"{expected}, but {here} has no brackets")
        symbol = _text(entry, "symbol" if "symbol" in entry else "pair", here)
        tables[symbol] = _binance_table(
            symbol, _objects(entry.get("brackets"), f"{symbol}: brackets")
        )
    return tables


def _binance_table(symbol: str, rows: list[Mapping[str, Any]]) -> VenueTable:
    if not rows:
        raise TierDocumentError(f"{symbol}: brackets is empty")
    coin = "qtyCap" in rows[0]
    cap_key = "qtyCap" if coin else "notionalCap"
    # The COIN-M page's example spells the floor "qtylFloor"; the API answers "qtyFloor".
    floor_key = "notionalFloor"
    if coin:
        floor_key = "qtyFloor" if "qtyFloor" in rows[0] else "qtylFloor"
    ordered = (
        sorted(rows, key=lambda row: _decimal(row, "bracket", symbol))
        if all("bracket" in row for row in rows)
        else rows
    )
    brackets: list[BinanceBracket] = []
    checked: list[tuple[str, Decimal, Decimal, Decimal]] = []
    expected_floor = ZERO
    for position, row in enumerate(ordered, 1):
        name = decimal_str(_decimal(row, "bracket", symbol)) if "bracket" in row else str(position)
        here = f"{symbol}: bracket {name}"
        floor = _decimal(row, floor_key, here)
        cap = _decimal(row, cap_key, here)
        rate = _decimal(row, "maintMarginRatio", here)
        cum = _decimal(row, "cum", here)
        if floor != expected_floor:
            raise TierDocumentError(
                f"{here}: {floor_key} is {decimal_str(floor)}, but the bracket below ends at "
                f"{decimal_str(expected_floor)}"
            )
        if cap <= floor:
            raise TierDocumentError(f"{here}: {cap_key} {decimal_str(cap)} must exceed {floor_key}")
        brackets.append(BinanceBracket(floor=floor, cap=cap, maint_margin_ratio=rate, cum=cum))
        checked.append((name, floor, rate, cum))
        expected_floor = cap
    _check_recurrence(symbol, "bracket", checked, (floor_key, "maintMarginRatio", "cum"))
    kind = ContractKind.INVERSE if coin else ContractKind.LINEAR
    return VenueTable("binance", symbol, kind, tuple(brackets))


# ---------------------------------------------------------------------------- bybit


def _bybit(document: Any) -> dict[str, VenueTable]:
    if not isinstance(document, dict) or "retCode" not in document:
        raise TierDocumentError(
            'not a Bybit risk-limit response: expected {"retCode": 0, "result": {"list": [...]}}, '
            f"got {_json_kind(document)}"
            + (" without retCode" if isinstance(document, dict) else "")
        )
    if document["retCode"] != 0:
        raise TierDocumentError(
            f"Bybit answered retCode {document['retCode']}: {document.get('retMsg', '')}"
        )
    result = document.get("result")
    if not isinstance(result, dict):
        raise TierDocumentError("Bybit response: result must be an object")
    category = result.get("category")
    kind = {"linear": ContractKind.LINEAR, "inverse": ContractKind.INVERSE}.get(
        category if isinstance(category, str) else ""
    )
    rows = _objects(result.get("list"), "result.list")
    groups = _grouped(rows, lambda row: _text(row, "symbol", "result.list[]"))
    return {
        symbol: VenueTable("bybit", symbol, kind, _bybit_rows(symbol, group))
        for symbol, group in groups.items()
    }


def _bybit_rows(symbol: str, rows: list[Mapping[str, Any]]) -> tuple[BybitRiskLimit, ...]:
    parsed = []
    unit: Decimal | None = None
    for row in rows:
        name = decimal_str(_decimal(row, "id", symbol)) if "id" in row else "?"
        here = f"{symbol}: risk limit id {name}"
        value = _decimal(row, "riskLimitValue", here)
        initial = _decimal(row, "initialMargin", here)
        leverage = _decimal(row, "maxLeverage", here)
        row_unit = _bybit_unit(here, initial, leverage)
        if unit is not None and row_unit != unit:
            raise TierDocumentError(f"{here}: its rates are in other units than the rows before")
        unit = row_unit
        rate = _decimal(row, "maintenanceMargin", here) / row_unit
        deduction = _decimal(row, "mmDeduction", here, empty=ZERO) if "mmDeduction" in row else ZERO
        parsed.append((value, name, BybitRiskLimit(value, rate, deduction)))
    parsed.sort(key=lambda item: item[0])
    for (low, _, _), (high, name, _) in pairwise(parsed):
        if high == low:
            raise TierDocumentError(
                f"{symbol}: risk limit id {name}: riskLimitValue {decimal_str(high)} appears twice"
            )
    return tuple(limit for _, _, limit in parsed)


def _bybit_unit(where: str, initial: Decimal, leverage: Decimal) -> Decimal:
    """1 when the row's rates are fractions, 100 when percent (``IM × maxLeverage``)."""
    product = initial * leverage
    for unit in (ONE, HUNDRED):
        if abs(product - unit) <= _UNIT_TOLERANCE * unit:
            return unit
    raise TierDocumentError(
        f"{where}: cannot tell whether its rates are fractions or percent: initialMargin × "
        f"maxLeverage is {decimal_str(product)}, neither 1 nor 100"
    )


# ---------------------------------------------------------------------------- okx


def _okx(document: Any) -> dict[str, VenueTable]:
    if not isinstance(document, dict) or "code" not in document:
        raise TierDocumentError(
            'not an OKX position-tiers response: expected {"code": "0", "data": [...]}, '
            f"got {_json_kind(document)}" + (" without code" if isinstance(document, dict) else "")
        )
    if str(document["code"]) != "0":
        raise TierDocumentError(f"OKX answered code {document['code']}: {document.get('msg', '')}")
    rows = _objects(document.get("data"), "data")

    def family(row: Mapping[str, Any]) -> str:
        for key in ("instFamily", "instId", "uly"):
            value = row.get(key)
            if isinstance(value, str) and value:
                return value
        raise TierDocumentError(f"data[]: a tier without instFamily, instId or uly: {dict(row)}")

    tables = {}
    for name, group in _grouped(rows, family).items():
        quote = name.split("-")[1] if name.count("-") >= 1 else ""
        kind = ContractKind.INVERSE if quote == "USD" else ContractKind.LINEAR if quote else None
        tables[name] = VenueTable("okx", name, kind, _okx_rows(name, group))
    return tables


def _okx_rows(name: str, rows: list[Mapping[str, Any]]) -> tuple[OkxTier, ...]:
    parsed = []
    for row in rows:
        tier = decimal_str(_decimal(row, "tier", name)) if "tier" in row else "?"
        here = f"{name}: tier {tier}"
        parsed.append(
            OkxTier(
                min_size=_decimal(row, "minSz", here),
                max_size=_decimal(row, "maxSz", here),
                mmr=_decimal(row, "mmr", here),
            )
        )
    return tuple(sorted(parsed, key=lambda tier: tier.max_size))


# ---------------------------------------------------------------------------- gate


def _gate(document: Any) -> dict[str, VenueTable]:
    if isinstance(document, dict) and "label" in document:
        raise TierDocumentError(
            f"Gate answered an error: {document['label']}: {document.get('message', '')}"
        )
    if not isinstance(document, list):
        raise TierDocumentError(
            f"not a Gate risk_limit_tiers response: expected an array of tiers, got "
            f"{_json_kind(document)}"
        )
    rows = _objects(document, "risk_limit_tiers")
    groups = _grouped(rows, lambda row: _text(row, "contract", "risk_limit_tiers[]"))
    tables = {}
    for contract, group in groups.items():
        quote = contract.split("_")[1] if "_" in contract else ""
        kind = ContractKind.INVERSE if quote == "USD" else ContractKind.LINEAR if quote else None
        tables[contract] = VenueTable("gate", contract, kind, _gate_rows(contract, group))
    return tables


def _gate_rows(contract: str, rows: list[Mapping[str, Any]]) -> tuple[GateTier, ...]:
    named = []
    for position, row in enumerate(rows, 1):
        name = decimal_str(_decimal(row, "tier", contract)) if "tier" in row else str(position)
        here = f"{contract}: tier {name}"
        tier = GateTier(
            risk_limit=_decimal(row, "risk_limit", here),
            maintenance_rate=_decimal(row, "maintenance_rate", here),
            deduction=_decimal(row, "deduction", here, empty=ZERO) if "deduction" in row else ZERO,
        )
        named.append((name, tier))
    named.sort(key=lambda item: item[1].risk_limit)
    checked = []
    floor = ZERO
    for name, tier in named:
        checked.append((name, floor, tier.maintenance_rate, tier.deduction))
        floor = tier.risk_limit
    _check_recurrence(
        contract, "tier", checked, ("the risk_limit below", "maintenance_rate", "deduction")
    )
    return tuple(tier for _, tier in named)


# ---------------------------------------------------------------------------- hyperliquid


def _hyperliquid(document: Any) -> dict[str, VenueTable]:
    if not isinstance(document, dict) or not isinstance(document.get("universe"), list):
        raise TierDocumentError(
            'not a Hyperliquid meta response: expected {"universe": [...], "marginTables": '
            f"[...]}}, got {_json_kind(document)}"
            + (" without a universe array" if isinstance(document, dict) else "")
        )
    tables = _margin_tables(document.get("marginTables", []))
    result = {}
    for index, asset in enumerate(_objects(document["universe"], "universe")):
        coin = _text(asset, "name", f"universe[{index}]")
        result[coin] = VenueTable(
            "hyperliquid", coin, ContractKind.LINEAR, _hyperliquid_tiers(coin, asset, tables)
        )
    return result


def margin_table_ids(document: Any) -> list[int]:
    """The tiered margin table ids a meta response's universe refers to but does not hold.

    :mod:`monitor.cli.tiers` asks ``{"type": "marginTable", "id": N}`` for each.
    """
    if not isinstance(document, dict) or not isinstance(document.get("universe"), list):
        return []  # not a meta response: the parser says so
    try:
        held = set(_margin_tables(document.get("marginTables", [])))
    except TierDocumentError:
        return []  # the parser names what is wrong with marginTables
    wanted = []
    for asset in document["universe"]:
        ident = asset.get("marginTableId") if isinstance(asset, dict) else None
        if isinstance(ident, Decimal) and ident == ident.to_integral_value():
            number = int(ident)
            if number >= _SINGLE_TIER_IDS and number not in held and number not in wanted:
                wanted.append(number)
    return wanted


def _margin_tables(value: Any) -> dict[int, Any]:
    if not isinstance(value, list):
        raise TierDocumentError(f"marginTables must be an array, got {_json_kind(value)}")
    tables = {}
    for index, pair in enumerate(value):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], Decimal)
            and isinstance(pair[1], dict)
        ):
            raise TierDocumentError(f"marginTables[{index}] must be an [id, table] pair")
        tables[int(pair[0])] = pair[1]
    return tables


def _hyperliquid_tiers(
    coin: str, asset: Mapping[str, Any], tables: Mapping[int, Any]
) -> tuple[HyperliquidTier, ...]:
    ident = asset.get("marginTableId")
    if ident is None:
        return (HyperliquidTier(ZERO, _leverage(asset, "maxLeverage", coin)),)
    if not isinstance(ident, Decimal) or ident != ident.to_integral_value():
        raise TierDocumentError(f"{coin}: marginTableId must be an integer, got {ident!r}")
    number = int(ident)
    if number in tables:
        where = f"{coin}: margin table {number}"
        rows = _objects(tables[number].get("marginTiers"), f"{where}: marginTiers")
        if not rows:
            raise TierDocumentError(f"{where}: marginTiers is empty")
        return tuple(
            HyperliquidTier(
                _decimal(row, "lowerBound", f"{where}: tier {i + 1}"),
                _leverage(row, "maxLeverage", f"{where}: tier {i + 1}"),
            )
            for i, row in enumerate(rows)
        )
    if number < _SINGLE_TIER_IDS:
        return (HyperliquidTier(ZERO, number),)
    raise TierDocumentError(
        f"{coin}: margin table {number} is not in the file's marginTables; its tiers are what "
        f'POST /info {{"type": "marginTable", "id": {number}}} answers (liqmon tiers fetch asks it)'
    )


def _leverage(row: Mapping[str, Any], key: str, where: str) -> int:
    value = _decimal(row, key, where)
    if value != value.to_integral_value() or value < 1:
        raise TierDocumentError(f"{where}: {key} must be a whole number from 1, got {value}")
    return int(value)


_PARSERS: dict[str, Callable[[Any], dict[str, VenueTable]]] = {
    "binance": _binance,
    "bybit": _bybit,
    "okx": _okx,
    "gate": _gate,
    "hyperliquid": _hyperliquid,
}


# ---------------------------------------------------------------------------- checking


def contract_terms(
    table: VenueTable,
    kind: ContractKind | None,
    contract_size: Decimal | None,
    taker_fee_rate: Decimal | None,
) -> ContractTerms:
    """The terms for ``table``: ``kind`` as asked, else what the document says, else linear.

    Raises :class:`TierDocumentError` for a combination the venue's model cannot
    use (an inverse Hyperliquid contract, OKX or Gate without a contract size or
    a taker fee, an inverse Binance contract without a size, a kind the document
    contradicts).
    """
    venue, symbol = table.venue, table.venue_symbol
    if kind is not None and table.kind is not None and kind is not table.kind:
        raise TierDocumentError(
            f"{symbol}: --contract {kind.value}, but {venue}'s document describes a "
            f"{table.kind.value} contract"
        )
    chosen = kind or table.kind or ContractKind.LINEAR
    if venue == "hyperliquid" and contract_size is not None:
        raise TierDocumentError("hyperliquid: --contract-size does not apply (sizes are in coins)")
    needs_size = venue in ("okx", "gate") or (venue == "binance" and chosen is ContractKind.INVERSE)
    if needs_size and contract_size is None:
        what = {
            "okx": "the instrument's ctVal (GET /api/v5/public/instruments)",
            "gate": "the contract's quanto_multiplier (GET /futures/{settle}/contracts/{contract})",
            "binance": "the contract's size in USD (100 for BTCUSD_PERP, 10 for the others)",
        }[venue]
        raise TierDocumentError(f"{venue} {symbol}: --contract-size is required: {what}")
    if venue == "bybit" and chosen is ContractKind.INVERSE and contract_size is None:
        contract_size = ONE  # Bybit's inverse contracts are 1 USD each
    if venue in ("bybit", "hyperliquid") and taker_fee_rate is not None:
        raise TierDocumentError(
            f"{venue}: --taker-fee does not apply (its model reserves no closing fee)"
        )
    if venue in ("okx", "gate") and taker_fee_rate is None:
        # The venue adds it to the maintenance rate; a silent 0 would understate MM.
        raise TierDocumentError(
            f"{venue} {symbol}: --taker-fee is required: the account's taker fee rate, "
            "which the venue adds to the maintenance rate (0 to leave it out)"
        )
    return ContractTerms(chosen, contract_size, taker_fee_rate)


def check_model(name: str, table: VenueTable, terms: ContractTerms) -> None:
    """Build the venue's model from the table: a :class:`TierDocumentError` if it refuses it."""
    fee = terms.taker_fee_rate if terms.taker_fee_rate is not None else ZERO
    size = terms.contract_size if terms.contract_size is not None else ONE
    tiers = table.tiers
    try:
        if table.venue == "binance":
            brackets = [t for t in tiers if isinstance(t, BinanceBracket)]
            opened = [*brackets[:-1], _open(brackets[-1])]
            BinanceModel.from_brackets(name, terms.kind, opened, size, fee)
        elif table.venue == "bybit":
            limits = [t for t in tiers if isinstance(t, BybitRiskLimit)]
            BybitModel(name, terms.kind, limits, size)
        elif table.venue == "okx":
            okx = [t for t in tiers if isinstance(t, OkxTier)]
            OkxModel(name, terms.kind, okx, size, fee)
        elif table.venue == "gate":
            gate = [t for t in tiers if isinstance(t, GateTier)]
            GateModel(name, terms.kind, gate, size, fee)
        else:
            HyperliquidModel(name, [t for t in tiers if isinstance(t, HyperliquidTier)])
    except ValueError as error:
        raise TierDocumentError(
            f"{table.venue_symbol}: the {table.venue} model refuses the table: {error}"
        ) from None


def _open(bracket: BinanceBracket) -> BinanceBracket:
    """The last bracket without its cap: beyond it its rate still applies, as in the config."""
    return BinanceBracket(bracket.floor, None, bracket.maint_margin_ratio, bracket.cum)


# ---------------------------------------------------------------------------- writing

ROW_KEYS: dict[type, tuple[tuple[str, str], ...]] = {
    BybitRiskLimit: (
        ("risk_limit_value", "risk_limit_value"),
        ("mmr", "maintenance_margin_rate"),
        ("mm_deduction", "mm_deduction"),
    ),
    OkxTier: (("min_size", "min_size"), ("max_size", "max_size"), ("mmr", "mmr")),
    GateTier: (
        ("risk_limit", "risk_limit"),
        ("maintenance_rate", "maintenance_rate"),
        ("deduction", "deduction"),
    ),
    HyperliquidTier: (("lower_bound", "lower_bound"), ("max_leverage", "max_leverage")),
}
"""A ``tiers`` row's TOML keys, each with the tier type's field it holds: the field names,
but Bybit's rate, which the configuration calls ``mmr`` like OKX's and Binance's."""


def symbol_table(table: VenueTable, terms: ContractTerms) -> dict[str, Any]:
    """The ``[symbols.NAME]`` table for ``table``, as the TOML loader would read it.

    Decimals are strings (exact); Binance's rows keep today's ``brackets``
    (``notional_cap``, ``mmr``, ``cum``; the last without a cap) and its fee is
    ``close_fee_rate``; the other venues' rows are ``tiers`` (:data:`ROW_KEYS`)
    and OKX's and Gate's fee ``taker_fee_rate``.
    """
    document: dict[str, Any] = {"venue": table.venue, "contract": terms.kind.value}
    if terms.contract_size is not None:
        document["contract_size"] = decimal_str(terms.contract_size)
    if terms.taker_fee_rate is not None:
        fee_key = "close_fee_rate" if table.venue == "binance" else "taker_fee_rate"
        document[fee_key] = decimal_str(terms.taker_fee_rate)
    if table.venue == "binance":
        rows: list[dict[str, Any]] = []
        last = len(table.tiers) - 1
        brackets = [tier for tier in table.tiers if isinstance(tier, BinanceBracket)]
        for index, bracket in enumerate(brackets):
            row: dict[str, Any] = {}
            if index != last and bracket.cap is not None:
                row["notional_cap"] = decimal_str(bracket.cap)
            row["mmr"] = decimal_str(bracket.maint_margin_ratio)
            row["cum"] = decimal_str(bracket.cum)
            rows.append(row)
        document["brackets"] = rows
        return document
    document["tiers"] = [
        {key: _toml_value(getattr(tier, name)) for key, name in ROW_KEYS[type(tier)]}
        for tier in table.tiers
    ]
    return document


def _toml_value(value: Any) -> Any:
    return decimal_str(value) if isinstance(value, Decimal) else value


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """A TOML key: bare when it can be, else a basic string."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def render(tables: Mapping[str, Mapping[str, Any]], comments: Mapping[str, str]) -> str:
    """``[symbols.NAME]`` TOML for each table, its rows one inline table a line.

    ``comments`` holds an optional line per NAME, written above its table.
    """
    parts = []
    for name, table in tables.items():
        lines = []
        if name in comments:
            lines.append(f"# {comments[name]}")
        lines.append(f"[symbols.{toml_key(name)}]")
        for key, value in table.items():
            if isinstance(value, list):
                lines.append(f"{key} = [")
                lines.extend(f"  {_inline(row)}," for row in value)
                lines.append("]")
            else:
                lines.append(f"{key} = {_scalar(value)}")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _inline(row: Mapping[str, Any]) -> str:
    return "{ " + ", ".join(f"{key} = {_scalar(value)}" for key, value in row.items()) + " }"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))
