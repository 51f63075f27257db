"""Contracts and random books for the stress and map tests, and the position-by-position
reference they are compared with (written from the trigger prices, not from
:mod:`monitor.core.stress`'s own tests)."""

from __future__ import annotations

import random
from decimal import Context, Decimal
from fractions import Fraction
from itertools import pairwise

from hypothesis import strategies as st

from monitor.core.margin import Bracket, Contract, ContractKind, Side
from monitor.core.models import model_for
from monitor.core.position import PositionRecord
from monitor.core.status import RiskLimits, Status
from monitor.core.venues import (
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
    VenueModel,
)

D = Decimal
LINEAR, INVERSE = ContractKind.LINEAR, ContractKind.INVERSE


ONE = D(1)


def venue(symbol: str, model: VenueModel, size: Decimal = ONE) -> Contract:
    """A contract judged by ``model``, as the configuration builds one."""
    return Contract(symbol, model.kind, (), contract_size=size, model=model)


CONTRACTS: dict[str, Contract] = {
    "binance": Contract(
        "BTCUSDT",
        LINEAR,
        (
            Bracket(D(50000), D("0.004"), D(0)),
            Bracket(D(250000), D("0.005"), D(50)),
            Bracket(None, D("0.01"), D(1300)),
        ),
    ),
    "binance-inverse": Contract(
        "BTCUSD_PERP",
        INVERSE,
        (Bracket(D(5), D("0.004"), D(0)), Bracket(None, D("0.01"), D("0.03"))),
        contract_size=D(100),
    ),
    "bybit": venue(
        "BYBIT",
        BybitModel(
            "BYBIT",
            LINEAR,
            [BybitRiskLimit(D(200000), D("0.005")), BybitRiskLimit(D(2000000), D("0.01"), D(1000))],
        ),
    ),
    "bybit-inverse": venue(
        "BYBITUSD", BybitModel("BYBITUSD", INVERSE, [BybitRiskLimit(D(150), D("0.005"))])
    ),
    "okx": venue(
        "OKX",
        OkxModel(
            "OKX",
            LINEAR,
            [OkxTier(D(0), D(500), D("0.01")), OkxTier(D(501), D(2000), D("0.02"))],
            D("0.01"),
            D("0.0005"),
        ),
        D("0.01"),
    ),
    "gate": venue(
        "GATE",
        GateModel(
            "GATE",
            LINEAR,
            [GateTier(D(50000), D("0.004")), GateTier(D(2000000), D("0.01"), D(300))],
            D("0.0001"),
            D("0.00075"),
        ),
        D("0.0001"),
    ),
    "hyperliquid": venue(
        "HL", HyperliquidModel("HL", [HyperliquidTier(D(0), 50), HyperliquidTier(D(60000), 3)])
    ),
    "gate-inverse": venue(
        "GATEUSD",
        GateModel("GATEUSD", INVERSE, [GateTier(D(100), D("0.005"))], D(1), D("0.00075")),
    ),
}


def exposure(contract: Contract, record: PositionRecord) -> Fraction:
    """Size × multiplier, from the contract's own terms."""
    multiplier = getattr(model_for(contract), "multiplier", None)
    if multiplier is not None:
        return Fraction(record.qty) * Fraction(multiplier)
    if contract.kind is LINEAR:
        return Fraction(record.qty)
    return Fraction(record.qty) * Fraction(contract.contract_size)


def notional(contract: Contract, record: PositionRecord, price: Decimal) -> Fraction:
    """Notional at ``price``: quote for linear, coin for inverse."""
    x = exposure(contract, record)
    return x * Fraction(price) if contract.kind is LINEAR else x / Fraction(price)


def balance(contract: Contract, record: PositionRecord, price: Decimal) -> Fraction:
    """Margin + unrealized PnL at ``price``, exactly."""
    x, s = exposure(contract, record), 1 if record.side is Side.LONG else -1
    entry, p = Fraction(record.entry_price), Fraction(price)
    pnl = s * x * (p - entry) if contract.kind is LINEAR else s * x * (1 / entry - 1 / p)
    return Fraction(record.margin) + pnl


def beyond(side: Side, price: Decimal, threshold: Decimal | None) -> bool:
    """``price`` at or past ``threshold`` on the side where the position loses."""
    if threshold is None:
        return False
    return price <= threshold if side is Side.LONG else price >= threshold


def settled(contract: Contract) -> bool:
    """Whether the contract's thresholds are settled exactly (every model but Binance's,
    whose prices are margin.py's rounded half-even: its decision at a price one 28-digit
    step from a threshold is the model's comparison, not the rounded price's side)."""
    return contract.model is not None


def liquidated(contract: Contract, record: PositionRecord, price: Decimal) -> bool:
    """At or past the liquidation price (Binance: the model's decision at ``price``)."""
    model = model_for(contract)
    if not settled(contract):
        return model.liquidatable(record, price)
    return beyond(record.side, price, model.liquidation_price(record))


