"""Symbol leases: which monitor evaluates which symbol.

Several monitors may share one Redis (for fail-over, or to spread symbols over
processes). Each symbol has a lease key holding the id of the monitor that
evaluates it, with a time-to-live; the holder renews it every second. Live
monitors announce themselves in a heartbeat set, and each takes at most its
fair share (``ceil(symbols / monitors)``), releasing leases beyond it, so
symbols rebalance when a monitor joins and are taken over within
``ttl_s`` when one dies.

Correctness does not rest on the lease: every transition is committed by
compare-and-set, so two monitors evaluating one symbol during a hand-over
still publish it once. The lease only keeps them from doing the work twice.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence

import structlog

from monitor.state.channel import resp_command
from monitor.state.keys import Keys
from monitor.state.transport import Transport, register, scripted, swept

log = structlog.get_logger("liqmon.lease")


def fair_share(symbols: int, monitors: int) -> int:
    """How many symbols one of ``monitors`` live monitors should hold."""
    return math.ceil(symbols / max(monitors, 1))


def preference(owner: str, symbols: Sequence[str]) -> list[str]:
    """The order in which ``owner`` tries symbols: a stable per-owner shuffle.

    Different monitors prefer different symbols, so they rarely race for the
    same lease and the split stays the same across restarts.
    """
    return sorted(symbols, key=lambda symbol: zlib.crc32(f"{owner}/{symbol}".encode()))


class Leases:
    """The leases one monitor holds, kept up to date by :meth:`refresh`."""

    def __init__(
        self,
        transport: Transport,
        keys: Keys,
        owner: str,
        symbols: Sequence[str],
        ttl_s: float = 3.0,
        group: str = "",
    ) -> None:
        """Leases of ``group`` ("": the monitors; :data:`~monitor.state.keys.PUBLISHERS`:
        the publishers, who share the outboxes by leases of their own)."""
        client = self.client = transport.client
        # Renewals go on a kept connection of their own, packed once per symbol: every
        # second, a few hundred EVALSHAs packed by redis.asyncio's pipeline took the
        # event loop (and the ticks waiting on it) for milliseconds.
        self._renewals = transport.lane(f"lease renewals{'' if not group else ' of ' + group}")
        self._renew_commands: dict[str, bytes] = {}
        self.keys = keys
        self.group = group
        self.owner = owner
        self.symbols = preference(owner, symbols)
        self.ttl_ms = int(ttl_s * 1000)
        self.held: set[str] = set()
        self._renew = register(client, "lease_renew.lua")
        self._release = register(client, "lease_release.lua")
        self._acquire = register(client, "lease_acquire.lua")
        self._heartbeat = register(client, "heartbeat.lua")

    def _renew_command(self, symbol: str) -> bytes:
        """``lua/lease_renew.lua`` for ``symbol``'s lease, packed (once: it never changes)."""
        command = self._renew_commands.get(symbol)
        if command is None:
            command = self._renew_commands[symbol] = resp_command(
                "EVALSHA", self._renew.sha, 1, self.key(symbol), self.owner, self.ttl_ms
            )
        return command

    def key(self, symbol: str) -> str:
        """The lease key of a symbol (hash-tagged like the symbol's other keys)."""
        return self.keys.lease(symbol, self.group)

    @property
    def heartbeats(self) -> str:
        """Sorted set of live monitors, scored by when their heartbeat expires."""
        return self.keys.heartbeats(self.group)

    def owns(self, symbol: str) -> bool:
        """True while this monitor evaluates ``symbol``."""
        return symbol in self.held

    async def refresh(self) -> list[str]:
        """Heartbeat, renew, release beyond the fair share, acquire up to it.

        Returns the symbols newly acquired (the caller re-evaluates them at
        their last mark, since the previous holder may have died mid-tick).
        """
        now_ms = int(time.time() * 1000)
        monitors = await self._heartbeat(
            keys=[self.heartbeats], args=[now_ms + self.ttl_ms, self.owner, now_ms]
        )
        share = fair_share(len(self.symbols), monitors)
        # A few round trips renew every lease held (a script per key, so each
        # stays within its symbol's hash slot on a cluster).
        held = sorted(self.held)
        commands = [self._renew_command(symbol) for symbol in held]
        routes = [self.key(symbol) for symbol in held]
        renewed_all = await scripted(
            self.client, self._renew, lambda: swept(self._renewals, commands, routes)
        )
        for symbol, renewed in zip(held, renewed_all, strict=True):
            if not renewed:
                self.held.discard(symbol)
                log.warning("lease_lost", symbol=symbol)
        for symbol in [s for s in self.symbols if s in self.held][share:]:
            await self._release(keys=[self.key(symbol)], args=[self.owner])
            self.held.discard(symbol)
            log.info("lease_released", symbol=symbol, share=share)
        acquired = []
        for symbol in self.symbols:
            if len(self.held) >= share:
                break
            if symbol in self.held:
                continue
            if await self._acquire(keys=[self.key(symbol)], args=[self.owner, self.ttl_ms]):
                self.held.add(symbol)
                acquired.append(symbol)
        if acquired:
            log.info("leases_acquired", symbols=acquired, share=share, monitors=monitors)
        return acquired

    async def release_all(self) -> None:
        """Give every lease back (graceful stop): another monitor takes over at once."""
        for symbol in sorted(self.held):
            await self._release(keys=[self.key(symbol)], args=[self.owner])
        self.held.clear()
        await self.client.zrem(self.heartbeats, self.owner)
