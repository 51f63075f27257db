"""What every price source is, seen from the daemon.

A source is a small object with a ``name`` and a ``run`` coroutine that
streams normalized ticks into ``emit`` until it is cancelled. Frames it cannot
use go to ``reject`` with a short machine-readable reason; the daemon counts,
logs and dead-letters them. A source never raises on bad input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from feeds.funding import FundingNotice
from feeds.tick import PriceTick

Emit = Callable[[PriceTick], Awaitable[None]]
"""Hands one tick to the daemon; may wait briefly for back-pressure."""

Reject = Callable[[str, str, bytes], Awaitable[None]]
"""``reject(source, reason, raw_frame)``: record a frame that was not usable."""

FundingSink = Callable[[FundingNotice], None]
"""Hands one funding announcement to the daemon (which only holds it until its time)."""


class PriceSource(Protocol):
    """A long-running consumer of one venue's (or file's, or topic's) prices."""

    name: str

    async def run(self, emit: Emit, reject: Reject) -> None:
        """Stream ticks until cancelled; reconnect on its own. Cancelling is safe."""
        ...


@runtime_checkable
class FundingSource(Protocol):
    """A source whose venue also announces funding times (Binance, Bybit, OKX)."""

    def on_funding(self, sink: FundingSink) -> None:
        """Hand every funding announcement to ``sink`` from the next connection on
        (none is parsed until this is called)."""
        ...
