"""From a mark tick to the webhook: a real monitor's liquidation, forwarded as published."""

from __future__ import annotations

from conftest import alert_settings, forwarding
from harness import Collector, mqtt_client, position_object, publish, running, until
from sink_server import SinkServer
from test_webhook import ENV, SECRET, hook_route, readme_verify


async def test_a_monitors_liquidation_reaches_the_webhook_as_published(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """The body posted is the event the monitor published, signed, keyed by its event_id."""
    settings = alert_settings(redis_url, mqtt_url, prefix, hook_route(f"{sinks.url}/hook"))
    async with (
        running(settings),
        forwarding(settings, ENV),
        Collector(mqtt_url, prefix) as events,
        mqtt_client(mqtt_url) as client,
    ):
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "60000", "ts": 1})
        await publish(client, f"{prefix}/positions", [position_object("p-long", qty="0.5")])
        await publish(client, f"{prefix}/prices/BTCUSDT/mark", {"price": "54000", "ts": 2})
        published = await events.wait_for(1)
        await until(lambda: len(sinks.accepted) == 1)
    received = sinks.to("/hook", 200)[0]
    assert "liquidation" == published[0]["type"]
    assert published[0] == received.json()
    assert "p-long:1:1" == received.headers["idempotency-key"]
    assert readme_verify()(
        SECRET.encode(),
        received.body,
        received.headers["x-liqmon-timestamp"],
        received.headers["x-liqmon-signature"],
    )
