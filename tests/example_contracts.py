"""Contracts the pure tests share (the same tier tables, stated once)."""

from __future__ import annotations

from decimal import Decimal

from monitor.core.margin import Bracket, Contract, ContractKind

BTCUSDT = Contract(
    "BTCUSDT",
    ContractKind.LINEAR,
    (
        Bracket(Decimal(50000), Decimal("0.004"), Decimal(0)),
        Bracket(Decimal(250000), Decimal("0.005"), Decimal(50)),
        Bracket(Decimal(1000000), Decimal("0.01"), Decimal(1300)),
    ),
)
"""The worked-example tier table of the margin math (Binance-style brackets)."""
