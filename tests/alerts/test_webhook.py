"""The webhook route against a local receiver: signed, retried, dead-lettered, none lost.

The receiver answers 500, 429 with Retry-After, too late, 400, and goes away
for a while (``OUTAGE_S``); the forwarder runs in this process against the
real Redis and Mosquitto of the test session.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from alert_samples import event, message
from conftest import alert_settings, forwarding, publish
from harness import until
from sink_server import SinkServer, fail, hang

from monitor.alerts.forwarder import retry_route
from monitor.alerts.ledger import RouteLedger
from monitor.config.model import AlertRoute

SECRET = "whsec-test"
ENV = {"HOOK_SECRET": SECRET}
OUTAGE_S = 3.0
"""How long the receiver goes away (the issue's 30 s, scaled to keep the test short)."""

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verify() -> Any:
    """The README's signature verification recipe, as a function (executed from the text)."""
    text = README.read_text()
    block = text[text.index("<!-- signature-recipe -->") :]
    code = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert code is not None
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)
    return scope["verify"]


def hook_route(url: str, **keys: Any) -> AlertRoute:
    """A webhook route with short deadlines and backoff, for the tests."""
    defaults: dict[str, Any] = dict(
        timeout_s=0.5, backoff_first_s=0.05, backoff_max_s=0.5, types=("liquidation",)
    )
    return AlertRoute(
        name="hook", type="webhook", url=url, secret_env="HOOK_SECRET", **(defaults | keys)
    )


