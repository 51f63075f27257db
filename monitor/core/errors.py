"""liqmon's exceptions: one tree, each branch one operational meaning.

A branch says what the operator or the caller does about an exception, and
what liqmon does with it; catch a branch, not a list of leaves::

    LiqmonError                 base; never raised itself
    ├── UsageError              fix the configuration or the arguments: nothing was done;
    │   │                       the daemon refuses to start, a command exits 2
    │   └── ConfigError         the configuration file or environment cannot be used
    │       └── UnsafeServer    Redis or the broker is set up to lose data (found at start)
    ├── Unavailable             a server liqmon depends on cannot be reached, broke the
    │                           connection, or (demo and tests) would not start: the daemon
    │                           retries with backoff and reports not ready; a command exits 3
    │                           (start it, or point the configuration at it); a dashboard
    │                           page that went away ends its own feed and nothing else
    ├── Rejection               bad input from outside (a price, a position, a message):
    │                           rejected, counted, logged, dead-lettered; never stops anything
    ├── RequestFailed           a request (HTTP call, command) that cannot be answered as asked:
    │                           the caller gets the status the exception carries (HTTP 400,
    │                           404 or 503; exit 1 or 2) and the process goes on
    └── Bug                     an invariant of liqmon's own broke: never caught; the process
                                stops with the traceback

Where the classes live (each next to the code that raises it):

- ``UsageError``, ``ConfigError``, ``UnsafeServer``, ``Rejection``: here.
- ``Unavailable``: ``monitor.bus.protocol.MqttError`` and its subclasses (the daemon's
  MQTT connections), ``monitor.devtools.embedded.EmbeddedServerError`` and its
  subclasses (the demo's and the tests' own redis-server and mosquitto),
  ``monitor.web.live.PageClosed`` (a dashboard page's connection is gone),
  ``monitor.alerts.sinks.Retryable`` (an alert sink to try again later).
- ``RequestFailed``: ``monitor.web.api.ApiError`` (with an HTTP status),
  ``monitor.cli.main.CommandError`` (with an exit status),
  ``monitor.config.tiers.TierDocumentError`` (a venue's tier document ``liqmon tiers``
  cannot read: exit 1), ``monitor.alerts.sinks.Refused`` (an alert sink refused the
  request: dead-lettered at once).
- ``Bug``: ``monitor.core.status.IllegalTransition``.

Libraries' exceptions are not wrapped but belong to a branch all the same:
``redis.exceptions.ConnectionError`` and ``TimeoutError`` and, in the tools,
``aiomqtt.MqttError`` mean *unavailable* and are retried where they occur;
any other exception is a bug and propagates.

``feeds/`` stands alone (it imports nothing of ``monitor``, a contract that
``lint-imports`` checks), so its ``feeds.errors.FeedError`` tree is its own:
``FrameError`` is a rejection, ``FeedFatalError`` stops that source.
"""

from __future__ import annotations

from collections.abc import Iterator


class LiqmonError(Exception):
    """Base of liqmon's own exceptions; catch one of its branches instead."""


class UsageError(LiqmonError):
    """What the operator gave cannot be used: fix the configuration or the arguments (exit 2)."""


class ConfigError(UsageError):
    """The configuration cannot be used; the message names the file, key and problem."""


class UnsafeServer(ConfigError):
    """Redis or the broker is configured so that liqmon would lose data (e.g. Redis may evict).

    Found at start, once the server answers; the message is one line naming
    the server, the setting and the fix.
    """


class Unavailable(LiqmonError):
    """A server liqmon depends on cannot be reached or used now: retry, or start it (exit 3)."""


class Rejection(LiqmonError):
    """An input message that cannot be used: reject, count, dead-letter, go on.

    ``reason`` is a short stable token (used as a metric label and in the
    dead-letter stream); ``detail`` is the human explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RequestFailed(LiqmonError):
    """A request or command that cannot be answered as asked; the subclass carries the status."""


class Bug(LiqmonError):
    """An invariant of liqmon's own broke (never an input error): let it propagate."""


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``error``, exception groups opened at every level (in order)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error
