"""A synthetic market for demos and benchmarks: a seeded random walk with scheduled jumps.

:class:`SyntheticMarket` is the pure, deterministic core: the same arguments
(and seed) give the same ticks, timestamps included, on every run. Each step
moves every symbol's index by geometric Brownian motion with ``daily_vol``
(the standard deviation of one day's log return), applies any :class:`Jump`
that is due (a crash is ``Jump(at_s=60, fraction=-0.3)``, a squeeze
``fraction=+0.25``), and derives the mark as the index times a small random
basis (``basis_bp``, standard deviation in basis points; 0 makes mark ==
index). Prices are quantized to the tick size of the configured start price
(``"65000.0"`` moves in steps of 0.1).

:class:`SyntheticSource` runs a market as a ``PriceSource``: one step every
``interval_s`` (divided by ``speed``; ``speed=None`` is as fast as possible).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from feeds.source import Emit, Reject
from feeds.tick import PriceKind, PriceTick

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Jump:
    """A scheduled move of the whole price path.

    ``fraction`` is the total relative move (-0.3: the price ends 30 % lower).
    It happens at the first step at or after ``at_s`` seconds of simulated
    time, or, with ``over_s > 0``, is spread geometrically over the steps in
    ``[at_s, at_s + over_s)``. An empty ``symbols`` means every symbol.
    """

    at_s: float
    fraction: float
    symbols: tuple[str, ...] = ()
    over_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.fraction > -1:
            raise ValueError("jump fraction must be > -1 (a price cannot reach zero)")
        if self.at_s < 0 or self.over_s < 0:
            raise ValueError("jump times must not be negative")

    def factor(self, t_s: float, interval_s: float) -> float:
        """The multiplicative move this jump applies at the step ending at ``t_s``."""
        steps = max(1, math.ceil(self.over_s / interval_s - 1e-9)) if self.over_s else 1
        first = math.ceil(self.at_s / interval_s - 1e-9)
        step = round(t_s / interval_s)
        if first <= step < first + steps:
            return float((1 + self.fraction) ** (1 / steps))
        return 1.0


class SyntheticMarket:
    """Deterministic random walk; :meth:`step` returns the next ticks.

    ``start_prices`` maps configured symbols to their first index price (a
    string or Decimal; its exponent sets the tick size). The first call to
    :meth:`step` returns the start prices at ``start_ts_ms``; each later call
    advances simulated time by ``interval_s``. Symbols are walked in sorted
    order from one ``random.Random(seed)``, so adding a jump never changes
    the noise.
    """

    def __init__(
        self,
        start_prices: Mapping[str, Decimal | str],
        *,
        seed: int = 0,
        daily_vol: float = 0.05,
        interval_s: float = 1.0,
        jumps: Sequence[Jump] = (),
        basis_bp: float = 1.0,
        start_ts_ms: int = 1_700_000_000_000,
        source: str = "synthetic",
    ) -> None:
        if not start_prices:
            raise ValueError("synthetic: no symbols configured")
        if interval_s <= 0 or daily_vol < 0 or basis_bp < 0:
            raise ValueError("synthetic: interval_s must be positive, vols not negative")
        self.symbols = sorted(start_prices)
        starts = {symbol: Decimal(start_prices[symbol]) for symbol in self.symbols}
        for symbol, start in starts.items():
            if not start.is_finite() or start <= 0:
                raise ValueError(f"synthetic: start price of {symbol} must be positive")
        self._tick_size = {
            symbol: Decimal(1).scaleb(min(0, int(start.as_tuple().exponent)))
            for symbol, start in starts.items()
        }
        self._log_price = {symbol: math.log(start) for symbol, start in starts.items()}
        self._sigma = daily_vol * math.sqrt(interval_s / SECONDS_PER_DAY)
        self._basis = basis_bp / 10_000
        self._jumps = tuple(jumps)
        self._rng = random.Random(seed)
        self.interval_s = interval_s
        self.start_ts_ms = start_ts_ms
        self.source = source
        self.steps = 0
        """Steps taken; the next :meth:`step` is at ``steps * interval_s``."""

    def step(self) -> list[PriceTick]:
        """Advance one interval; a mark and an index tick per symbol."""
        t_s = self.steps * self.interval_s
        ts_ms = self.start_ts_ms + round(t_s * 1000)
        ticks: list[PriceTick] = []
        for symbol in self.symbols:
            noise = self._rng.gauss(0.0, 1.0)
            basis_noise = self._rng.gauss(0.0, 1.0)
            if self.steps:
                log_price = self._log_price[symbol]
                log_price += self._sigma * noise - self._sigma**2 / 2
                for jump in self._jumps:
                    if not jump.symbols or symbol in jump.symbols:
                        log_price += math.log(jump.factor(t_s, self.interval_s))
                self._log_price[symbol] = log_price
            index = math.exp(self._log_price[symbol])
            mark = index * (1 + self._basis * basis_noise)
            ticks.append(
                PriceTick(symbol, PriceKind.MARK, self._quantize(symbol, mark), ts_ms, self.source)
            )
            ticks.append(
                PriceTick(
                    symbol, PriceKind.INDEX, self._quantize(symbol, index), ts_ms, self.source
                )
            )
        self.steps += 1
        return ticks

    def _quantize(self, symbol: str, value: float) -> Decimal:
        tick = self._tick_size[symbol]
        return max(tick, Decimal(repr(value)).quantize(tick))


class SyntheticSource:
    """Runs a :class:`SyntheticMarket` in (scaled) real time (a ``PriceSource``).

    Takes the market's arguments plus: ``speed`` (simulated seconds per real
    second; ``None``: no waiting at all), ``max_steps`` (stop after that many
    steps; ``None``: run until cancelled) and ``start_ts_ms`` (``None``: the
    wall clock when ``run`` starts, so dashboards show current times; pass a
    number for a fully reproducible stream). ``clock`` and ``sleep`` are
    injectable for tests.
    """

    def __init__(
        self,
        start_prices: Mapping[str, Decimal | str],
        *,
        seed: int = 0,
        daily_vol: float = 0.05,
        interval_s: float = 1.0,
        jumps: Sequence[Jump] = (),
        basis_bp: float = 1.0,
        start_ts_ms: int | None = None,
        speed: float | None = 1.0,
        max_steps: int | None = None,
        name: str = "synthetic",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("synthetic: speed must be positive (or None for as fast as possible)")
        self.name = name
        self.start_prices = dict(start_prices)
        self.seed = seed
        self.daily_vol = daily_vol
        self.interval_s = interval_s
        self.jumps = tuple(jumps)
        self.basis_bp = basis_bp
        self.start_ts_ms = start_ts_ms
        self.speed = speed
        self.max_steps = max_steps
        self._clock = clock
        self._sleep = sleep
        self.market(0)  # validate the market arguments now, not in run()

    def market(self, start_ts_ms: int) -> SyntheticMarket:
        """A fresh market with this source's settings."""
        return SyntheticMarket(
            self.start_prices,
            seed=self.seed,
            daily_vol=self.daily_vol,
            interval_s=self.interval_s,
            jumps=self.jumps,
            basis_bp=self.basis_bp,
            start_ts_ms=start_ts_ms,
            source=self.name,
        )

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Emit steps until cancelled (safe at any point) or ``max_steps`` are done."""
        start_ts_ms = self.start_ts_ms
        if start_ts_ms is None:
            start_ts_ms = time.time_ns() // 1_000_000
        market = self.market(start_ts_ms)
        started = self._clock()
        while True:
            for tick in market.step():
                await emit(tick)
            if self.max_steps is not None and market.steps >= self.max_steps:
                return
            if self.speed is None:
                await self._sleep(0)
            else:
                due = started + market.steps * self.interval_s / self.speed
                await self._sleep(max(0.0, due - self._clock()))
