"""The configuration model: one pydantic type per table of the TOML file.

``[redis]``, ``[mqtt]``, ``[http]`` and ``[limits]`` are validated straight into
the frozen settings the rest of liqmon reads (:class:`RedisSettings`, ...): they
are pydantic dataclasses, so a default is stated once, in the field, and
``dataclasses.replace`` checks a changed value as the file would.
``[risk]``, ``[guards]`` and ``[symbols.NAME]`` (with their ``brackets`` and
``guards``) are validated as tables whose values become the core's types
(:class:`~monitor.core.status.RiskLimits`, :class:`~monitor.core.guards.GuardSettings`,
:class:`~monitor.core.margin.Contract`), whose defaults stay in the core; a key
left out keeps that default. ``[[sources]]`` tables are built by
:func:`feeds.config.source_from_config`, which owns their keys. ``[alerts]``
and its ``[[alerts.routes]]`` (:class:`AlertsSettings`, :class:`AlertRoute`)
configure ``liqmon alerts``; their secrets are named, never given.

:class:`ConfigFile` is the whole document (an ``include`` is resolved before it
is read, see :mod:`monitor.config.loading`); :meth:`ConfigFile.settings` makes
the :class:`Settings` every command gets. Each check raises a
:func:`~monitor.config.problems.problem`; :func:`~monitor.config.problems.config_error`
turns the first into ``FILE: KEY: PROBLEM``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from feeds.config import source_from_config
from feeds.source import PriceSource
from monitor.config import fields
from monitor.config.fields import (
    Dec,
    Flag,
    FractionOrOff,
    Hosts,
    OptionalText,
    Origins,
    Seconds,
    SourceName,
    SourceNames,
    SourceOrAny,
    Text,
)
from monitor.config.problems import problem
from monitor.core.errors import Rejection
from monitor.core.guards import DEFAULT_GUARDS, AlertType, GuardSettings
from monitor.core.margin import Bracket, Contract, ContractKind, check_brackets
from monitor.core.status import EventType, RiskLimits
from monitor.core.wire import check_name

_TABLE = ConfigDict(extra="forbid")
"""Every table refuses a key it does not know: a typo must not fall back to a default."""

PUBLISHERS = ("inline", "separate")
"""Where a monitor's events are published from (``mqtt.publisher``)."""

