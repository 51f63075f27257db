"""The exception tree: every exception of liqmon sits on the branch that says what to do."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import feeds.errors
import monitor
from monitor.alerts.sinks import Refused as SinkRefused
from monitor.alerts.sinks import Retryable as SinkUnavailable
from monitor.bus.protocol import (
    AckTimeout,
    ConnectionLost,
    InvalidPacket,
    MqttError,
    Refused,
    SubscriptionRefused,
)
from monitor.cli.main import EXIT_USAGE, CommandError, explain
from monitor.config.tiers import TierDocumentError
from monitor.core import errors
from monitor.core.errors import (
    Bug,
    ConfigError,
    LiqmonError,
    Rejection,
    RequestFailed,
    Unavailable,
    UnsafeServer,
    UsageError,
    leaves,
)
from monitor.core.status import IllegalTransition
from monitor.devtools.embedded import EmbeddedServerError, ServerNotFoundError, ServerStartError
from monitor.state.books import BookPending
from monitor.web.api import ApiError
from monitor.web.live import PageClosed

pytestmark = pytest.mark.unit

BRANCHES = (UsageError, Unavailable, Rejection, RequestFailed, Bug)

BRANCH_OF: list[tuple[type[Exception], type[LiqmonError]]] = [
    (ConfigError, UsageError),
    (UnsafeServer, UsageError),
    (Rejection, Rejection),
    (ApiError, RequestFailed),
    (CommandError, RequestFailed),
    (IllegalTransition, Bug),
    (EmbeddedServerError, Unavailable),
    (ServerNotFoundError, Unavailable),
    (ServerStartError, Unavailable),
    (PageClosed, Unavailable),
    (TierDocumentError, RequestFailed),
    (SinkUnavailable, Unavailable),
    (BookPending, Unavailable),
    (SinkRefused, RequestFailed),
]
MQTT_BRANCH_OF: list[tuple[type[Exception], type[LiqmonError]]] = [
    (error, Unavailable)
    for error in (MqttError, Refused, SubscriptionRefused, ConnectionLost, AckTimeout)
] + [
    # Refused before anything is sent, the connection lives; an MqttError all the same,
    # so that one handler of a publish covers every way it can fail.
    (InvalidPacket, Unavailable)
]


def monitor_exceptions() -> set[type[BaseException]]:
    """Every exception class defined in a module of the ``monitor`` package."""
    found: set[type[BaseException]] = set()
    for module_info in pkgutil.walk_packages(monitor.__path__, "monitor."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.add(value)
    return found


@pytest.mark.parametrize(("error", "branch"), BRANCH_OF, ids=lambda x: x.__name__)
def test_each_exception_sits_on_its_branch(
    error: type[Exception], branch: type[LiqmonError]
) -> None:
    """Each of liqmon's exceptions derives from the branch of its meaning, and from no other."""
    assert [branch] == [b for b in BRANCHES if issubclass(error, b)]


@pytest.mark.parametrize(
    ("error", "branch"),
    MQTT_BRANCH_OF,
    ids=lambda x: x.__name__,
)
def test_mqtt_errors_mean_unavailable(error: type[Exception], branch: type[LiqmonError]) -> None:
    """The daemon's MQTT connection errors mean a dependency is unavailable: retry, exit 3."""
    assert [branch] == [b for b in BRANCHES if issubclass(error, b)]


def test_every_exception_of_monitor_is_placed() -> None:
    """No module of ``monitor`` defines an exception outside the table above (a new one must
    choose its branch)."""
    placed = {error for error, _ in BRANCH_OF + MQTT_BRANCH_OF} | set(BRANCHES) | {LiqmonError}
    assert set() == monitor_exceptions() - placed


def test_branches_are_drawn_in_the_docstring() -> None:
    """The module docstring names every branch and the base class of every module's errors."""
    named = (*BRANCHES, LiqmonError, ConfigError, UnsafeServer, ApiError, CommandError)
    named += (IllegalTransition, EmbeddedServerError, MqttError)
    assert [] == [error.__name__ for error in named if error.__name__ not in (errors.__doc__ or "")]


def test_feed_errors_stay_outside_the_tree() -> None:
    """``feeds/`` imports nothing of ``monitor``: its errors have their own base."""
    assert not issubclass(feeds.errors.FeedError, LiqmonError)
    assert "FeedError" in (errors.__doc__ or "")


def test_rejection_keeps_reason_and_detail() -> None:
    """A rejection carries a stable reason token and the human detail, both in its text."""
    rejection = Rejection("bad_price", "price must be positive")
    assert ("bad_price", "price must be positive") == (rejection.reason, rejection.detail)
    assert "bad_price: price must be positive" == str(rejection)


def test_usage_errors_exit_2_with_their_message() -> None:
    """The CLI explains any usage error (a configuration problem too) by its message, exit 2."""
    assert ("[redis] url is empty", EXIT_USAGE) == explain(UsageError("[redis] url is empty"), None)
    assert ("bad key", EXIT_USAGE) == explain(ConfigError("bad key"), None)


def test_a_bug_is_not_explained() -> None:
    """An illegal status move is a bug: the CLI keeps its traceback (explain returns None)."""
    assert explain(IllegalTransition("healthy -> closed"), None) is None


def test_leaves_opens_nested_groups_in_order() -> None:
    """``leaves`` yields the exceptions of nested exception groups, depth first, in order."""
    first, second, third = ConfigError("a"), Rejection("r", "b"), IllegalTransition("c")
    group = ExceptionGroup("outer", [first, ExceptionGroup("inner", [second, third])])
    assert [first, second, third] == list(leaves(group))
    assert [first] == list(leaves(first))
