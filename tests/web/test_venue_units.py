"""The dashboard's units follow the venue: OKX and Gate count linear sizes in contracts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from monitor.core.margin import Bracket, Contract, ContractKind
from monitor.core.venues import OkxModel, OkxTier
from monitor.web.live import units

pytestmark = pytest.mark.unit


def test_okx_linear_sizes_are_contracts_of_ctval() -> None:
    """An OKX linear position's size reads as contracts of ctVal base units."""
    model = OkxModel(
        "BTCUSDT",
        ContractKind.LINEAR,
        [OkxTier(Decimal(0), Decimal(1000), Decimal("0.01"))],
        Decimal("0.01"),
        Decimal("0.0005"),
    )
    contract = Contract(
        "BTCUSDT", ContractKind.LINEAR, (), contract_size=Decimal("0.01"), model=model
    )
    assert {
        "size": "contracts",
        "value": "USDT",
        "price": "USDT",
        "contract": "1 contract = 0.01 BTC",
    } == units(contract)


def test_binance_linear_sizes_stay_in_base_units() -> None:
    """A Binance linear position's size is in the base coin, as before."""
    contract = Contract(
        "BTCUSDT", ContractKind.LINEAR, (Bracket(None, Decimal("0.004"), Decimal(0)),)
    )
    assert {"size": "BTC", "value": "USDT", "price": "USDT", "contract": ""} == units(contract)
