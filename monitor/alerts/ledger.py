"""What each route keeps in Redis: delivered keys, dead letters, and the fold buffer.

The keys (built by :class:`~monitor.state.keys.Keys`; the route's name is the
hash tag, so each route's keys live on one node of a Redis Cluster):

- ``…:delivered:KEY``: a string with a TTL (``alerts.delivered_ttl_s``): KEY
  was accepted by the sink;
- ``…:deadletter``: a stream of what the sink refused or what outlived the
  retention (key, topic, payload, error, attempts, at_ms), about
  ``dead_letter_maxlen`` long;
- ``…:fold``: a hash of folded items (key → topic NUL payload) and ``_window``
  (epoch ms of the first fold); ``…:fold:sending``: the fold being summarized
  (renamed from ``fold``, so new folds go to a fresh one).

The delivered mark is written after the sink accepted: a forwarder that dies
in between sends the item again, under the same key (the one repeat the
guarantee allows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from monitor.alerts.items import Item, item_of
from monitor.state.keys import Keys
from monitor.state.transport import text

WINDOW = "_window"
"""The fold hash's field holding the epoch ms of its first fold."""

Client = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a route's dead-letter stream."""

    entry_id: str
    key: str
    topic: str
    payload: bytes
    error: str
    attempts: int
    at_ms: int


class RouteLedger:
    """The Redis side of one route."""

    def __init__(
        self, client: Client, prefix: str, route: str, delivered_ttl_s: int, maxlen: int
    ) -> None:
        self.client: Any = client
        self.route = route
        self.keys = Keys(prefix)
        self.delivered_ttl_s = delivered_ttl_s
        self.maxlen = maxlen

    def delivered_key(self, key: str) -> str:
        """The string that marks ``key`` delivered on this route."""
        return self.keys.alert_delivered(self.route, key)

    @property
    def dead_letter_key(self) -> str:
        """The route's dead-letter stream."""
        return self.keys.alert_dead_letter(self.route)

    @property
    def fold_key(self) -> str:
        """The hash of items folded in the current window."""
        return self.keys.alert_fold(self.route)

    @property
    def sending_key(self) -> str:
        """The fold being summarized."""
        return self.keys.alert_fold_sending(self.route)

    async def delivered(self, key: str) -> bool:
        """True if ``key`` was delivered on this route within the TTL."""
        return bool(await self.client.exists(self.delivered_key(key)))

    async def record(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` delivered (after the sink accepted them)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(self.delivered_key(key), b"1", ex=self.delivered_ttl_s)
            await pipe.execute()

    async def dead_letter(self, item: Item, error: str, attempts: int, at_ms: int) -> None:
        """Keep ``item`` with the last error, for ``liqmon alerts retry``."""
        await self.client.xadd(
            self.dead_letter_key,
            {
                "key": item.key,
                "topic": item.topic,
                "payload": item.payload,
                "error": error[:1000],
                "attempts": attempts,
                "at_ms": at_ms,
            },
            maxlen=self.maxlen,
            approximate=True,
        )

    async def dead_letters(self, count: int = 1000) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""
        entries = await self.client.xrange(self.dead_letter_key, count=count)
        letters = []
        for entry_id, fields in entries:
            get = {text(name): value for name, value in fields.items()}
            letters.append(
                DeadLetter(
                    entry_id=text(entry_id),
                    key=text(get.get("key", b"")),
                    topic=text(get.get("topic", b"")),
                    payload=bytes(get.get("payload", b"")),
                    error=text(get.get("error", b"")),
                    attempts=int(get.get("attempts", 0)),
                    at_ms=int(get.get("at_ms", 0)),
                )
            )
        return letters

    async def forget(self, entry_ids: Sequence[str]) -> None:
        """Remove dead letters (delivered at last)."""
        if entry_ids:
            await self.client.xdel(self.dead_letter_key, *entry_ids)

    async def fold(self, item: Item, now_ms: int) -> None:
        """Keep ``item`` in the current fold (idempotent: a repeat overwrites itself)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.fold_key, WINDOW, now_ms)
            pipe.hset(self.fold_key, item.key, item.topic.encode() + b"\0" + item.payload)
            await pipe.execute()

    async def fold_opened_ms(self) -> int | None:
        """When the oldest fold not yet summarized began (epoch ms), or None."""
        for key in (self.sending_key, self.fold_key):
            value = await self.client.hget(key, WINDOW)
            if value is not None:
                return int(value)
        return None

    async def take_fold(self) -> tuple[int, list[Item]] | None:
        """The fold to summarize: one left by a crash, or the current one (moved aside)."""
        if not await self.client.exists(self.sending_key):
            try:
                await self.client.rename(self.fold_key, self.sending_key)
            except ResponseError as error:  # nothing folded: "no such key"
                if "no such key" not in str(error).lower():
                    raise
                return None
        stored = await self.client.hgetall(self.sending_key)
        window = stored.pop(WINDOW.encode(), None)
        items = []
        for value in stored.values():
            topic, _, payload = bytes(value).partition(b"\0")
            found = item_of(topic.decode(), payload)
            if found is not None:
                items.append(found)
        if window is None:
            await self.client.delete(self.sending_key)
            return None
        return int(window), items

    async def fold_done(self, keys: Sequence[str], summary_key: str | None) -> None:
        """The summary was accepted (``summary_key`` marked too) or dead-lettered (None):
        mark its items, which it now stands for, and drop the fold."""
        async with self.client.pipeline(transaction=True) as pipe:
            for key in (*keys, *([summary_key] if summary_key else [])):
                pipe.set(self.delivered_key(key), b"1", ex=self.delivered_ttl_s)
            pipe.delete(self.sending_key)
            await pipe.execute()
