"""Apprise (Slack, Telegram, e-mail) and PagerDuty routes against local stand-ins.

Slack's and Telegram's Apprise plugins post to their services' fixed hosts;
the tests point those base URLs (``NotifySlack.webhook_url``,
``NotifyTelegram.notify_url``) at the local receiver, so Apprise's own code
builds and sends the real requests. E-mail goes to a real SMTP server
(aiosmtpd); PagerDuty's endpoint is a route setting (``url``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from alert_samples import alert, event, message
from apprise.plugins.slack import NotifySlack
from apprise.plugins.telegram import NotifyTelegram
from conftest import alert_settings, forwarding, publish
from harness import until
from sink_server import SinkServer, fail, hang

from monitor.config.model import AlertRoute

# Apprise's e-mail plugin imports imghdr (deprecated in Python 3.11) when its plugins load.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

TEMPLATE = "{type} {symbol} {side} {qty} @ {mark_price} (liq {liquidation_price}) acct {account}"
OUTAGE_S = 3.0
"""How long a service goes away (the issue's 30 s, scaled to keep the tests short)."""
FAST = dict(timeout_s=5.0, backoff_first_s=0.05, backoff_max_s=0.5)


def apprise_route(name: str, **keys: Any) -> AlertRoute:
    return AlertRoute(name=name, type="apprise", url_env=f"{name.upper()}_URL", **FAST, **keys)


async def test_margin_calls_above_a_size_reach_slack(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's Slack route: large margin calls only, the template's text, a 500 retried,
    a 400 dead-lettered."""
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{sinks.url}/services")
    route = apprise_route("slack", types=("margin_call",), min_notional="100000", template=TEMPLATE)
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    env = {"SLACK_URL": "slack://T000A/B000B/XXXXXXXXXXXX"}
    sinks.then("/services", fail(500))
    async with forwarding(settings, env) as forwarder:
        await publish(
            settings,
            [
                message(prefix, event(1, "margin_call", qty="3")),  # 150,000: sent
                message(prefix, event(2, "margin_call", qty="1")),  # 50,000: left out
                message(prefix, event(3, "liquidation", qty="3")),  # not even subscribed to
            ],
        )
        await until(lambda: len(sinks.to("/services", 200)) == 1)
        sinks.then("/services", fail(400))
        await publish(settings, [message(prefix, event(4, "margin_call", qty="5"))])
        await until(lambda: forwarder.metrics.dead_lettered.labels("slack")._value.get() == 1)
        assert 1 == forwarder.metrics.filtered.labels("slack")._value.get()
    posted = sinks.to("/services")
    assert [500, 200, 400] == [r.answered for r in posted]
    assert "/services/T000A/B000B/XXXXXXXXXXXX" == posted[1].path
    text = "margin_call BTCUSDT long 3 @ 50000 (liq 49500) acct acct-1"
    assert text in posted[1].body.decode()
    assert "attachments" in posted[1].json() or "text" in posted[1].json()


async def test_telegram_gets_the_message_after_a_429(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 from Telegram's Bot API is retried; sendMessage carries the chat id and text."""
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"{sinks.url}/bot")
    route = apprise_route("telegram", types=("liquidation",))
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    env = {"TELEGRAM_URL": "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321"}
    sinks.then("/bot", fail(429, {"Retry-After": "0"}))
    async with forwarding(settings, env):
        await publish(settings, [message(prefix, event(1))])
        await until(lambda: len(sinks.to("/bot", 200)) == 1)
    posted = sinks.to("/bot")
    assert [429, 200] == [r.answered for r in posted]
    assert "/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage" == posted[1].path
    sent = posted[1].json()
    assert "987654321" == str(sent["chat_id"])
    assert "liquidation BTCUSDT long 2 @ 50000" in sent["text"]


class Mailbox:
    """An aiosmtpd handler: refuses the first ``refuse`` messages (451), keeps the rest."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.messages: list[Message] = []

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a fixed port that can go away and come back."""

    def __init__(self, box: Mailbox) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.box = box
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on a free port that refuses the first message."""
    server = SmtpServer(Mailbox(refuse=1))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_emails_arrive_through_a_refusal_and_an_outage(
    smtp: SmtpServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """Apprise's mailto:// through a real SMTP server: a 451 is retried, and a message sent
    while the server is away arrives when it is back (Apprise paces e-mails seconds apart,
    so each retry comes that much later)."""
    box = smtp.box
    route = apprise_route("mail", types=("feed_stale",), title="liqmon: {type} {symbol}")
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    url = (
        f"mailto://127.0.0.1:{smtp.port}?mode=insecure&from=liqmon@example.com&to=desk@example.com"
    )
    async with forwarding(settings, {"MAIL_URL": url}) as forwarder:
        await publish(settings, [message(prefix, alert("feed_stale"))])
        await until(lambda: len(box.messages) == 1, timeout_s=60)
        assert 1 <= forwarder.metrics.retried.labels("mail")._value.get()
        smtp.stop()
        await publish(settings, [message(prefix, alert("feed_stale", "ETHUSDT"))])
        await asyncio.sleep(OUTAGE_S)  # the outage itself: the server stays away this long
        smtp.start()
        await until(lambda: len(box.messages) == 2, timeout_s=60)
    mail = box.messages[0]
    assert "liqmon: feed_stale BTCUSDT" == mail["Subject"]
    assert "liqmon: feed_stale ETHUSDT" == box.messages[1]["Subject"]
    assert "desk@example.com" == mail["To"]
    bodies = [part.get_payload(decode=True) for part in mail.walk() if not part.is_multipart()]
    assert any(b"feed_stale BTCUSDT age_s=12.000" in body for body in bodies if body)


async def test_pagerduty_incidents_open_and_resolve_through_an_outage(
    sinks: SinkServer, redis_url: str, mqtt_url: str, prefix: str
) -> None:
    """feed_stale triggers '{symbol}:feed_stale', feed_resumed resolves it; a 503, a 429 and
    the endpoint going away lose nothing."""
    route = AlertRoute(
        name="oncall",
        type="pagerduty",
        url=f"{sinks.url}/v2/enqueue",
        routing_key_env="PD_KEY",
        types=("feed_stale", "feed_resumed"),
        **FAST,
    )
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    sinks.then("/v2/enqueue", fail(503), fail(429, {"Retry-After": "0"}))
    async with forwarding(settings, {"PD_KEY": "R0UT1NGKEY"}):
        await publish(
            settings,
            [message(prefix, alert("feed_stale")), message(prefix, alert("feed_stale", "ETHUSDT"))],
        )
        await until(lambda: len(sinks.to("/v2/enqueue", 202)) == 2)
        await sinks.stop()
        await publish(settings, [message(prefix, alert("feed_resumed"))])
        await sinks.start()
        await until(lambda: len(sinks.to("/v2/enqueue", 202)) == 3)
    incidents: dict[str, str] = {}
    for request in sinks.to("/v2/enqueue", 202):
        sent = request.json()
        assert "R0UT1NGKEY" == sent["routing_key"]
        incidents[sent["dedup_key"]] = {"trigger": "open", "resolve": "resolved"}[
            sent["event_action"]
        ]
    assert {"BTCUSDT:feed_stale": "resolved", "ETHUSDT:feed_stale": "open"} == incidents
    first = sinks.to("/v2/enqueue", 202)[0].json()
    assert ("critical", "feed_stale") == (first["payload"]["severity"], first["payload"]["class"])
    assert [503, 429] == [r.answered for r in sinks.to("/v2/enqueue")][:2]


SERVICES = {
    # name: (Apprise URL or None for PagerDuty, the path its requests take)
    "slack": ("slack://T000A/B000B/XXXXXXXXXXXX?rto=1&cto=1", "/services"),
    "telegram": (
        "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321?rto=1&cto=1",
        "/bot",
    ),
    "pagerduty": (None, "/v2/enqueue"),
}


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_service_survives_429_5xx_a_timeout_and_an_outage(
    service: str,
    sinks: SinkServer,
    redis_url: str,
    mqtt_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 429 with Retry-After, a 502, an answer too late and the service away for a while:
    every event is shown; a repeat comes only from the answer that came too late."""
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{sinks.url}/services")
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"{sinks.url}/bot")
    url, path = SERVICES[service]
    keys: dict[str, Any] = dict(types=("liquidation",), template="{event_id} {type}")
    fast = FAST | {"timeout_s": 1.0}
    if url is None:
        route = AlertRoute(
            name=service, type=service, url=f"{sinks.url}{path}", routing_key_env="KEY",
            **keys, **fast,
        )  # fmt: skip
        env = {"KEY": "R0UT1NGKEY"}
    else:
        route = AlertRoute(name=service, type="apprise", url_env="URL", **keys, **fast)
        env = {"URL": url}
    settings = alert_settings(redis_url, mqtt_url, prefix, route)
    sinks.then(path, fail(429, {"Retry-After": "1"}), fail(502), hang(2.0))

    def shown() -> set[str]:
        return {
            f"pos-{n}:1:1"
            for n in range(3)
            for r in sinks.to(path)
            if r.answered < 300 and f"pos-{n}:1:1" in r.body.decode()
        }

    async with forwarding(settings, env):
        await publish(settings, [message(prefix, event(0))])
        await until(lambda: "pos-0:1:1" in shown(), timeout_s=30)
        await sinks.stop()
        await publish(settings, [message(prefix, event(1)), message(prefix, event(2))])
        await asyncio.sleep(OUTAGE_S)  # the outage itself: the service stays away this long
        await sinks.start()
        await until(lambda: len(shown()) == 3, timeout_s=30)
    answered = [r.answered for r in sinks.to(path)]
    assert [429, 502] == answered[:2]
    assert answered[2] < 300  # answered, but after the client gave up
    accepted = [r for r in sinks.to(path) if r.answered < 300]
    assert len(accepted) <= 4  # three events; the late answer may have been shown too
    if service == "pagerduty":
        # Apprise does not pass Retry-After on: only the direct HTTP sinks honour it.
        retried_after = sinks.to(path)[1].at_s - sinks.to(path)[0].at_s
        assert retried_after >= 0.95, "Retry-After: 1 was honoured"
