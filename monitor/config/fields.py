"""The value types of the configuration, each one check with its operator-facing sentence.

Every type here is an ``Annotated`` type with a :class:`pydantic.PlainValidator`:
the check replaces pydantic's own coercion, so nothing is converted behind the
operator's back (``"8321"`` is not a port, ``1`` is not ``true``, ``0.8`` is the
decimal read from its text, never a binary float), and every refusal is one
:func:`~monitor.config.problems.problem` naming what was given. Defaults are
not validated: they are stated once, in the models, and trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from math import isfinite
from typing import Annotated, Any, TypeAlias
from urllib.parse import urlsplit

from pydantic import PlainValidator

from monitor.config.problems import problem
from monitor.core.errors import Rejection
from monitor.core.origins import normalize_host, normalize_origin
from monitor.core.wire import check_name

FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
"""The spellings of true and false an environment variable may use."""


def text(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise problem(f"must be a non-empty string, got {value!r}")
    return value


def optional_text(value: Any) -> str | None:
    """A string, or None when not given."""
    if value is not None and not isinstance(value, str):
        raise problem(f"must be a string, got {value!r}")
    return value


def flag(value: Any) -> bool:
    """``true`` or ``false`` (a TOML boolean, nothing else)."""
    if not isinstance(value, bool):
        raise problem(f"must be true or false, got {value!r}")
    return value


def integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    """A check for an integer (not a boolean) from ``low`` up to ``high``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise problem(f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise problem(f"must be {bound}, got {value}")
        return value

    return check


def decimal(value: Any) -> Decimal:
    """A finite non-negative decimal from a TOML string, integer or (exactly read) float."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise problem(f"must be a decimal string or number, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise problem(f"must be a decimal, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise problem(f"must be a finite non-negative decimal, got {value!r}")
    return number


def seconds(value: Any) -> float:
    """A positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise problem(f"must be a number of seconds, got {value!r}")
    number = float(value)
    if not isfinite(number) or number <= 0:
        raise problem(f"must be a positive number of seconds, got {value!r}")
    return number


def fraction_or_off(value: Any) -> Decimal | None:
    """A finite positive decimal, or ``false`` (None: the limit is off)."""
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise problem(f"must be a decimal string or number (or false), got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise problem(f"must be a decimal, got {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise problem(f"must be a finite positive decimal, got {value!r}")
    return number


def source_or_any(value: Any) -> str | None:
    """A price source's name, or ``false`` (None: any source)."""
    if value is False:
        return None
    if not isinstance(value, str) or not value:
        raise problem(f"must be a source name (or false), got {value!r}")
    return value


def source_name(value: Any) -> str:
    """A price source's name."""
    if not isinstance(value, str) or not value:
        raise problem(f"must be a source name, got {value!r}")
    return value


def source_names(value: Any) -> tuple[str, ...]:
    """An array of distinct price source names."""
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) and n for n in value):
        raise problem(f"must be an array of source names, got {value!r}")
    if len(set(value)) != len(value):
        raise problem(f"names a source twice: {value!r}")
    return tuple(value)


def choice(*choices: str) -> Callable[[Any], str]:
    """A check for one of ``choices``."""

    def check(value: Any) -> str:
        if value not in choices:
            raise problem(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return str(value)

    return check


def name(key: str) -> Callable[[Any], str]:
    """A check for a topic-safe name; ``key`` is how the name is called in the message."""

    def check(value: Any) -> str:
        try:
            return check_name(key, text(value))
        except Rejection as rejection:
            raise problem(rejection.detail) from None

    return check


def url(*schemes: str) -> Callable[[Any], str]:
    """A check for a URL of one of ``schemes`` with a valid port, if any."""

    def check(value: Any) -> str:
        found = url_problem(text(value), schemes)
        if found:
            raise problem(found)
        return str(value)

    return check


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """What is wrong with a Redis or MQTT URL, or None (credentials never echoed)."""
    parts = urlsplit(value)
    shown = redacted(value)
    if parts.scheme not in schemes:
        return f"must start with {' or '.join(s + '://' for s in schemes)}, got {shown!r}"
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        return f"port must be between 0 and 65535, got {shown!r}"
    return None


def redacted(address: str) -> str:
    """``address`` with any user:password replaced by ``***``, for error messages."""
    scheme, sep, rest = address.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return address
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def each(normalize: Callable[[str], str]) -> Callable[[Any], tuple[str, ...]]:
    """A check for an array of strings, each passed through ``normalize`` (its ValueError
    is the problem, blamed on that element)."""

    def check(values: Any) -> tuple[str, ...]:
        if not isinstance(values, list | tuple):
            raise problem(f"must be an array of strings, got {values!r}")
        checked = []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise problem(f"must be a string, got {value!r}", f"[{index}]")
            try:
                checked.append(normalize(value))
            except ValueError as error:
                raise problem(str(error), f"[{index}]") from None
        return tuple(checked)

    return check


Text: TypeAlias = Annotated[str, PlainValidator(text)]
OptionalText: TypeAlias = Annotated[str | None, PlainValidator(optional_text)]
Flag: TypeAlias = Annotated[bool, PlainValidator(flag)]
Dec: TypeAlias = Annotated[Decimal, PlainValidator(decimal)]
Seconds: TypeAlias = Annotated[float, PlainValidator(seconds)]
FractionOrOff: TypeAlias = Annotated[Decimal | None, PlainValidator(fraction_or_off)]
SourceOrAny: TypeAlias = Annotated[str | None, PlainValidator(source_or_any)]
SourceName: TypeAlias = Annotated[str, PlainValidator(source_name)]
SourceNames: TypeAlias = Annotated[tuple[str, ...], PlainValidator(source_names)]
Hosts: TypeAlias = Annotated[tuple[str, ...], PlainValidator(each(normalize_host))]
Origins: TypeAlias = Annotated[tuple[str, ...], PlainValidator(each(normalize_origin))]
