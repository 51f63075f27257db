"""The tick path's own Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from monitor.channel import Channel, resp_command


async def test_replies_come_back_in_order_with_an_error_in_its_place(redis_url: str) -> None:
    """Three commands in one write: the failed one does not hide the others' replies."""
    client = aioredis.Redis.from_url(redis_url)
    channel = Channel(client)
    replies = await channel.execute(
        [
            resp_command("SET", "k", 41),
            resp_command("INCR", "nope", "extra"),
            resp_command("INCR", "k"),
        ]
    )
    await client.aclose()
    assert replies[0] is True or replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == 42


async def test_a_killed_connection_raises_then_the_next_call_reconnects(redis_url: str) -> None:
    """Redis dropping the connection is a ConnectionError (retried by the daemon), once."""
    client = aioredis.Redis.from_url(redis_url)
    channel = Channel(client)
    await channel.execute([resp_command("CLIENT", "SETNAME", "tick-path")])
    await client.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(RedisConnectionError):
        await channel.execute([resp_command("PING")])
    replies = await channel.execute([resp_command("PING")])
    await client.aclose()
    assert replies in ([True], [b"PONG"])


async def test_a_cancelled_call_leaves_no_reply_for_the_next_caller(redis_url: str) -> None:
    """Cancelled while Redis is still working: the next call gets its own reply, not that one."""
    client = aioredis.Redis.from_url(redis_url)
    channel = Channel(client)
    slow = asyncio.create_task(channel.execute([resp_command("BLPOP", "empty", "0.3")]))
    await asyncio.sleep(0.05)  # sent; its reply is 0.25 s away
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    replies = await channel.execute([resp_command("ECHO", "mine")])
    await client.aclose()
    assert replies == [b"mine"]
