"""The ``LIQMON_*`` environment variables that override keys of the configuration file.

Each overrides the key of the same name (``LIQMON_REDIS_URL``: ``redis.url``)::

    LIQMON_REDIS_URL  LIQMON_REDIS_CLUSTER  LIQMON_REDIS_ALLOW_EVICTION
    LIQMON_MQTT_URL   LIQMON_HTTP_HOST  LIQMON_HTTP_PORT  LIQMON_HTTP_TOKEN

The two flags take true/false, 1/0 or yes/no in any case. A variable that is
unset or empty leaves the file's value, except ``LIQMON_HTTP_PORT``: empty, it
is refused like any other non-number.

:class:`Environment` reads them with pydantic-settings and checks each value
as text (an environment variable is always a string); a bad one is reported
as ``VARIABLE: PROBLEM``. Its :meth:`~Environment.overrides` are laid over the
file's document, which is then validated as a whole, so an override meets the
same checks as the key it replaces. (``LIQMON_LOG_FORMAT`` and
``LIQMON_LOG_LEVEL`` are read by :mod:`monitor.telemetry.log`, before any
configuration is.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import Field, PlainValidator, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.config import fields
from monitor.config.problems import config_error, problem


def _unless_empty(check: Callable[[Any], Any]) -> PlainValidator:
    """``check`` on a set, non-empty variable; unset or empty is None (the file's value stands)."""
    return PlainValidator(lambda value: check(value) if value else None)


def _flag(value: str) -> bool:
    flag = fields.FLAGS.get(value.strip().lower())
    if flag is None:
        raise problem(f"must be true or false, got {value!r}")
    return flag


def _port(value: Any) -> int | None:
    # Unlike the other variables, an empty port is a mistake, not "unset".
    if value is None:
        return None
    if not isinstance(value, str) or not value.isdecimal() or not 0 <= int(value) <= 65535:
        raise problem(f"must be a port number, got {value!r}")
    return int(value)


class Environment(BaseSettings):
    """The overrides, one field per variable (None: not set)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    redis_url: Annotated[
        str | None,
        Field(validation_alias="LIQMON_REDIS_URL"),
        _unless_empty(fields.url("redis", "rediss")),
    ] = None
    redis_cluster: Annotated[
        bool | None, Field(validation_alias="LIQMON_REDIS_CLUSTER"), _unless_empty(_flag)
    ] = None
    redis_allow_eviction: Annotated[
        bool | None, Field(validation_alias="LIQMON_REDIS_ALLOW_EVICTION"), _unless_empty(_flag)
    ] = None
    mqtt_url: Annotated[
        str | None,
        Field(validation_alias="LIQMON_MQTT_URL"),
        _unless_empty(fields.url("mqtt", "mqtts")),
    ] = None
    http_host: Annotated[
        str | None, Field(validation_alias="LIQMON_HTTP_HOST"), _unless_empty(str)
    ] = None
    http_port: Annotated[
        int | None, Field(validation_alias="LIQMON_HTTP_PORT"), PlainValidator(_port)
    ] = None
    http_token: Annotated[
        str | None, Field(validation_alias="LIQMON_HTTP_TOKEN"), _unless_empty(str)
    ] = None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The overrides in ``environ``, or in the process environment when it is None.

        A bad value raises :class:`~monitor.core.errors.ConfigError` naming the variable.
        """
        try:
            if environ is None:
                return cls()
            # Every variable is passed, unset ones as None, so none is read from the
            # process environment behind the caller's mapping.
            given: dict[str, Any] = {name: environ.get(name) for name in VARIABLES}
            return cls(**given)
        except ValidationError as error:
            raise config_error(error, None) from None

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The variables that are set, as a document to lay over the file's."""
        tables: dict[str, dict[str, Any]] = {}
        for attribute, value in self:
            if value is not None:
                table, key = attribute.split("_", 1)
                tables.setdefault(table, {})[key] = value
        return tables


VARIABLES = tuple(str(info.validation_alias) for info in Environment.model_fields.values())
"""The names of the variables, ``LIQMON_REDIS_URL`` first."""