def called(contract: Contract, record: PositionRecord, price: Decimal, risk: RiskLimits) -> bool:
    """At or past the margin-call price (Binance: the model's decision at ``price``)."""
    model = model_for(contract)
    if not settled(contract):
        return model.assess(record, price).ratio_reached(risk.margin_call_ratio)
    return beyond(record.side, price, model.margin_call_price(record, risk.margin_call_ratio))


def reference(
    contract: Contract, records: list[PositionRecord], price: Decimal, risk: RiskLimits
) -> dict[str, object]:
    """The stress figures position by position, from each position's trigger prices."""
    liq = [0, Fraction(0), Fraction(0)]
    call = [0, Fraction(0)]
    shortfall = Fraction(0)
    for record in records:
        if record.status not in (Status.HEALTHY, Status.MARGIN_CALL):
            continue
        if liquidated(contract, record, price):
            liq[0] += 1  # type: ignore[operator]
            liq[1] += notional(contract, record, price)
            liq[2] += Fraction(record.margin)
            shortfall += max(Fraction(0), -balance(contract, record, price))
        elif called(contract, record, price, risk):
            call[0] += 1  # type: ignore[operator]
            call[1] += notional(contract, record, price)
    return {
        "liquidated": (liq[0], liq[1], liq[2]),
        "margin_call": (call[0], call[1]),
        "shortfall": shortfall,
    }


STATUSES = [Status.HEALTHY] * 6 + [Status.MARGIN_CALL, Status.LIQUIDATED, Status.CLOSED]


def random_book(contract: Contract, count: int, seed: int, center: Decimal) -> list[PositionRecord]:
    """``count`` positions around ``center``: both sides, leverages 2–100, some not open."""
    rng = random.Random(seed)
    model = model_for(contract)
    book = []
    for n in range(count):
        side = rng.choice([Side.LONG, Side.SHORT])
        qty = D(rng.choice([1, 2, 3, 40, 499, 500, 501, 2500]))
        entry = (center * D(rng.randint(900, 1100)) / D(1000)).quantize(D("0.1"))
        leverage = D(rng.choice([2, 5, 10, 20, 50, 100]))
        margin = model.isolated_margin(qty, entry, leverage)
        status = rng.choice(STATUSES)
        book.append(
            PositionRecord(f"p{n}", "acct", contract.symbol, side, qty, entry, margin, 1, status)
        )
    return book


def reference_map(
    contract: Contract, records: list[PositionRecord], edges: list[Decimal]
) -> list[tuple[object, ...]]:
    """Bucket by bucket, position by position."""
    model = model_for(contract)
    rows = []
    for low, high in pairwise(edges):
        row = [0, Fraction(0), 0, Fraction(0), Fraction(0), Fraction(0)]
        for record in records:
            if record.status not in (Status.HEALTHY, Status.MARGIN_CALL):
                continue
            price = model.liquidation_price(record)
            if price is None:
                continue
            value = notional(contract, record, price)
            long = record.side is Side.LONG
            if low <= price < high:
                row[0 if long else 2] += 1
                row[1 if long else 3] += value
            if long and price >= low:
                row[4] += value
            if not long and price < high:
                row[5] += value
        rows.append((low, high, *row))
    return rows


CENTER = {"binance": D(60000), "binance-inverse": D(60000), "bybit": D(60000)}
"""Where each contract's random books lie (3,000 for the others)."""

STEP = Context(prec=28)
"""Prices' 28 significant digits: a threshold's neighbours are one step of it away."""


def center_of(name: str) -> Decimal:
    """The centre of contract ``name``'s random books."""
    return CENTER.get(name, D(3000))


def threshold_prices(contract: Contract, record: PositionRecord, risk: RiskLimits) -> list[Decimal]:
    """The record's liquidation, margin-call and bankruptcy prices (those it has)."""
    model = model_for(contract)
    prices = (
        model.liquidation_price(record),
        model.margin_call_price(record, risk.margin_call_ratio),
        model.bankruptcy_price(record),
    )
    return [price for price in prices if price is not None]


def beside(prices: list[Decimal]) -> list[Decimal]:
    """Each price and its two 28-digit neighbours: where an off-by-one would show."""
    return [
        near for price in prices for near in (price, STEP.next_plus(price), STEP.next_minus(price))
    ]


RAGGED_MAPS = {
    "name": st.sampled_from(sorted(CONTRACTS)),
    "seed": st.integers(0, 10_000),
    "low": st.integers(300, 1000),
    "width": st.integers(1, 1200),
    "step": st.sampled_from(["0.7", "1", "13", "33.3", "100", "250", "999"]),
}
"""Maps of any range and step, the last bucket cut short when the step does not divide
it (``given(**RAGGED_MAPS)``; :func:`map_range` scales them to the contract)."""


def map_range(
    name: str, low: int, width: int, step: str
) -> tuple[Decimal, Decimal, Decimal] | None:
    """``(low, high, step)`` of a ragged map around contract ``name``'s books, or None
    when it would have more buckets than a map may."""
    scale = center_of(name) / 1000
    lo, hi, st_ = D(low) * scale, D(low + width) * scale, D(step) * scale
    return None if (hi - lo) / st_ > 2000 else (lo, hi, st_)
