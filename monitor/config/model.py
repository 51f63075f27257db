"""The configuration model: one pydantic type per table of the TOML file.

``[redis]``, ``[mqtt]``, ``[http]`` and ``[limits]`` are validated straight into
the frozen settings the rest of liqmon reads (:class:`RedisSettings`, ...): they
are pydantic dataclasses, so a default is stated once, in the field, and
``dataclasses.replace`` checks a changed value as the file would.
``[risk]``, ``[guards]`` and ``[symbols.NAME]`` (with their ``brackets`` and
``guards``) are validated as tables whose values become the core's types
(:class:`~monitor.core.status.RiskLimits`, :class:`~monitor.core.guards.GuardSettings`,
:class:`~monitor.core.margin.Contract`), whose defaults stay in the core; a key
left out keeps that default. A symbol's ``venue`` picks its margin model: binance
(the default) reads ``brackets`` into the contract itself, every other venue
reads ``tiers`` in its own shape into a model the contract carries
(:func:`monitor.core.models.model_for`). ``[[sources]]`` tables are built by
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
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
from monitor.core.clusters import ClusterAlert, ClusterRule
from monitor.core.errors import Rejection
from monitor.core.guards import DEFAULT_GUARDS, AlertType, GuardSettings
from monitor.core.margin import Bracket, Contract, ContractKind, check_brackets
from monitor.core.models import BINANCE
from monitor.core.status import EventType, RiskLimits
from monitor.core.venues import (
    BybitModel,
    BybitRiskLimit,
    GateModel,
    GateTier,
    HyperliquidModel,
    HyperliquidTier,
    OkxModel,
    OkxTier,
    VenueModel,
)
from monitor.core.venues.hyperliquid import maintenance_rate
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

ALERT_TYPES = (
    *(t.value for t in EventType),
    *(t.value for t in AlertType),
    *(t.value for t in ClusterAlert),
)
"""What a route's ``types`` may name: the position events, the price guards' alerts and
the liquidation-cluster alert."""

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
    http_port: Annotated[int, PlainValidator(fields.integer(0, 65535))] = 8323
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


def _distance(value: Any) -> Decimal:
    number = fields.decimal(value)
    if not 0 < number < 1:
        raise problem(f"must lie between 0 and 1 (0.05: 5 % of the mark), got {value!r}")
    return number


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class ClusterAlertTable:
    """``[liquidation_watch.alerts.NAME]``: when symbol NAME's liquidation-cluster alert
    is raised and cleared (:class:`~monitor.core.clusters.ClusterRule`).

    Per symbol, because a notional is in the contract's own unit: quote currency for
    a linear contract, coin for an inverse one.
    """

    distance: Annotated[Decimal, PlainValidator(_distance)]
    """How far against a side the mark moves (a fraction of it: 0.05 is 5 %)."""
    raise_notional: Dec
    """Raised when a side's notional liquidating within ``distance`` reaches this."""
    clear_notional: Dec
    """Cleared when it falls below this (at most ``raise_notional``: the hysteresis)."""

    @model_validator(mode="after")
    def _ordered(self) -> ClusterAlertTable:
        if not 0 < self.clear_notional <= self.raise_notional:
            raise problem(
                "need 0 < clear_notional <= raise_notional, got "
                f"{self.clear_notional} and {self.raise_notional}",
                at="clear_notional",
            )
        return self

    def rule(self) -> ClusterRule:
        """The thresholds as the core reads them."""
        return ClusterRule(self.distance, self.raise_notional, self.clear_notional)


EVERY_SYMBOL = "*"
"""``liquidation_watch.symbols = ["*"]``: every configured symbol."""


def _watched(values: Any) -> tuple[str, ...]:
    if isinstance(values, list | tuple) and EVERY_SYMBOL in values:
        if len(values) != 1:
            raise problem(f'"{EVERY_SYMBOL}" (every symbol) stands alone, got {values!r}')
        return (EVERY_SYMBOL,)
    names: tuple[str, ...] = _names("symbol").func(values)
    return names