DEAD_LETTER_OVERHEAD_BYTES = 65_536
"""What a dead-letter entry may hold beyond its payload (source, detail, reasons)."""


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class RedisSettings:
    """Where state lives: ``redis://`` or ``rediss://`` (TLS), optionally with user:pass."""

    url: Annotated[str, PlainValidator(fields.url("redis", "rediss"))] = "redis://127.0.0.1:6379/0"
    key_prefix: Annotated[str, PlainValidator(fields.name("redis.key_prefix"))] = "liqmon"
    ca_file: OptionalText = None
    cert_file: OptionalText = None
    key_file: OptionalText = None
    cluster: Flag = False
    """True: ``url`` names one node of a Redis Cluster, whose other nodes are discovered."""
    allow_eviction: Flag = False
    """True: start even when Redis may evict keys (any ``maxmemory-policy`` but ``noeviction``)."""

    @property
    def tls(self) -> bool:
        """True for a ``rediss://`` URL."""
        return urlsplit(self.url).scheme == "rediss"

    def client_options(self) -> dict[str, Any]:
        """TLS keyword arguments for ``Redis.from_url`` (none for a plain ``redis://`` URL)."""
        if not self.tls:
            return {}
        given = {
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }
        return {name: value for name, value in given.items() if value}


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class MqttSettings:
    """The broker. ``url`` is ``mqtt://`` or ``mqtts://`` (TLS), with optional user:pass."""

    url: Annotated[str, PlainValidator(fields.url("mqtt", "mqtts"))] = "mqtt://127.0.0.1:1883"
    topic_prefix: Annotated[str, PlainValidator(fields.name("mqtt.topic_prefix"))] = "liqmon"
    client_id: Annotated[str, PlainValidator(fields.name("mqtt.client_id"))] = "liqmon-monitor"
    ca_file: OptionalText = None
    cert_file: OptionalText = None
    key_file: OptionalText = None
    max_inflight: Annotated[int, PlainValidator(fields.integer(1))] = 1000
    publisher: Annotated[str, PlainValidator(fields.choice(*PUBLISHERS))] = PUBLISHERS[0]
    """``inline``: the monitor publishes its events; ``separate``: ``liqmon publish`` does."""

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts:// when none is given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """True for an ``mqtts://`` URL."""
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def username(self) -> str | None:
        """User from the URL, if any."""
        return urlsplit(self.url).username

    @property
    def password(self) -> str | None:
        """Password from the URL, if any."""
        return urlsplit(self.url).password


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class HttpSettings:
    """The health, metrics and API endpoint."""

    host: Text = "127.0.0.1"
    """Loopback unless told otherwise (``http.host`` or LIQMON_HTTP_HOST, e.g. in a container)."""
    port: Annotated[int, PlainValidator(fields.integer(0, 65535))] = 8321
    token: OptionalText = None
    """Bearer token required by /api, /ws and /metrics when set (LIQMON_HTTP_TOKEN)."""
    allowed_hosts: Hosts = ()
    """Host names (besides addresses, localhost and the bind host) the page, /api and /ws
    answer to; any other name is refused (DNS rebinding, see :mod:`monitor.core.origins`)."""
    allowed_origins: Origins = ()
    """Web origins (besides the page's own) allowed to open /ws and read /api."""


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class Limits:
    """Bounds on what outside input may cost."""

    max_payload_bytes: Annotated[int, PlainValidator(fields.integer(64))] = 1_048_576
    max_batch: Annotated[int, PlainValidator(fields.integer(1))] = 10_000
    dead_letter_maxlen: Annotated[int, PlainValidator(fields.integer(1))] = 10_000
    dead_letter_max_bytes: Annotated[int, PlainValidator(fields.integer(1))] = 64 << 20
    """Most bytes the dead-letter stream keeps (its entries' payloads, details and reasons)."""
    dead_letter_payload_bytes: Annotated[int, PlainValidator(fields.integer(0))] = 1_048_576
    """A dead-lettered payload is kept up to this many bytes (its full size is recorded)."""
    tombstone_retention_s: Annotated[int, PlainValidator(fields.integer(1))] = 7 * 86_400
    """How long a closed or liquidated position's record is kept: within it, an older
    version replayed is refused; after it, the record is forgotten."""

    @model_validator(mode="after")
    def _one_entry_fits(self) -> Limits:
        if self.dead_letter_payload_bytes + DEAD_LETTER_OVERHEAD_BYTES > self.dead_letter_max_bytes:
            raise problem(
                f"must hold one whole entry: at least dead_letter_payload_bytes + "
                f"{DEAD_LETTER_OVERHEAD_BYTES}, got {self.dead_letter_max_bytes}",
                at="dead_letter_max_bytes",
            )
        return self


ROUTE_TYPES = ("webhook", "apprise", "pagerduty")
"""How an alert route delivers (``[[alerts.routes]] type``)."""

ALERT_TYPES = (*(t.value for t in EventType), *(t.value for t in AlertType))
"""What a route's ``types`` may name: the position events and the price guards' alerts."""

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
"""PagerDuty's Events API v2 endpoint."""


def _names(kind: str) -> Any:
    def check(values: Any) -> tuple[str, ...]:
        if not isinstance(values, list | tuple):
            raise problem(f"must be an array of {kind}s, got {values!r}")
        for index, value in enumerate(values):
            try:
                check_name(kind, fields.text(value))
            except Rejection as rejection:
                raise problem(rejection.detail, f"[{index}]") from None
        return tuple(values)

    return PlainValidator(check)


