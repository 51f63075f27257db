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

from monitor.state.store import PIPELINE_SLICE, Client, evalsha_all

log = structlog.get_logger("liqmon.lease")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# A restarted monitor (same id) adopts the leases its previous life held
# instead of waiting for them to expire. Allowed while Redis is out of memory
# (a few bytes beyond maxmemory): a publisher needs its leases to drain the
# outbox, which is what frees memory. Renewing (PEXPIRE) and releasing (DEL)
# are allowed then anyway.
_ACQUIRE = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
end
return 0
"""
# The heartbeat, for the same reason: its member is one per process.
_HEARTBEAT = """#!lua flags=allow-oom
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


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
        client: Client,
        prefix: str,
        owner: str,
        symbols: Sequence[str],
        ttl_s: float = 3.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.owner = owner
        self.symbols = preference(owner, symbols)
        self.ttl_ms = int(ttl_s * 1000)
        self.held: set[str] = set()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._acquire = client.register_script(_ACQUIRE)
        self._heartbeat = client.register_script(_HEARTBEAT)

    def key(self, symbol: str) -> str:
        """The lease key of a symbol (hash-tagged like the symbol's other keys)."""
        return f"{self.prefix}:{{{symbol}}}:lease"

    @property
    def heartbeats(self) -> str:
        """Sorted set of live monitors, scored by when their heartbeat expires."""
        return f"{self.prefix}:monitors"

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
        renewed_all = []
        for start in range(0, len(held), PIPELINE_SLICE):
            renewed_all += await evalsha_all(
                self.client,
                self._renew,
                [
                    ([self.key(symbol)], [self.owner, self.ttl_ms])
                    for symbol in held[start : start + PIPELINE_SLICE]
                ],
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