@pydantic_dataclass(frozen=True, slots=True, config=_TABLE)
class LiquidationWatch:
    """``[liquidation_watch]``: the liquidation gauges and the cluster alert, off by default.

    For each symbol watched, a background task of the monitor computes every
    ``refresh_s`` what would liquidate if the mark moved 1 %, 5 % and 10 % against
    each side (``liqmon_liquidation_notional_within``), and judges the symbol's
    cluster alert if ``alerts`` has a table for it. Opt-in, because the work grows
    with the positions within the widest distance (README, "Liquidation gauges and
    the cluster alert"); a symbol with an alert is watched even if not listed.
    """

    symbols: Annotated[tuple[str, ...], PlainValidator(_watched)] = ()
    """The symbols whose gauges are computed (``["*"]``: every configured symbol)."""
    refresh_s: Seconds = 15.0
    """How often each watched symbol is computed again."""
    alerts: Mapping[str, ClusterAlertTable] = field(default_factory=dict)
    """Per symbol, its cluster alert's distance and thresholds (none: no alert)."""

    def watched(self, configured: Iterable[str]) -> list[str]:
        """The symbols to compute, in the configuration's order."""
        every = EVERY_SYMBOL in self.symbols
        return [s for s in configured if every or s in self.symbols or s in self.alerts]

    def rules(self) -> dict[str, ClusterRule]:
        """Each alerting symbol's thresholds."""
        return {symbol: table.rule() for symbol, table in self.alerts.items()}


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


VENUES = (BINANCE, "bybit", "okx", "gate", "hyperliquid")
"""The margin models a symbol may be judged by (``[symbols.NAME] venue``)."""

TIER_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bybit": (("risk_limit_value", "mmr"), ("mm_deduction",)),
    "okx": (("min_size", "max_size", "mmr"), ()),
    "gate": (("risk_limit", "maintenance_rate"), ("deduction",)),
    "hyperliquid": (("lower_bound", "max_leverage"), ()),
}
"""Each venue's ``tiers`` row: its required keys, then its optional ones (binance: ``brackets``)."""

_TIER_BOUND = {
    "bybit": "risk_limit_value",
    "okx": "max_size",
    "gate": "risk_limit",
    "hyperliquid": "lower_bound",
}
"""The key that must rise from one tier to the next, per venue."""

TAKER_FEE_VENUES = ("okx", "gate")
"""Venues whose maintenance margin adds the taker fee on the mark notional."""


def _max_leverage(value: Any) -> int | None:
    return None if value is None else fields.integer(1)(value)


class TierRow(BaseModel):
    """One row of a symbol's ``tiers`` (every venue but binance); :data:`TIER_KEYS` says
    which keys each venue takes, in the venue's own terms."""

    model_config = _TABLE

    risk_limit_value: Dec | None = None
    """bybit: the row's ``riskLimitValue`` (top position value at entry)."""
    mmr: Dec | None = None
    """bybit: ``maintenanceMargin`` as a fraction; okx: ``mmr``."""
    mm_deduction: Dec | None = None
    """bybit: ``mmDeduction``."""
    min_size: Dec | None = None
    """okx: ``minSz`` (contracts)."""
    max_size: Dec | None = None
    """okx: ``maxSz`` (contracts)."""
    risk_limit: Dec | None = None
    """gate: ``risk_limit`` (top position value at the mark)."""
    maintenance_rate: Dec | None = None
    """gate: ``maintenance_rate``."""
    deduction: Dec | None = None
    """gate: ``deduction``."""
    lower_bound: Dec | None = None
    """hyperliquid: the tier's ``lowerBound`` of notional."""
    max_leverage: Annotated[int | None, PlainValidator(_max_leverage)] = None
    """hyperliquid: the tier's ``maxLeverage``."""

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, row: Any) -> Any:
        if not isinstance(row, Mapping):
            raise problem("must be a table")
        return row

    def value(self, key: str) -> Decimal:
        """A key the venue requires (checked present), as a Decimal."""
        given = getattr(self, key)
        if given is None:
            raise problem("is required", at=key)
        return Decimal(given)