def _types(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        raise problem(f"must be an array of types, got {values!r}")
    for index, value in enumerate(values):
        if value not in ALERT_TYPES:
            raise problem(f"must be one of {', '.join(ALERT_TYPES)}, got {value!r}", f"[{index}]")
    return tuple(values)


def _env_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.replace("_", "A").isalnum() or value[0].isdigit():
        raise problem(f"must name an environment variable, got {value!r}")
    return value


EnvName = Annotated[str | None, PlainValidator(_env_name)]
"""The name of the environment variable that holds a secret (never the secret itself)."""


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class AlertRoute:
    """One ``[[alerts.routes]]`` table: where matching events go, and how.

    Secrets come only from the environment: ``secret_env`` (the webhook's
    HMAC key), ``url_env`` (a URL that embeds a token: Slack's, Telegram's)
    and ``routing_key_env`` (PagerDuty's integration key) name variables.
    """

    name: Annotated[str, PlainValidator(fields.name("name"))]
    type: Annotated[str, PlainValidator(fields.choice(*ROUTE_TYPES))]
    url: OptionalText = None
    """The webhook's URL, an Apprise URL without secrets, or PagerDuty's endpoint."""
    url_env: EnvName = None
    secret_env: EnvName = None
    routing_key_env: EnvName = None
    types: Annotated[tuple[str, ...], PlainValidator(_types)] = ()
    """Event and alert types this route takes (empty: all)."""
    symbols: Annotated[tuple[str, ...], _names("symbol")] = ()
    accounts: Annotated[tuple[str, ...], _names("account")] = ()
    min_notional: Dec | None = None
    """Events of smaller ``qty × mark_price`` are left out (alerts have no notional: kept)."""
    min_margin_ratio: Dec | None = None
    """Events with a lower ``margin_ratio`` are left out (alerts have none: kept)."""
    template: OptionalText = None
    """The message of a chat or e-mail route, ``{field}`` of the event (default: one line)."""
    title: OptionalText = None
    max_per_window: Annotated[int | None, PlainValidator(fields.integer(1))] = None
    """At most this many deliveries per ``window_s``; the rest fold into one summary."""
    window_s: Seconds = 10.0
    timeout_s: Seconds = 10.0
    """Deadline of one delivery attempt."""
    backoff_first_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    retention_s: Seconds | None = None
    """How long an event is retried before it goes to the dead letters (default: the
    ``[alerts]`` table's)."""

    @model_validator(mode="after")
    def _complete(self) -> AlertRoute:
        if self.url is not None and self.url_env is not None:
            raise problem("give url or url_env, not both", at="url_env")
        if self.type == "webhook":
            if self.url is None and self.url_env is None:
                raise problem("a webhook needs url or url_env", at="url")
            if self.secret_env is None:
                raise problem("a webhook needs secret_env (its HMAC key)", at="secret_env")
        if self.type == "apprise" and self.url is None and self.url_env is None:
            raise problem("an apprise route needs url_env (or url)", at="url_env")
        if self.type == "pagerduty" and self.routing_key_env is None:
            raise problem("a pagerduty route needs routing_key_env", at="routing_key_env")
        if self.backoff_max_s < self.backoff_first_s:
            raise problem("must be at least backoff_first_s", at="backoff_max_s")
        return self


def _routes(tables: Any) -> Any:
    if not isinstance(tables, list | tuple):
        raise problem("must be an array of tables ([[alerts.routes]])")
    seen: set[Any] = set()
    for index, table in enumerate(tables):
        if isinstance(table, AlertRoute):  # built in code, already checked
            name: Any = table.name
        elif isinstance(table, dict):
            name = table.get("name")
        else:
            raise problem("must be a table", at=f"[{index}]")
        if isinstance(name, str) and name in seen:
            raise problem(f"route {name!r} is configured twice", at=f"[{index}].name")
        seen.add(name)
    return tables


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class AlertsSettings:
    """``[alerts]``: the forwarder's routes (``liqmon alerts``) and what they share."""

    routes: Annotated[tuple[AlertRoute, ...], BeforeValidator(_routes)] = ()
    http_port: Annotated[int, PlainValidator(fields.integer(0, 65535))] = 8322
    """Where ``liqmon alerts`` serves /healthz, /readyz and /metrics (``--http-port`` wins)."""
    retention_s: Seconds = 86_400.0
    """How long an undeliverable event is retried before it is dead-lettered."""
    delivered_ttl_s: Annotated[int, PlainValidator(fields.integer(1))] = 7 * 86_400
    """How long each route remembers a delivered key (a repeat within it is not sent)."""
    dead_letter_maxlen: Annotated[int, PlainValidator(fields.integer(1))] = 10_000
    """About how many entries each route's dead-letter stream keeps."""

    def route(self, name: str) -> AlertRoute | None:
        """The route called ``name``, if configured."""
        return next((route for route in self.routes if route.name == name), None)


class RiskTable(BaseModel):
    """``[risk]``: the margin-call thresholds; a key left out keeps the core's default."""

    model_config = _TABLE

    margin_call_ratio: Dec = RiskLimits().margin_call_ratio
    margin_call_clear_ratio: Dec = RiskLimits().margin_call_clear_ratio

    @model_validator(mode="after")
    def _ordered(self) -> RiskTable:
        if not 0 < self.margin_call_clear_ratio <= self.margin_call_ratio < 1:
            raise problem(
                "need 0 < margin_call_clear_ratio <= margin_call_ratio < 1, got "
                f"{self.margin_call_clear_ratio} and {self.margin_call_ratio}"
            )
        return self

    def limits(self) -> RiskLimits:
        """The thresholds as the core reads them."""
        return RiskLimits(self.margin_call_ratio, self.margin_call_clear_ratio)


class GuardsTable(BaseModel):
    """``[guards]`` or ``[symbols.NAME.guards]``: the keys given, laid over a base.

    ``false`` turns off ``max_mark_index_deviation`` or ``max_jump`` and makes
    ``mark_source`` any source; ``index_source = "NAME"`` is shorthand for
    ``index_sources = ["NAME"]``. What each key means: :class:`GuardSettings`.
    """

    model_config = _TABLE

    stale_after_s: Seconds | None = None
    max_mark_index_deviation: FractionOrOff = None
    hold_on_deviation: Flag | None = None
    max_jump: FractionOrOff = None
    mark_source: SourceOrAny = None
    index_source: SourceName | None = None
    index_sources: SourceNames | None = None
    max_future_skew_s: Seconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, table: Any) -> Any:
        if isinstance(table, Mapping) and "index_source" in table and "index_sources" in table:
            raise problem("give index_source or index_sources, not both", at="index_source")
        return table

    def over(self, base: GuardSettings) -> GuardSettings:
        """``base`` with the keys this table gives."""
        given = {key: getattr(self, key) for key in self.model_fields_set}
        if "index_source" in given:
            given["index_sources"] = (given.pop("index_source"),)
        return dataclasses.replace(base, **given)


