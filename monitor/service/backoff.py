"""Waiting between reconnection attempts to Redis and the broker."""

from __future__ import annotations

import asyncio

from feeds.ws import Backoff as ReconnectPolicy


class Backoff:
    """Sleeps along the feeds' reconnect policy (:class:`feeds.ws.Backoff`, equal
    jitter, doubling from ``first_s`` to ``cap_s``); :meth:`reset` after a success."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 10.0) -> None:
        self.policy = ReconnectPolicy(base_s=first_s, max_s=cap_s)
        self.reset()

    def reset(self) -> None:
        """Start again from the first delay (call after a connection succeeded)."""
        self._delays = self.policy.delays()

    async def wait(self) -> None:
        """Sleep for the next delay."""
        await asyncio.sleep(next(self._delays))