def _kind(value: Any) -> ContractKind:
    try:
        return ContractKind(str(value))
    except ValueError:
        raise problem(f"must be 'linear' or 'inverse', got {value!r}") from None


def _rows(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem("must be a non-empty array of tables")
    return value


_NOT_FOR = "not used with venue = {venue!r}"


class SymbolTable(BaseModel):
    """``[symbols.NAME]``: a contract's venue, kind, size, fees and tier table, and its guards.

    ``venue`` picks the margin model (:data:`VENUES`, default binance, today's);
    binance's tiers are ``brackets``, every other venue's ``tiers`` in its own
    shape (:data:`TIER_KEYS`). A key the venue does not use is refused.
    """

    model_config = _TABLE

    venue: Annotated[str, PlainValidator(fields.choice(*VENUES))] = BINANCE
    # contract has no default: validating the missing value names the key.
    contract: Annotated[ContractKind, PlainValidator(_kind)] = Field(
        default=None, validate_default=True
    )
    contract_size: Dec | None = None
    """Required for an inverse contract and on okx and gate (``ctVal``, the multiplier);
    a linear one defaults to the core's (1)."""
    close_fee_rate: Dec | None = None
    """binance: the fee reserved for closing, added to MM."""
    taker_fee_rate: Dec | None = None
    """okx and gate (required there): the taker fee added to the maintenance rate."""
    inverse_value_at_mark: Flag | None = None
    """bybit, inverse: value the position at the mark (the help centre's 2026 reading)."""
    brackets: Annotated[tuple[BracketRow, ...] | None, BeforeValidator(_rows)] = None
    """binance's tier table (required there)."""
    tiers: Annotated[tuple[TierRow, ...] | None, BeforeValidator(_rows)] = None
    """Every other venue's tier table (required there), rows as :data:`TIER_KEYS` says."""
    guards: GuardsTable = Field(default_factory=GuardsTable)
    apply_funding: Flag = False
    """True: the monitor moves funding payments through this symbol's margins itself (off:
    position versions carry margins that include funding, as venues publish them)."""

    @model_validator(mode="after")
    def _sized(self) -> SymbolTable:
        self._venue_keys()
        if self.contract_size is None and (
            self.contract is ContractKind.INVERSE or self.venue in TAKER_FEE_VENUES
        ):
            raise problem("is required", at="contract_size")
        if self.contract_size is not None and self.contract_size <= 0:
            raise problem("must be positive", at="contract_size")
        if self.venue != BINANCE:
            self._tier_keys()
        return self

    def _venue_keys(self) -> None:
        """Refuse a key this venue does not use, and name one it needs."""
        given = self.model_fields_set
        unused = {
            "brackets": self.venue != BINANCE,
            "close_fee_rate": self.venue != BINANCE,
            "tiers": self.venue == BINANCE,
            "taker_fee_rate": self.venue not in TAKER_FEE_VENUES,
            "inverse_value_at_mark": self.venue != "bybit",
            "contract_size": self.venue == "hyperliquid",
        }
        for key, refused in unused.items():
            if refused and key in given:
                raise problem(_NOT_FOR.format(venue=self.venue), at=key)
        if self.venue == BINANCE and self.brackets is None:
            raise problem("must be a non-empty array of tables", at="brackets")
        if self.venue != BINANCE and self.tiers is None:
            raise problem("must be a non-empty array of tables", at="tiers")
        if self.venue == "hyperliquid" and self.contract is not ContractKind.LINEAR:
            raise problem("must be 'linear' with venue = 'hyperliquid'", at="contract")
        if self.venue in TAKER_FEE_VENUES and self.taker_fee_rate is None:
            raise problem("is required", at="taker_fee_rate")

    def _tier_keys(self) -> None:
        """Each row has exactly the venue's keys, each value in range, in order."""
        required, optional = TIER_KEYS[self.venue]
        rows = self.tiers or ()
        for index, row in enumerate(rows):
            where = f"tiers[{index}]"
            unknown = sorted(row.model_fields_set - {*required, *optional})
            if unknown:
                takes = ", ".join(required + optional)
                raise problem(
                    f"not a key of {self.venue}'s tiers (they take {takes})",
                    at=f"{where}.{unknown[0]}",
                )
            for key in required:
                if getattr(row, key) is None:
                    raise problem("is required", at=f"{where}.{key}")
            for key in ("mmr", "maintenance_rate"):
                if key in required and row.value(key) <= 0:
                    raise problem("must be positive", at=f"{where}.{key}")
        key = _TIER_BOUND[self.venue]
        for index in range(1, len(rows)):
            low, high = rows[index - 1].value(key), rows[index].value(key)
            if high <= low:
                raise problem(
                    f"must exceed the previous tier's {key} ({low}), got {high}",
                    at=f"tiers[{index}].{key}",
                )
        if self.venue == "okx":
            for index, row in enumerate(rows):
                if row.value("min_size") > row.value("max_size"):
                    raise problem(
                        f"must not exceed max_size ({row.max_size}), got {row.min_size}",
                        at=f"tiers[{index}].min_size",
                    )
        if self.venue == "hyperliquid" and rows[0].value("lower_bound") != 0:
            raise problem(
                "must be 0 (the first tier starts at no notional)", at="tiers[0].lower_bound"
            )

    def tier_problem(self, clear_ratio: Decimal) -> tuple[str, str] | None:
        """``(key, problem)`` for a tier table whose thresholds would not be unique, or None.

        Every tier's maintenance rate (plus the taker fee where it is added)
        must lie below 1 and below the margin-call clearing ratio; gate's
        deductions must keep MM continuous where tiers meet (its tier follows
        the mark, as binance's does). Binance's brackets: :func:`check_brackets`.
        """
        fee = self.taker_fee_rate or Decimal(0)
        rows = self.tiers or ()
        for index, row in enumerate(rows):
            if self.venue == "hyperliquid":
                key, rate = "max_leverage", maintenance_rate(row.max_leverage or 1)
            else:
                key = "maintenance_rate" if self.venue == "gate" else "mmr"
                rate = row.value(key) + fee
            if rate >= min(Decimal(1), clear_ratio):
                plus = " + taker_fee_rate" if self.venue in TAKER_FEE_VENUES else ""
                what = "1 / (2 × max_leverage)" if self.venue == "hyperliquid" else f"{key}{plus}"
                return (
                    f"tiers[{index}].{key}",
                    f"{what} ({rate}) must be below margin_call_clear_ratio ({clear_ratio}) and 1",
                )
        if self.venue == "gate":
            return _gate_continuity(rows)
        return None

    def model(self, symbol: str) -> VenueModel | None:
        """The venue's margin model (None: binance's, :mod:`monitor.core.margin` itself)."""
        kind, size = self.contract, self.contract_size or Decimal(1)
        rows = self.tiers or ()
        fee = self.taker_fee_rate or Decimal(0)
        if self.venue == "bybit":
            limits = [
                BybitRiskLimit(
                    r.value("risk_limit_value"), r.value("mmr"), r.mm_deduction or Decimal(0)
                )
                for r in rows
            ]
            return BybitModel(symbol, kind, limits, size, bool(self.inverse_value_at_mark))
        if self.venue == "okx":
            tiers = [
                OkxTier(r.value("min_size"), r.value("max_size"), r.value("mmr")) for r in rows
            ]
            return OkxModel(symbol, kind, tiers, size, fee)
        if self.venue == "gate":
            gate = [
                GateTier(
                    r.value("risk_limit"), r.value("maintenance_rate"), r.deduction or Decimal(0)
                )
                for r in rows
            ]
            return GateModel(symbol, kind, gate, size, fee)
        if self.venue == "hyperliquid":
            margin_tiers = [
                HyperliquidTier(r.value("lower_bound"), r.max_leverage or 1) for r in rows
            ]
            return HyperliquidModel(symbol, margin_tiers)
        return None

    def terms(self, symbol: str) -> Contract:
        """The contract as the core reads it (left-out keys keep the core's defaults)."""
        if self.venue != BINANCE:
            return Contract(
                symbol,
                self.contract,
                (),
                contract_size=self.contract_size or Decimal(1),
                model=self.model(symbol),
            )
        brackets = tuple(row.bracket() for row in self.brackets or ())
        core = Contract(symbol, self.contract, brackets)
        size, fee = self.contract_size, self.close_fee_rate
        return dataclasses.replace(
            core,
            contract_size=core.contract_size if size is None else size,
            close_fee_rate=core.close_fee_rate if fee is None else fee,
        )


def _gate_continuity(rows: tuple[TierRow, ...]) -> tuple[str, str] | None:
    """Gate's deductions must keep ``N·rate − deduction`` continuous at each risk limit."""
    for index, row in enumerate(rows):
        deduction = row.deduction or Decimal(0)
        if index == 0:
            if deduction != 0:
                return "tiers[0].deduction", f"must be 0 for the first tier, got {deduction}"
            continue
        below = rows[index - 1]
        at = below.value("risk_limit")
        rate, previous = row.value("maintenance_rate"), below.value("maintenance_rate")
        with localcontext(Context(prec=400)):
            expected = (below.deduction or Decimal(0)) + at * (rate - previous)
        if deduction != expected:
            return (
                f"tiers[{index}].deduction",
                f"must be {expected} to keep the maintenance margin continuous at "
                f"value {at}, got {deduction}",
            )
    return None


def _check_venue(symbol: str, table: SymbolTable, clear_ratio: Decimal) -> None:
    """A non-binance symbol's tiers give unique thresholds, and its model builds."""
    found = table.tier_problem(clear_ratio)
    if found is not None:
        raise problem(found[1], at=f"{symbol}.{found[0]}")
    try:
        table.model(symbol)
    except ValueError as error:  # a check the model makes that the table's did not
        raise problem(str(error), at=f"{symbol}.tiers") from None


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
    liquidation_watch: LiquidationWatch = Field(default_factory=LiquidationWatch)

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
            if table.venue != BINANCE:
                _check_venue(symbol, table, risk.margin_call_clear_ratio)
                continue
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

    @field_validator("liquidation_watch", mode="after")
    @classmethod
    def _watched_configured(cls, watch: LiquidationWatch, info: ValidationInfo) -> Any:
        symbols = info.data.get("symbols", {})
        for index, symbol in enumerate(watch.symbols):
            if symbol not in symbols and symbol != EVERY_SYMBOL:
                raise problem(f"{symbol!r} is not a configured symbol", at=f"symbols[{index}]")
        for symbol in watch.alerts:
            if symbol not in symbols:
                raise problem(f"{symbol!r} is not a configured symbol", at=f"alerts.{symbol}")
        return watch

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
            funding=frozenset(s for s, table in self.symbols.items() if table.apply_funding),
            alerts=self.alerts,
            liquidation_watch=self.liquidation_watch,
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
    funding: frozenset[str] = frozenset()
    """The symbols with ``apply_funding = true``."""
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    """``[alerts]``: the routes of ``liqmon alerts``."""
    liquidation_watch: LiquidationWatch = field(default_factory=LiquidationWatch)
    """``[liquidation_watch]``: the liquidation gauges and cluster alerts (off by default)."""
