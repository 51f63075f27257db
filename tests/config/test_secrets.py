"""No secret ever appears in logs, metrics or error messages."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import structlog
from harness import mqtt_client, publish, running, settings_for, until

from monitor.config.loading import parse_settings
from monitor.core.errors import ConfigError

SECRET = "s3cret-Pa55"


def events(logs: list[Any]) -> set[str]:
    """The names of the events logged so far."""
    return {entry.get("event") for entry in logs}


async def test_credentials_stay_out_of_logs_and_metrics(
    fresh_redis: Any, mqtt_url: str, prefix: str
) -> None:
    """A daemon with passwords in its URLs, fed garbage, cut off from Redis: never shows them."""
    server = fresh_redis(requirepass=SECRET)
    redis_url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    mqtt_with_user = mqtt_url.replace("mqtt://", f"mqtt://liqmon:{SECRET}@")
    settings = settings_for(redis_url, mqtt_with_user, prefix)
    with structlog.testing.capture_logs() as logs:
        async with running(settings) as daemon, mqtt_client(mqtt_url) as client:
            await publish(client, f"{prefix}/positions", {"id": "x"})
            await client.publish(f"{prefix}/prices/BTCUSDT/mark", b"{not json", qos=1)
            server.stop()
            async with asyncio.timeout(10):
                while "redis" not in await daemon.failing():
                    await asyncio.sleep(0.05)
            await until(lambda: {"message_rejected", "redis_unavailable"} <= events(logs))
            metrics = daemon.metrics.render().decode()
            failing = orjson.dumps(await daemon.failing()).decode()
            server.restart()
    text = "\n".join(repr(entry) for entry in logs)
    assert any(entry.get("event") == "message_rejected" for entry in logs)
    assert any(entry.get("event") == "redis_unavailable" for entry in logs)
    for where in (text, metrics, failing):
        assert SECRET not in where


def test_config_errors_do_not_echo_credentials() -> None:
    """A URL with a bad scheme is reported without its user and password."""
    document = {"redis": {"url": f"http://admin:{SECRET}@db:6379/0"}, "symbols": {}}
    with pytest.raises(ConfigError) as caught:
        parse_settings(document, "liqmon.toml", {})
    assert SECRET not in str(caught.value)
    assert "***@db:6379/0" in str(caught.value)
