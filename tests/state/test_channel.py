"""The tick path's own Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import until
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.state.channel import Channel, resp_command


async def _blocked(client: aioredis.Redis) -> bool:
    """True while a client of Redis waits in a blocking command."""
    return int((await client.info("clients"))["blocked_clients"]) > 0


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
    await until(lambda: _blocked(client), every_s=0.005)  # sent; Redis holds the reply 0.3 s
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    replies = await channel.execute([resp_command("ECHO", "mine")])
    await client.aclose()
    assert replies == [b"mine"]


async def test_a_silent_redis_times_out_at_the_deadline_and_the_next_call_reconnects(
    fresh_redis: Any,
) -> None:
    """Redis frozen (SIGSTOP): the call raises TimeoutError at its deadline, the channel says it
    is stuck until a reply comes again, and no cancellation is left pending."""
    server = fresh_redis()
    client = aioredis.Redis.from_url(server.url)
    channel = Channel(client, deadline_s=0.3)
    task = asyncio.current_task()
    assert task is not None
    try:
        await channel.execute([resp_command("PING")])
        assert channel.stuck() is None
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await channel.execute([resp_command("PING")])
            waited_s = time.monotonic() - started
            assert 0 == task.cancelling()
            assert "no reply within 0.3 s" == channel.stuck()
        finally:
            os.kill(server.pid, signal.SIGCONT)
        replies = await channel.execute([resp_command("ECHO", "again")])
    finally:
        await client.aclose()
    assert 0.3 <= waited_s < 1.0
    assert [b"again"] == replies
    assert channel.stuck() is None


async def test_a_blocking_command_is_given_its_own_deadline(redis_url: str) -> None:
    """A read that blocks on purpose (the outbox reader's XREADGROUP BLOCK) may take longer
    than the channel's deadline when the call allows it."""
    client = aioredis.Redis.from_url(redis_url)
    channel = Channel(client, deadline_s=0.1)
    try:
        replies = await channel.execute([resp_command("BLPOP", "empty", "0.3")], deadline_s=0.6)
    finally:
        await client.aclose()
    assert [None] == replies
    assert channel.stuck() is None


async def test_a_deadline_on_several_channels_drops_each_connection(fresh_redis: Any) -> None:
    """Writes to two servers, one frozen: the batch times out and the live one still answers
    the next call with its own reply."""
    live, stopped = fresh_redis(), fresh_redis()
    live_client = aioredis.Redis.from_url(live.url)
    stopped_client = aioredis.Redis.from_url(stopped.url)
    first, second = Channel(live_client, deadline_s=0.3), Channel(stopped_client, deadline_s=0.3)
    try:
        assert stopped.pid is not None
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await Channel.execute_each(
                    [
                        (first, [resp_command("BLPOP", "empty", "0.2")]),
                        (second, [resp_command("PING")]),
                    ]
                )
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        replies = await first.execute([resp_command("ECHO", "mine")])
    finally:
        await live_client.aclose()
        await stopped_client.aclose()
    assert [b"mine"] == replies
