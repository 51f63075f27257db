"""Where each symbol's liquidation-cluster alert state lives: a hash in Redis.

One field per side (``long``, ``short``) holding
:meth:`~monitor.core.clusters.ClusterState.text`, in the symbol's
``clusters`` hash (:meth:`~monitor.state.keys.Keys.clusters`). Kept in Redis,
not in the process, so that a restarted monitor, or the one that takes the
symbol's lease over, neither announces a raised episode again nor forgets to
clear it.
"""

from __future__ import annotations

from typing import Any

from monitor.core.clusters import ClusterState
from monitor.core.margin import Side
from monitor.state.keys import Keys
from monitor.state.transport import Transport, text


class ClusterStates:
    """Read and write the alert state of one key prefix's symbols."""

    def __init__(self, transport: Transport, keys: Keys) -> None:
        self._client = transport.client
        self._keys = keys

    async def load(self, symbol: str) -> dict[Side, ClusterState]:
        """Each side's stored state (a side never raised: the initial state)."""
        stored: Any = await self._client.hmget(
            self._keys.clusters(symbol), [side.value for side in Side]
        )
        return {
            side: ClusterState.parse(None if raw is None else text(raw))
            for side, raw in zip(Side, stored, strict=True)
        }

    async def save(self, symbol: str, side: Side, state: ClusterState) -> None:
        """Store ``side``'s state."""
        await self._client.hset(self._keys.clusters(symbol), side.value, state.text())
