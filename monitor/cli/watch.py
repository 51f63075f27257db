"""``liqmon watch``: events from the bus, each once (see :mod:`monitor.core.seen`)."""

from __future__ import annotations

import sys
import uuid

import orjson

from monitor.bus.tool_client import make_client
from monitor.config.model import Settings
from monitor.core.seen import SeenEvents, format_event
from monitor.core.topics import events_filter


async def watch(
    settings: Settings,
    account: str,
    symbol: str,
    event_type: str,
    *,
    as_json: bool = False,
    count: int = 0,
) -> None:
    """Print events as they arrive, each once; stop after ``count`` (0 = never)."""
    seen = SeenEvents()
    printed = 0
    client = make_client(settings.mqtt, f"liqmon-watch-{uuid.uuid4().hex[:8]}", persistent=False)
    async with client:
        await client.subscribe(
            events_filter(settings.mqtt.topic_prefix, account, symbol, event_type), qos=1
        )
        sys.stderr.write("watching events (Ctrl-C to stop)\n")
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b"{}"
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict) or not seen.first_time(str(event.get("event_id"))):
                continue
            line = payload.decode() if as_json else format_event(event)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            printed += 1
            if count and printed >= count:
                return


__all__ = ["SeenEvents", "events_filter", "format_event", "watch"]
