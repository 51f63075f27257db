"""`liqmon calc` with each venue's model: the venues' own worked examples, from the command line.

The symbols and their tables are :data:`venue_symbols.VENUE_SYMBOLS`; each
test cites the example it reproduces (the same examples
``tests/core/venues/test_venue_examples.py`` checks on the models). Prices
that a venue publishes exactly are asserted as printed; prices given by a
published formula are that formula at 60 digits, rounded to 28 toward the side
where the position loses, as every non-Binance model settles them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from venue_symbols import venue_config

REPO = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"
D = Decimal
WIDE = Context(prec=60)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped configuration plus one symbol per venue example."""
    return venue_config(tmp_path_factory.mktemp("venues"))


def calc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``liqmon calc`` from the repository root, as a user would."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIQMON_")}
    return subprocess.run(
        [str(LIQMON), "--config", str(config), "calc", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def calc_json(config: Path, *args: str) -> dict[str, Any]:
    """``calc``'s JSON, after checking that it succeeded silently."""
    done = calc(config, *args)
    assert (done.returncode, done.stderr) == (0, "")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def toward_loss(side: str, value: Decimal) -> Decimal:
    """``value`` to 28 digits, rounded toward the side where the position loses."""
    rounding = ROUND_FLOOR if side == "long" else ROUND_CEILING
    return Context(prec=28, rounding=rounding).plus(value)


def test_bybit_usdt_example_1(config: Path) -> None:
    """Bybit help centre, "Liquidation Price (USDT Contract)", Example 1 (Long).

    1 BTC long at 20,000 USDT, 50x, MMR 0.5 %: Initial Margin = 400 USDT,
    Maintenance Margin = 100 USDT, LP = 20,000 − (400 − 100) = 19,700; and
    "Bankruptcy Price (USDT Contract)": 20,000 × (1 − 1/50) = 19,600. At the
    liquidation price the position is liquidatable, MM still 100 (on the entry value).
    """
    args = ["--symbol", "BYBIT-BTCUSDT", "--side", "long", "--qty", "1", "--entry", "20000"]
    result = calc_json(config, *args, "--leverage", "50", "--mark", "19700")
    assert {
        "symbol": "BYBIT-BTCUSDT",
        "venue": "bybit",
        "contract": "linear",
        "margin": "400",
        "liquidation_price": "19700",
        "bankruptcy_price": "19600",
        "margin_call_price": "19725",
        "mark_price": "19700",
        "notional": "19700",
        "unrealized_pnl": "-300",
        "maintenance_margin": "100",
        "margin_balance": "100",
        "margin_ratio": "1",
        "venue_ratio": "1",
        "status": "liquidatable",
    } == result
    # The margin Bybit reports for the position (IM) gives the same prices as --leverage.
    same = calc_json(config, *args, "--margin", "400")
    assert (same["liquidation_price"], same["bankruptcy_price"]) == ("19700", "19600")
    # Example 1's formula with 100 USDT of extra margin: 19,700 − 100/1 = 19,600.
    extra = calc_json(config, *args, "--margin", "500")
    assert "19600" == extra["liquidation_price"]


@pytest.mark.parametrize("side", ["long", "short"])
def test_bybit_inverse_uta_example(config: Path, side: str) -> None:
    """Bybit help centre, "Liquidation Price Calculation under Isolated Mode (Unified Trading
    Account)", inverse example: 60,000 USD of BTCUSD at 50,000, 10x, MMR 0.5 %.

    Position Value = 1.2 BTC, Initial Margin = 0.12 BTC (published);
    LP = Qty / [PV ± (IM − MM)] with MM = PV × MMR = 0.006 BTC.
    """
    result = calc_json(
        config,
        *["--symbol", "BYBIT-BTCUSD", "--side", side, "--qty", "60000", "--entry", "50000"],
        *["--leverage", "10"],
    )
    s = 1 if side == "long" else -1
    with localcontext(WIDE):
        formula = D(60000) / (D("1.2") + s * (D("0.12") - D("0.006")))
    assert ("bybit", "inverse", "0.12") == (result["venue"], result["contract"], result["margin"])
    assert toward_loss(side, formula) == D(result["liquidation_price"])


def test_okx_margin_ratio_example(config: Path) -> None:
    """OKX's isolated margin ratio as issue #14 states it, worked by hand.

    (margin + uPnL) / (ctVal × |contracts| × mark × (mmr + taker fee)): 100
    BTC-USDT-SWAP contracts (ctVal 0.01) short at 60,000 with 3,000 USDT of
    margin, mark 62,000, mmr 1 %, taker 0.05 %: uPnL −2,000, so 1,000 / 651,
    OKX's ratio, falling toward 100 %; liqmon's ``margin_ratio`` is 651 / 1,000.
    Liquidation where the ratio reaches 100 %: 3,000 − (P − 60,000) = 0.0105·P.
    """
    result = calc_json(
        config,
        *["--symbol", "OKX-BTCUSDT", "--side", "short", "--qty", "100", "--entry", "60000"],
        *["--margin", "3000", "--mark", "62000"],
    )
    with localcontext(Context(prec=28)):
        venue_ratio = D(1000) / D(651)
    with localcontext(WIDE):
        liquidation = D(63000) / D("1.0105")
    assert "okx" == result["venue"]
    assert "651" == result["maintenance_margin"]
    assert "1000" == result["margin_balance"]
    assert "0.651" == result["margin_ratio"]
    assert str(venue_ratio) == result["venue_ratio"]
    assert toward_loss("short", liquidation) == D(result["liquidation_price"])
    assert "63000" == result["bankruptcy_price"]
    assert "healthy" == result["status"]


@pytest.mark.parametrize(("contracts", "maintenance"), [("5000", "50"), ("5001", "75.015")])
def test_okx_tier_by_contracts(config: Path, contracts: str, maintenance: str) -> None:
    """OKX announcement "OKX position tiers to be adjusted", CHZUSDT perpetual swap.

    Tier 1 0-5,000 contracts 1.00 %, tier 2 5,001-7,500 1.50 % (ctVal 10 CHZ):
    at a mark of 0.1, MM is 50 USDT for 5,000 contracts and 75.015 for 5,001,
    the jump the configuration accepts for a venue whose tiers follow the size.
    """
    args = ["--symbol", "OKX-CHZUSDT", "--side", "long", "--qty", contracts, "--entry", "0.1"]
    result = calc_json(config, *args, "--margin", "100", "--mark", "0.1")
    assert maintenance == result["maintenance_margin"]


@pytest.mark.parametrize("side", ["long", "short"])
def test_gate_linear_formula(config: Path, side: str) -> None:
    """Gate support's reply on the liquidation price, Gate Square post 3870211 (2023-07-02).

    "liquidation price = (average opening price ± margin / contract multiplier /
    position) / [1 ± (maintenance margin ratio + Taker fee Rate)]", long
    subtracted; here 2,500 contracts of 0.0001 BTC at 60,000, 20x (margin 750 USDT).
    """
    result = calc_json(
        config,
        *["--symbol", "GATE-BTCUSDT", "--side", side, "--qty", "2500", "--entry", "60000"],
        *["--leverage", "20"],
    )
    s = 1 if side == "long" else -1
    with localcontext(WIDE):
        formula = (D(60000) - s * D(750) / D("0.0001") / D(2500)) / (
            1 - s * (D("0.004") + D("0.00075"))
        )
    assert ("gate", "750") == (result["venue"], result["margin"])
    assert toward_loss(side, formula) == D(result["liquidation_price"])


@pytest.mark.parametrize("side", ["long", "short"])
def test_gate_inverse_formula(config: Path, side: str) -> None:
    """Same source: "Reverse contract forced liquidation price = position * average opening
    price * (1 ± maintenance margin ratio ± Taker fee rate) / (position ± margin * average
    opening price)", long plus; 30,000 contracts of 1 USD at 60,000, 10x."""
    result = calc_json(
        config,
        *["--symbol", "GATE-BTCUSD", "--side", side, "--qty", "30000", "--entry", "60000"],
        *["--leverage", "10"],
    )
    s = 1 if side == "long" else -1
    with localcontext(WIDE):
        margin = D(30000) / D(60000) / D(10)
        rate = D("0.005") + D("0.00075")
        formula = D(30000) * D(60000) * (1 + s * rate) / (D(30000) + s * margin * D(60000))
    assert str(margin) == result["margin"]
    assert toward_loss(side, formula) == D(result["liquidation_price"])


@pytest.mark.parametrize("side", ["long", "short"])
def test_hyperliquid_single_tier_formula(config: Path, side: str) -> None:
    """The liquidation price Hyperliquid's engine shows, as HyENA's docs print it.

    docs.hyena.trade/trading/liquidation: liq_price = price − side ×
    margin_available / position_size / (1 − l × side), l = 1 / (2 × 25);
    margin_available = margin − l × size × price; 3.5 ETH at 3,000, 10x.
    """
    result = calc_json(
        config,
        *["--symbol", "HL-ETH", "--side", side, "--qty", "3.5", "--entry", "3000"],
        *["--leverage", "10"],
    )
    s = 1 if side == "long" else -1
    with localcontext(WIDE):
        margin = D("3.5") * D(3000) / D(10)
        rate = D(1) / D(50)
        formula = D(3000) - s * (margin - rate * D("3.5") * D(3000)) / D("3.5") / (1 - rate * s)
    assert ("hyperliquid", "1050") == (result["venue"], result["margin"])
    assert toward_loss(side, formula) == D(result["liquidation_price"])


def test_binance_leverage_gives_the_worked_example(config: Path) -> None:
    """Binance's isolated margin for 0.5 BTC at 60,000 and 10x is 3,000: the README's example."""
    args = ["--symbol", "BTCUSDT", "--side", "long", "--qty", "0.5", "--entry", "60000"]
    result = calc_json(config, *args, "--leverage", "10")
    assert {
        "symbol": "BTCUSDT",
        "venue": "binance",
        "contract": "linear",
        "margin": "3000",
        "liquidation_price": "54216.86746987951807228915663",
        "bankruptcy_price": "54000",
        "margin_call_price": "54271.35678391959798994974874",
    } == result


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--margin", "400", "--leverage", "50"],
            "liqmon calc: error: argument --leverage: not allowed with argument --margin",
        ),
        ([], "liqmon calc: error: one of the arguments --margin --leverage is required"),
        (
            ["--leverage", "0"],
            "liqmon calc: error: argument --leverage: '0' must be a positive finite number",
        ),
    ],
)
def test_margin_or_leverage_exactly_one(config: Path, extra: list[str], message: str) -> None:
    """``--margin`` and ``--leverage`` exclude each other, one is needed, and leverage is > 0."""
    args = ["--symbol", "BYBIT-BTCUSDT", "--side", "long", "--qty", "1", "--entry", "20000"]
    done = calc(config, *args, *extra)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
