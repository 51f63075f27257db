"""The few exceptions liqmon raises, each with one operational meaning.

::

    LiqmonError
    ├── ConfigError      bad configuration: the daemon refuses to start (exit 2)
    │   └── UnsafeServer a server it depends on is set up to lose data: refuses too (exit 2)
    └── Rejection        bad input from outside: reject, count, log, dead-letter; never stop

Infrastructure failures are not wrapped: ``redis.exceptions.ConnectionError``,
the daemon's MQTT connections' ``monitor.bus.protocol.MqttError`` and, in the tools,
``aiomqtt.MqttError`` are retried with backoff where they occur
(the daemon reports not-ready meanwhile). Anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Iterator


class LiqmonError(Exception):
    """Base of liqmon's own exceptions."""


class ConfigError(LiqmonError):
    """The configuration cannot be used; the message names the file, key and problem."""


class UnsafeServer(ConfigError):
    """Redis or the broker is configured so that liqmon would lose data (e.g. Redis may evict).

    Found at start, once the server answers; the message is one line naming
    the server, the setting and the fix.
    """


class Rejection(LiqmonError):
    """An input message that cannot be used.

    ``reason`` is a short stable token (used as a metric label and in the
    dead-letter stream); ``detail`` is the human explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``error``, exception groups opened at every level (in order)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error
