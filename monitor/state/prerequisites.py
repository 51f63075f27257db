"""What liqmon needs of its Redis, checked at start.

Redis is liqmon's only copy of every position, trigger index and outbox
entry. Under any ``maxmemory-policy`` but ``noeviction``, a Redis that
reaches ``maxmemory`` deletes keys to make room: a position evicted is a
position no longer watched, an outbox entry evicted an event never
delivered, and nobody is told. Under ``noeviction`` the same Redis refuses
the write instead (an OOM error the daemon reports and retries), which is
loud and loses nothing. So ``liqmon run`` and ``liqmon publish`` refuse to
start against a Redis that may evict, unless ``redis.allow_eviction`` says
the operator knows.

The policy is read with ``CONFIG GET``; managed services often disable or
rename CONFIG, so ``INFO memory``'s ``maxmemory_policy`` is the fallback.
When neither answers, the check says so in a warning and lets the start go on.
On a Redis Cluster every primary is asked (each has its own setting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from monitor.core.errors import UnsafeServer
from monitor.state.transport import Client

log = structlog.get_logger("liqmon.prerequisites")

SAFE_POLICY = "noeviction"
"""The one ``maxmemory-policy`` under which Redis never deletes a key to make room."""

ROUND_TRIP_S = 5.0
"""Deadline of one question to one Redis node."""


def eviction_problem(node: str, policy: str) -> str | None:
    """The one-line refusal for a node whose policy may evict, or None when it is safe."""
    if policy == SAFE_POLICY:
        return None
    return (
        f"Redis {node} has maxmemory-policy {policy}: it may evict positions and outbox "
        f"entries; run CONFIG SET maxmemory-policy {SAFE_POLICY} there (and set it in its "
        "redis.conf), or set redis.allow_eviction = true (LIQMON_REDIS_ALLOW_EVICTION=true) "
        "to start anyway"
    )


async def check_eviction(client: Client, allow_eviction: bool) -> None:
    """Raise :class:`UnsafeServer` if a Redis node (every primary of a cluster) may evict.

    With ``allow_eviction``, a node that may evict is logged as a warning
    instead. Redis unreachable raises redis-py's connection errors (the
    caller retries); a node whose policy cannot be read is logged and passed.
    """
    for node, policy in (await memory_policies(client)).items():
        if policy is None:
            log.warning(
                "redis_memory_policy_unknown",
                node=node,
                hint=f"neither CONFIG GET nor INFO memory answered: make sure "
                f"maxmemory-policy is {SAFE_POLICY}",
            )
            continue
        problem = eviction_problem(node, policy)
        if problem is None:
            continue
        if not allow_eviction:
            raise UnsafeServer(problem)
        log.warning("redis_may_evict", node=node, policy=policy, allowed_by="redis.allow_eviction")


async def memory_policies(client: Client) -> Mapping[str, str | None]:
    """Each node's ``maxmemory-policy`` (every primary of a cluster); None where unreadable."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        return {
            node.name: await _policy(client, node.name, {"target_nodes": node})
            for node in client.get_primaries()
        }
    options = client.connection_pool.connection_kwargs
    name = options.get("path") or f"{options.get('host')}:{options.get('port')}"
    return {str(name): await _policy(client, str(name), {})}


async def _policy(client: Client, node: str, route: dict[str, object]) -> str | None:
    try:
        async with asyncio.timeout(ROUND_TRIP_S):
            reply = await client.config_get("maxmemory-policy", **route)
        return _text(reply["maxmemory-policy"])
    except (ResponseError, KeyError) as error:
        # CONFIG disabled, renamed or denied to this user.
        log.debug("redis_config_get_refused", node=node, error=str(error))
    try:
        async with asyncio.timeout(ROUND_TRIP_S):
            info = await client.info("memory", **route)
        return _text(info["maxmemory_policy"])
    except (ResponseError, KeyError) as error:
        log.debug("redis_info_refused", node=node, error=str(error))
    return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
