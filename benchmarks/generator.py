"""The benchmarks' random positions: JSON-ready dicts over a map of symbols and marks.

Shared by the load benchmark (:mod:`benchmarks.load`), the bench's market
(:mod:`benchmarks.book`) and the tick breakdown (:mod:`benchmarks.breakdown`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

SYMBOLS = {"BTCUSDT": 64000, "ETHUSDT": 3400, "SOLUSDT": 150, "BTCUSD": 64000, "ETHUSD": 3400}
INVERSE = {"BTCUSD": 100, "ETHUSD": 10}


def generate_positions(
    count: int,
    seed: int,
    symbols: Mapping[str, float] = SYMBOLS,
    inverse: Mapping[str, int] = INVERSE,
    symbol_of: Callable[[int], str] | None = None,
    entry_spread: float = 0.05,
    leverage: tuple[float, float] = (2, 50),
) -> Iterator[dict[str, Any]]:
    """N positions (JSON-ready dicts), entry within ``entry_spread`` of each symbol's mark.

    ``symbol_of(n)`` picks the n-th position's symbol (default: round robin);
    the mark in ``symbols`` is the one set before loading. Pure per seed.
    """
    rng = random.Random(seed)
    names = list(symbols)
    low, high = 1 - entry_spread, 1 + entry_spread
    for n in range(count):
        symbol = symbol_of(n) if symbol_of else names[n % len(names)]
        mark = symbols[symbol]
        price = mark * rng.uniform(low, high)
        lev = rng.uniform(*leverage)
        qty: float
        if symbol in inverse:
            qty = rng.randint(1, 2000)
            margin = qty * inverse[symbol] / price / lev
            entry, margin_text = f"{price:.1f}", f"{margin:.8f}"
        else:
            qty = round(rng.uniform(0.001, 200_000 / mark), 3) or 0.001
            margin = qty * price / lev
            entry, margin_text = f"{price:.2f}", f"{margin:.2f}"
        yield {
            "id": f"p-{n}",
            "account": f"acct-{n % 5000}",
            "symbol": symbol,
            "side": "long" if n % 3 else "short",
            "qty": str(qty),
            "entry_price": entry,
            "margin": margin_text,
            "seq": 1,
        }


def write_positions(path: Path, count: int, seed: int, **options: Any) -> None:
    """N positions as JSON Lines (see :func:`generate_positions`; default: leverage 2-50x)."""
    with path.open("w") as out:
        for position in generate_positions(count, seed, **options):
            out.write(json.dumps(position) + "\n")
