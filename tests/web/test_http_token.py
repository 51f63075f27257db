"""With http.token set, data endpoints need the bearer token; health checks do not."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
import websockets
from harness import running, settings_for
from websockets.asyncio.client import connect

TOKEN = "t0ken-for-tests"


def status_of(url: str, token: str | None = None) -> int:
    """The HTTP status of a GET, with an optional bearer token."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


async def test_bearer_token_guards_api_metrics_and_live_feed(
    redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """No token: 401 on /api, /metrics and /ws; the right token opens them; /healthz stays open."""
    settings = settings_for(redis_url, mqtt_url, prefix)
    settings = replace(settings, http=replace(settings.http, token=TOKEN))
    async with running(settings) as daemon:
        base = f"http://127.0.0.1:{daemon.http.bound_port}"
        checks = [
            (f"{base}/healthz", None),
            (f"{base}/api/symbols", None),
            (f"{base}/api/symbols", "wrong"),
            (f"{base}/api/symbols", TOKEN),
            (f"{base}/api/symbols?token={TOKEN}", None),
            (f"{base}/metrics", None),
            (f"{base}/metrics", TOKEN),
        ]
        statuses = [await asyncio.to_thread(status_of, url, token) for url, token in checks]
        ws = f"ws://127.0.0.1:{daemon.http.bound_port}/ws"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with connect(ws):
                pass
        async with connect(f"{ws}?token={TOKEN}") as feed:
            hello = await asyncio.wait_for(feed.recv(), timeout=5)
    assert [200, 401, 401, 200, 200, 401, 200] == statuses
    assert 401 == refused.value.response.status_code
    assert hello