async def test_every_event_arrives_signed_through_failures_and_an_outage(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """500, 429 + Retry-After, a timeout and an outage lose nothing; a repeat keeps its key."""
    settings = alert_settings(redis_url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    sinks.then("/hook", fail(500), fail(429, {"Retry-After": "1"}), hang(1.0))
    sent = [message(prefix, event(n, emitted_ms=int(time.time() * 1000))) for n in range(40)]
    sent.append(message(prefix, event(99, "margin_call")))  # not this route's type
    async with forwarding(settings, ENV) as forwarder:
        await publish(settings, sent[:20])
        await until(lambda: len(sinks.accepted) >= 20)
        await sinks.stop()
        await publish(settings, sent[20:])
        retried = forwarder.metrics.retried.labels("hook")
        before = retried._value.get()
        await until(lambda: retried._value.get() >= before + 2)
        await asyncio.sleep(OUTAGE_S)  # the outage itself: the receiver stays away this long
        await sinks.start()
        await until(lambda: len(sinks.accepted) >= 40)
    accepted = sinks.to("/hook", 200)
    expected = {f"pos-{n}:1:1" for n in range(40)}
    assert expected == {r.headers["idempotency-key"] for r in accepted}
    repeats = Counter(r.headers["idempotency-key"] for r in accepted)
    # The one answer that came too late is the only repeat, under the same key.
    assert 1 >= sum(count - 1 for count in repeats.values())
    payloads = {payload for _, payload in sent}
    verify = readme_verify()
    for received in sinks.to("/hook"):
        assert received.body in payloads
        assert verify(
            SECRET.encode(),
            received.body,
            received.headers["x-liqmon-timestamp"],
            received.headers["x-liqmon-signature"],
        )
    assert not verify(
        b"wrong",
        accepted[0].body,
        accepted[0].headers["x-liqmon-timestamp"],
        accepted[0].headers["x-liqmon-signature"],
    )
    statuses = [r.answered for r in sinks.to("/hook")]
    assert [500, 429, 200] == statuses[:3]
    after_429 = sinks.to("/hook")[2].at_s - sinks.to("/hook")[1].at_s
    assert after_429 >= 0.95, "Retry-After: 1 was honoured"


async def test_a_refused_event_is_dead_lettered_and_retry_sends_it(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """A 400 goes to the route's dead letters at once; ``alerts retry`` sends it later."""
    settings = alert_settings(redis_url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    sinks.then("/hook", fail(400))
    async with forwarding(settings, ENV) as forwarder:
        await publish(settings, [message(prefix, event(1)), message(prefix, event(2))])
        await until(lambda: len(sinks.to("/hook", 200)) == 1)
        assert 1 == forwarder.metrics.dead_lettered.labels("hook")._value.get()
        ledger = RouteLedger(forwarder.transport.client, prefix, "hook", 60, 100)
        letters = await ledger.dead_letters()
    assert [("pos-1:1:1", 1)] == [(letter.key, letter.attempts) for letter in letters]
    assert letters[0].error.startswith("HTTP 400")
    assert "pos-2:1:1" == sinks.to("/hook", 200)[0].headers["idempotency-key"]
    delivered, failing = await retry_route(settings, "hook", ENV)
    assert (1, []) == (delivered, failing)
    assert ["pos-2:1:1", "pos-1:1:1"] == [
        r.headers["idempotency-key"] for r in sinks.to("/hook", 200)
    ]
    assert (0, []) == await retry_route(settings, "hook", ENV)


async def test_a_burst_folds_into_one_summary(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Past five a window, the rest of a burst comes as one summary with the totals."""
    route = hook_route(f"{sinks.url}/hook", max_per_window=5, window_s=1.0)
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    async with forwarding(settings, ENV) as forwarder:
        await publish(settings, [message(prefix, event(n)) for n in range(50)])
        await until(lambda: len(sinks.to("/hook", 200)) == 6)
        assert 45 == forwarder.metrics.folded.labels("hook")._value.get()
    received = [r.json() for r in sinks.to("/hook", 200)]
    singles, summary = received[:5], received[5]
    assert [f"pos-{n}:1:1" for n in range(5)] == [doc["event_id"] for doc in singles]
    assert "summary" == summary["type"]
    assert "45 liquidations on BTCUSDT (notional 4500000) in the last 1 s" == summary["text"]
    assert sorted(f"pos-{n}:1:1" for n in range(5, 50)) == summary["keys"]
    assert summary["summary_id"] == sinks.to("/hook", 200)[5].headers["idempotency-key"]


async def test_readyz_and_metrics_on_the_forwarders_port(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """/readyz names the routes' sessions; /metrics counts deliveries per route."""
    import httpx

    settings = alert_settings(redis_url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    async with forwarding(settings, ENV) as forwarder:
        await publish(settings, [message(prefix, event(1))])
        await until(lambda: len(sinks.to("/hook", 200)) == 1)
        await until(lambda: forwarder.http.bound_port is not None)
        base = f"http://127.0.0.1:{forwarder.http.bound_port}"
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"{base}/readyz")
            metrics = (await client.get(f"{base}/metrics")).text
    assert (200, {"status": "ready"}) == (ready.status_code, ready.json())
    assert 'liqmon_alerts_delivered_total{route="hook"} 1.0' in metrics
    assert 'liqmon_alerts_oldest_undelivered_seconds{route="hook"} 0.0' in metrics
    assert 'liqmon_alerts_delivery_seconds_count{route="hook"} 1.0' in metrics
    if shutil.which("promtool") is not None:  # Debian's 'prometheus' package
        checked = subprocess.run(
            ["promtool", "check", "metrics"],
            input=metrics,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (0, "") == (checked.returncode, checked.stdout + checked.stderr)


async def test_events_published_while_no_forwarder_runs_are_delivered_at_its_start(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The route's persistent session keeps them in the broker while the forwarder is away."""
    settings = alert_settings(redis_url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    async with forwarding(settings, ENV):
        pass  # the first start creates the route's session and its subscriptions
    await publish(settings, [message(prefix, event(n)) for n in range(200)])
    async with forwarding(settings, ENV):
        await until(lambda: len(sinks.accepted) == 200)
    assert {f"pos-{n}:1:1" for n in range(200)} == set(sinks.accepted)
    assert {1} == set(sinks.accepted.values())
