"""What liqmon demands of its Redis at start: a ``maxmemory-policy`` that never evicts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import structlog
from harness import running, settings_for

from monitor.config.loading import load_settings
from monitor.core.errors import UnsafeServer
from monitor.devtools.embedded import RedisClusterServers
from monitor.state.prerequisites import check_eviction
from monitor.state.transport import connect

ROOT = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"


@pytest.mark.parametrize("command", [["run"], ["publish"]], ids=["run", "publish"])
def test_liqmon_refuses_to_start_against_a_redis_that_may_evict(
    command: list[str], fresh_redis, mqtt_url: str
) -> None:
    """`liqmon run` and `liqmon publish` exit 2 with one line naming the policy and the fix."""
    server = fresh_redis(extra_args=["--maxmemory-policy", "allkeys-lru"])
    env = dict(
        os.environ,
        LIQMON_REDIS_URL=server.url,
        LIQMON_MQTT_URL=mqtt_url,
        LIQMON_HTTP_PORT="0",
        LIQMON_LOG_FORMAT="json",
    )
    done = subprocess.run(
        [str(LIQMON), "--config", str(ROOT / "config" / "liqmon.toml"), *command],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.decode().splitlines() if line.startswith("liqmon:")]
    assert errors == [
        f"liqmon: error: Redis 127.0.0.1:{server.port} has maxmemory-policy allkeys-lru: "
        "it may evict positions and outbox entries; run CONFIG SET maxmemory-policy "
        "noeviction there (and set it in its redis.conf), or set redis.allow_eviction = true "
        "(LIQMON_REDIS_ALLOW_EVICTION=true) to start anyway"
    ]
    assert b"Traceback" not in done.stderr


async def test_allow_eviction_lets_the_monitor_start_with_a_warning(
    fresh_redis, mqtt_url: str, prefix: str
) -> None:
    """With redis.allow_eviction the monitor gets ready and warns that Redis may evict."""
    server = fresh_redis(extra_args=["--maxmemory-policy", "volatile-ttl"])
    settings = settings_for(server.url, mqtt_url, prefix)
    settings = replace(settings, redis=replace(settings.redis, allow_eviction=True))
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as daemon:
            assert await daemon.failing() == {}
    warnings = [line for line in logs if line["event"] == "redis_may_evict"]
    assert [(w["node"], w["policy"]) for w in warnings] == [
        (f"127.0.0.1:{server.port}", "volatile-ttl")
    ]


async def test_the_policy_is_read_from_info_when_config_is_disabled(fresh_redis) -> None:
    """A Redis with CONFIG renamed away (as managed services do) is still refused."""
    server = fresh_redis(
        extra_args=["--maxmemory-policy", "allkeys-random", "--rename-command", "CONFIG", ""]
    )
    client = connect(
        replace(load_settings(ROOT / "config" / "liqmon.toml", {}).redis, url=server.url)
    ).client
    try:
        with pytest.raises(UnsafeServer, match="maxmemory-policy allkeys-random"):
            await check_eviction(client, allow_eviction=False)
    finally:
        await client.aclose()


async def test_an_unreadable_policy_is_a_warning_not_a_refusal(fresh_redis) -> None:
    """With both CONFIG and INFO renamed away, the check warns and lets the start go on."""
    server = fresh_redis(
        extra_args=["--rename-command", "CONFIG", "", "--rename-command", "INFO", ""]
    )
    client = connect(
        replace(load_settings(ROOT / "config" / "liqmon.toml", {}).redis, url=server.url)
    ).client
    try:
        with structlog.testing.capture_logs() as logs:
            await check_eviction(client, allow_eviction=False)
    finally:
        await client.aclose()
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
        "redis_memory_policy_unknown"
    ]


async def test_every_primary_of_a_cluster_is_checked(
    redis_cluster: RedisClusterServers, cluster_url: str
) -> None:
    """On a Redis Cluster, one primary that may evict is enough to refuse, and it is named."""
    node = redis_cluster.nodes[-1]
    settings = load_settings(ROOT / "config" / "liqmon.toml", {}).redis
    client = connect(replace(settings, url=cluster_url, cluster=True)).client
    with redis.Redis.from_url(node.url) as direct:
        direct.config_set("maxmemory-policy", "volatile-lfu")
    try:
        with pytest.raises(UnsafeServer) as refused:
            await check_eviction(client, allow_eviction=False)
        assert str(refused.value).startswith(
            f"Redis 127.0.0.1:{node.port} has maxmemory-policy volatile-lfu:"
        )
    finally:
        with redis.Redis.from_url(node.url) as direct:
            direct.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


def test_allow_eviction_is_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """`[redis] allow_eviction = true` and LIQMON_REDIS_ALLOW_EVICTION both turn the refusal off."""
    shipped = (ROOT / "config" / "liqmon.toml").read_text()
    config = tmp_path / "liqmon.toml"
    config.write_text(shipped.replace("[redis]\n", "[redis]\nallow_eviction = true\n", 1))
    assert load_settings(config, {}).redis.allow_eviction is True
    shipped_path = ROOT / "config" / "liqmon.toml"
    assert load_settings(shipped_path, {}).redis.allow_eviction is False
    environ = {"LIQMON_REDIS_ALLOW_EVICTION": "yes"}
    assert load_settings(shipped_path, environ).redis.allow_eviction is True
