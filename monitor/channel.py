"""A Redis connection of the tick path's own: packed commands in, replies out.

redis.asyncio spends ~80 µs of CPU per command on its layers (argument
encoding, retries, the pool's bookkeeping, the script object) before and
after the ~50 µs the round trip itself costs. A mark tick is one EVALSHA
whose keys never change for a symbol, so the tick path packs the command
itself (:func:`resp_command`) and writes it, several symbols in one write,
on a connection it keeps: about 55 µs per tick alone, 25 µs in fours.

The connection is borrowed from the client's pool, so it has the client's
address, credentials, TLS and protocol, and :meth:`redis.asyncio.Redis.aclose`
closes it; replies go through redis-py's parser (hiredis).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError


def resp_parts(*parts: str | bytes | int) -> bytes:
    """Bulk strings of the RESP wire format, to follow an array header ``*N``."""
    out = []
    for part in parts:
        if isinstance(part, str):
            raw = part.encode()
        elif isinstance(part, int):
            raw = b"%d" % part
        else:
            raw = part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def resp_command(*parts: str | bytes | int) -> bytes:
    """One command in the RESP wire format (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + resp_parts(*parts)


class Channel:
    """Sends packed commands on one kept connection and reads their replies in order.

    Callers take turns (a lock): one write and its replies at a time, so a
    reply is never read by the wrong caller. Any failure, cancellation
    included, drops the connection, since a reply left unread would be
    taken for the next command's; the next call connects again.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: AbstractConnection | None = None
        self._turn = asyncio.Lock()

    async def execute(self, commands: Sequence[bytes]) -> list[Any]:
        """The replies to ``commands`` (packed with :func:`resp_command`), in order.

        An error reply comes back as its :class:`~redis.exceptions.ResponseError`
        instance, in its place, so one failed command leaves the others' replies
        readable. Connection errors raise redis-py's ``ConnectionError``.
        """
        async with self._turn:
            connection = self._connection
            if connection is None:
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                self._connection = connection
            try:
                await connection.send_packed_command(b"".join(commands), check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
                return replies
            except BaseException:
                self._connection = None
                await connection.disconnect(nowait=True)
                await self._pool.release(connection)
                raise