class BracketRow(BaseModel):
    """One row of a symbol's ``brackets``; only the last may leave out ``notional_cap``."""

    model_config = _TABLE

    notional_cap: Dec | None = None
    mmr: Dec
    cum: Dec = Decimal(0)

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, row: Any) -> Any:
        if not isinstance(row, Mapping):
            raise problem("must be a table {notional_cap, mmr, cum}")
        return row

    def bracket(self) -> Bracket:
        """The tier as the core reads it."""
        return Bracket(self.notional_cap, self.mmr, self.cum)


def _kind(value: Any) -> ContractKind:
    try:
        return ContractKind(str(value))
    except ValueError:
        raise problem(f"must be 'linear' or 'inverse', got {value!r}") from None


def _rows(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem("must be a non-empty array of tables")
    return value


class SymbolTable(BaseModel):
    """``[symbols.NAME]``: a contract's kind, size, fee and tier table, and its guards."""

    model_config = _TABLE

    # contract and brackets have no default: validating the missing value names the key.
    contract: Annotated[ContractKind, PlainValidator(_kind)] = Field(
        default=None, validate_default=True
    )
    contract_size: Dec | None = None
    """Required for an inverse contract; a linear one defaults to the core's (1)."""
    close_fee_rate: Dec | None = None
    brackets: Annotated[tuple[BracketRow, ...], BeforeValidator(_rows)] = Field(
        default=None, validate_default=True
    )
    guards: GuardsTable = Field(default_factory=GuardsTable)

    @model_validator(mode="after")
    def _sized(self) -> SymbolTable:
        if self.contract_size is None and self.contract is ContractKind.INVERSE:
            raise problem("is required", at="contract_size")
        if self.contract_size is not None and self.contract_size <= 0:
            raise problem("must be positive", at="contract_size")
        return self

    def terms(self, symbol: str) -> Contract:
        """The contract as the core reads it (left-out keys keep the core's defaults)."""
        given = {
            key: value
            for key, value in (
                ("contract_size", self.contract_size),
                ("close_fee_rate", self.close_fee_rate),
            )
            if value is not None
        }
        brackets = tuple(row.bracket() for row in self.brackets)
        return Contract(symbol, self.contract, brackets, **given)


def _sources(tables: Any) -> list[Mapping[str, Any]]:
    if not isinstance(tables, list):
        raise problem("must be an array of tables ([[sources]])")
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise problem("must be a table", at=f"[{index}]")
    return tables


class ConfigFile(BaseModel):
    """A whole configuration document, its includes resolved.

    The tables are checked in the order declared here, and the first problem
    is the one reported; ``symbols`` comes after ``risk`` (its tiers are
    checked against the margin-call clearing ratio) and ``sources`` after
    ``symbols`` (they may route only to configured symbols).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    redis: RedisSettings = Field(default_factory=RedisSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    risk: RiskTable = Field(default_factory=RiskTable)
    limits: Limits = Field(default_factory=Limits)
    symbols: dict[str, SymbolTable] = Field(default_factory=dict, validate_default=True)
    guards: GuardsTable = Field(default_factory=GuardsTable)
    sources: tuple[PriceSource, ...] = ()
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)

    @field_validator("symbols", mode="before")
    @classmethod
    def _named(cls, symbols: Any) -> Any:
        if isinstance(symbols, Mapping):
            if not symbols:
                raise problem("configure at least one [symbols.NAME] table")
            for symbol in symbols:
                try:
                    check_name(f"symbols.{symbol}", symbol)
                except Rejection as rejection:
                    raise problem(rejection.detail, at=symbol) from None
        return symbols

    @field_validator("symbols", mode="after")
    @classmethod
    def _continuous(cls, symbols: dict[str, SymbolTable], info: ValidationInfo) -> Any:
        risk = info.data.get("risk")
        if not isinstance(risk, RiskTable):  # [risk] failed: that is the problem reported
            return symbols
        for symbol, table in symbols.items():
            terms = table.terms(symbol)
            found = check_brackets(
                terms.brackets, terms.close_fee_rate, risk.margin_call_clear_ratio
            )
            if found:
                raise problem(found[0], at=symbol)
        return symbols

    @field_validator("sources", mode="plain")
    @classmethod
    def _built(cls, tables: Any, info: ValidationInfo) -> tuple[PriceSource, ...]:
        symbols = info.data.get("symbols", {})
        built = []
        for index, table in enumerate(_sources(tables)):
            names = table.get("symbols")
            # A symbols value of the wrong shape is left to source_from_config to name.
            for venue_symbol, symbol in names.items() if isinstance(names, dict) else ():
                if isinstance(symbol, str) and symbol not in symbols:
                    raise problem(
                        f"{symbol!r} is not a configured symbol",
                        at=f"[{index}].symbols.{venue_symbol}",
                    )
            try:
                built.append(source_from_config(table))
            except ValueError as error:
                raise problem(str(error), at=f"[{index}]") from None
        return tuple(built)

    def settings(self, source: str) -> Settings:
        """The validated document as the daemon and the commands read it."""
        default_guards = self.guards.over(DEFAULT_GUARDS)
        return Settings(
            redis=self.redis,
            mqtt=self.mqtt,
            http=self.http,
            risk=self.risk.limits(),
            limits=self.limits,
            symbols={symbol: table.terms(symbol) for symbol, table in self.symbols.items()},
            source=source,
            sources=self.sources,
            guards={
                symbol: table.guards.over(default_guards) for symbol, table in self.symbols.items()
            },
            alerts=self.alerts,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon and the commands need, validated."""

    redis: RedisSettings = field(default_factory=RedisSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    risk: RiskLimits = field(default_factory=RiskLimits)
    limits: Limits = field(default_factory=Limits)
    symbols: Mapping[str, Contract] = field(default_factory=dict)
    source: str = "<defaults>"
    sources: tuple[PriceSource, ...] = ()
    guards: Mapping[str, GuardSettings] = field(default_factory=dict)
    """Each symbol's guards: ``[guards]`` laid over the core's defaults, then its own table."""
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    """``[alerts]``: the routes of ``liqmon alerts``."""
