"""Configuration: a TOML file plus environment overrides, validated once at start.

A file may start with ``include = "OTHER.toml"`` to be read as OTHER.toml
with its own keys laid on top (see :func:`_resolve_include`), so a variant
such as ``config/liqmon.docker.toml`` says only how it differs.

Every problem is reported as ``FILE: KEY: PROBLEM`` through
:class:`monitor.core.errors.ConfigError`; the daemon refuses to start rather than
run with a table it would misread. Decimals may be written as TOML strings
(recommended: ``"0.004"``) or numbers; numbers are read from their text, never
through a binary float.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feeds.config import source_from_config
from feeds.source import PriceSource
from monitor.core.errors import ConfigError, Rejection
from monitor.core.guards import DEFAULT_GUARDS, GuardSettings, parse_guard_settings
from monitor.core.margin import Bracket, Contract, ContractKind, check_brackets
from monitor.core.origins import normalize_host, normalize_origin
from monitor.core.status import RiskLimits
from monitor.core.wire import check_name

DEFAULT_PATH = Path("config/liqmon.toml")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where state lives: ``redis://`` or ``rediss://`` (TLS), optionally with user:pass."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "liqmon"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cluster: bool = False
    """True: ``url`` names one node of a Redis Cluster, whose other nodes are discovered."""
    allow_eviction: bool = False
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


PUBLISHERS = ("inline", "separate")
"""Where a monitor's events are published from (``mqtt.publisher``)."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The broker. ``url`` is ``mqtt://`` or ``mqtts://`` (TLS), with optional user:pass."""

    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "liqmon"
    client_id: str = "liqmon-monitor"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    max_inflight: int = 1000
    publisher: str = "inline"
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


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The health, metrics and API endpoint."""

    host: str = "127.0.0.1"
    """Loopback unless told otherwise (``http.host`` or LIQMON_HTTP_HOST, e.g. in a container)."""
    port: int = 8321
    token: str | None = None
    """Bearer token required by /api, /ws and /metrics when set (LIQMON_HTTP_TOKEN)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (besides addresses, localhost and the bind host) the page, /api and /ws
    answer to; any other name is refused (DNS rebinding, see :mod:`monitor.core.origins`)."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins (besides the page's own) allowed to open /ws and read /api."""


DEAD_LETTER_OVERHEAD_BYTES = 65_536
"""What a dead-letter entry may hold beyond its payload (source, detail, reasons)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what outside input may cost."""

    max_payload_bytes: int = 1_048_576
    max_batch: int = 10_000
    dead_letter_maxlen: int = 10_000
    dead_letter_max_bytes: int = 64 << 20
    """Most bytes the dead-letter stream keeps (its entries' payloads, details and reasons)."""
    dead_letter_payload_bytes: int = 1_048_576
    """A dead-lettered payload is kept up to this many bytes (its full size is recorded)."""
    tombstone_retention_s: int = 7 * 86_400
    """How long a closed or liquidated position's record is kept: within it, an older
    version replayed is refused; after it, the record is forgotten."""


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


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path``, then apply ``LIQMON_*`` environment overrides."""
    environ = os.environ if environ is None else environ
    document = _read(path, "file not found (pass --config FILE)")
    return parse_settings(_resolve_include(document, path, ()), str(path), environ)


def _read(path: Path, missing: str) -> dict[str, Any]:
    """One TOML file, decoded; ``missing`` is the problem reported when it does not exist."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _resolve_include(
    document: dict[str, Any], path: Path, including: tuple[Path, ...]
) -> dict[str, Any]:
    """``document`` laid over the file its ``include`` key names (relative to ``path``).

    An included file may include another; a file that includes itself, even
    through others, is refused. The including file wins key by key, tables are
    merged down to their leaves, and an array (brackets, ``[[sources]]``)
    replaces the included one whole.
    """
    if "include" not in document:
        return document
    name = document.pop("include")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: include: must be a file name, got {name!r}")
    chain = (*including, path.resolve())
    target = path.parent / name
    if target.resolve() in chain:
        files = " -> ".join(str(link) for link in (*chain, target.resolve()))
        raise ConfigError(f"{path}: include: {name!r} closes a cycle ({files})")
    included = _read(target, f"file not found (included by {path})")
    return _merged(_resolve_include(included, target, chain), document)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys laid on top, tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def parse_settings(
    document: Mapping[str, Any], source: str, environ: Mapping[str, str]
) -> Settings:
    """Validate a decoded TOML document (see :func:`load_settings`)."""
    reader = _Reader(source)
    reader.only(
        document, "", {"redis", "mqtt", "http", "risk", "limits", "symbols", "sources", "guards"}
    )
    redis_doc = reader.table(document, "redis")
    mqtt_doc = reader.table(document, "mqtt")
    http_doc = reader.table(document, "http")
    risk_doc = reader.table(document, "risk")
    limits_doc = reader.table(document, "limits")
    reader.only(
        redis_doc,
        "redis",
        {"url", "key_prefix", "ca_file", "cert_file", "key_file", "cluster", "allow_eviction"},
    )
    reader.only(
        mqtt_doc,
        "mqtt",
        {
            "url",
            "topic_prefix",
            "client_id",
            "ca_file",
            "cert_file",
            "key_file",
            "max_inflight",
            "publisher",
        },
    )
    reader.only(http_doc, "http", {"host", "port", "token", "allowed_hosts", "allowed_origins"})
    reader.only(risk_doc, "risk", {"margin_call_ratio", "margin_call_clear_ratio"})
    reader.only(
        limits_doc,
        "limits",
        {
            "max_payload_bytes",
            "max_batch",
            "dead_letter_maxlen",
            "dead_letter_max_bytes",
            "dead_letter_payload_bytes",
            "tombstone_retention_s",
        },
    )

    redis = RedisSettings(
        url=_env_url(environ, "LIQMON_REDIS_URL", ("redis", "rediss"))
        or reader.url(redis_doc, "redis.url", ("redis", "rediss")),
        key_prefix=reader.name(redis_doc, "redis.key_prefix", RedisSettings().key_prefix),
        ca_file=reader.optional_str(redis_doc, "redis.ca_file"),
        cert_file=reader.optional_str(redis_doc, "redis.cert_file"),
        key_file=reader.optional_str(redis_doc, "redis.key_file"),
        cluster=_env_flag(environ, "LIQMON_REDIS_CLUSTER")
        if environ.get("LIQMON_REDIS_CLUSTER")
        else reader.flag(redis_doc, "redis.cluster", RedisSettings().cluster),
        allow_eviction=_env_flag(environ, "LIQMON_REDIS_ALLOW_EVICTION")
        if environ.get("LIQMON_REDIS_ALLOW_EVICTION")
        else reader.flag(redis_doc, "redis.allow_eviction", RedisSettings().allow_eviction),
    )
    mqtt = MqttSettings(
        url=_env_url(environ, "LIQMON_MQTT_URL", ("mqtt", "mqtts"))
        or reader.url(mqtt_doc, "mqtt.url", ("mqtt", "mqtts")),
        topic_prefix=reader.name(mqtt_doc, "mqtt.topic_prefix", MqttSettings().topic_prefix),
        client_id=reader.name(mqtt_doc, "mqtt.client_id", MqttSettings().client_id),
        ca_file=reader.optional_str(mqtt_doc, "mqtt.ca_file"),
        cert_file=reader.optional_str(mqtt_doc, "mqtt.cert_file"),
        key_file=reader.optional_str(mqtt_doc, "mqtt.key_file"),
        max_inflight=reader.integer(mqtt_doc, "mqtt.max_inflight", MqttSettings().max_inflight, 1),
        publisher=reader.choice(mqtt_doc, "mqtt.publisher", PUBLISHERS),
    )
    port_text = environ.get("LIQMON_HTTP_PORT")
    if port_text is not None:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"LIQMON_HTTP_PORT: must be a port number, got {port_text!r}")
        http_port = int(port_text)
    else:
        http_port = reader.integer(http_doc, "http.port", HttpSettings().port, 0, 65535)
    http = HttpSettings(
        host=environ.get("LIQMON_HTTP_HOST")
        or reader.string(http_doc, "http.host", HttpSettings().host),
        port=http_port,
        token=environ.get("LIQMON_HTTP_TOKEN") or reader.optional_str(http_doc, "http.token"),
        allowed_hosts=reader.each(http_doc, "http.allowed_hosts", normalize_host),
        allowed_origins=reader.each(http_doc, "http.allowed_origins", normalize_origin),
    )
    risk = RiskLimits(
        margin_call_ratio=reader.decimal(
            risk_doc, "risk.margin_call_ratio", RiskLimits().margin_call_ratio
        ),
        margin_call_clear_ratio=reader.decimal(
            risk_doc, "risk.margin_call_clear_ratio", RiskLimits().margin_call_clear_ratio
        ),
    )
    if not 0 < risk.margin_call_clear_ratio <= risk.margin_call_ratio < 1:
        reader.fail(
            "risk",
            "need 0 < margin_call_clear_ratio <= margin_call_ratio < 1, got "
            f"{risk.margin_call_clear_ratio} and {risk.margin_call_ratio}",
        )
    limits = Limits(
        max_payload_bytes=reader.integer(
            limits_doc, "limits.max_payload_bytes", Limits().max_payload_bytes, 64
        ),
        max_batch=reader.integer(limits_doc, "limits.max_batch", Limits().max_batch, 1),
        dead_letter_maxlen=reader.integer(
            limits_doc, "limits.dead_letter_maxlen", Limits().dead_letter_maxlen, 1
        ),
        dead_letter_max_bytes=reader.integer(
            limits_doc, "limits.dead_letter_max_bytes", Limits().dead_letter_max_bytes, 1
        ),
        dead_letter_payload_bytes=reader.integer(
            limits_doc, "limits.dead_letter_payload_bytes", Limits().dead_letter_payload_bytes, 0
        ),
        tombstone_retention_s=reader.integer(
            limits_doc, "limits.tombstone_retention_s", Limits().tombstone_retention_s, 1
        ),
    )
    if limits.dead_letter_payload_bytes + DEAD_LETTER_OVERHEAD_BYTES > limits.dead_letter_max_bytes:
        reader.fail(
            "limits.dead_letter_max_bytes",
            f"must hold one whole entry: at least dead_letter_payload_bytes + "
            f"{DEAD_LETTER_OVERHEAD_BYTES}, got {limits.dead_letter_max_bytes}",
        )
    symbols_doc = reader.table(document, "symbols")
    if not symbols_doc:
        reader.fail("symbols", "configure at least one [symbols.NAME] table")
    symbols = {
        name: reader.contract(name, reader.table(symbols_doc, name, f"symbols.{name}"), risk)
        for name in symbols_doc
    }
    default_guards = parse_guard_settings(
        reader.table(document, "guards"), f"{source}: guards", DEFAULT_GUARDS
    )
    guards = {
        name: parse_guard_settings(
            reader.table(symbols_doc[name], "guards", f"symbols.{name}.guards"),
            f"{source}: symbols.{name}.guards",
            default_guards,
        )
        for name in symbols_doc
    }
    return Settings(
        redis, mqtt, http, risk, limits, symbols, source, reader.sources(document, symbols), guards
    )


def _url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """What is wrong with a Redis or MQTT URL, or None (credentials never echoed)."""
    parts = urlsplit(value)
    shown = _redacted(value)
    if parts.scheme not in schemes:
        return f"must start with {' or '.join(s + '://' for s in schemes)}, got {shown!r}"
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        return f"port must be between 0 and 65535, got {shown!r}"
    return None


def _redacted(url: str) -> str:
    """``url`` with any user:password replaced by ``***``, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def _env_url(environ: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """A URL override from the environment (None when unset or empty), validated."""
    value = environ.get(name)
    if not value:
        return None
    problem = _url_problem(value, schemes)
    if problem:
        raise ConfigError(f"{name}: {problem}")
    return value


_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A true/false override from the environment (true/false, 1/0 or yes/no)."""
    value = environ[name]
    flag = _FLAGS.get(value.strip().lower())
    if flag is None:
        raise ConfigError(f"{name}: must be true or false, got {value!r}")
    return flag


class _Reader:
    """Typed access to a TOML document that names the file and key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def only(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else key, "unknown key")

    def table(
        self, parent: Mapping[str, Any], key: str, where: str | None = None
    ) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.fail(where or key, "must be a table")
        return value  # type: ignore[no-any-return]

    def string(self, table: Mapping[str, Any], key: str, default: str) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value  # type: ignore[no-any-return]

    def choice(self, table: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
        """One of ``choices``; the first is the default."""
        value = table.get(key.rsplit(".", 1)[-1], choices[0])
        if value not in choices:
            self.fail(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value  # type: ignore[no-any-return]

    def flag(self, table: Mapping[str, Any], key: str, default: bool) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value  # type: ignore[no-any-return]

    def optional_str(self, table: Mapping[str, Any], key: str) -> str | None:
        value = table.get(key.rsplit(".", 1)[-1])
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def each(
        self, table: Mapping[str, Any], key: str, check: Callable[[str], str]
    ) -> tuple[str, ...]:
        """An array of strings, each passed through ``check`` (whose ValueError names it)."""
        values = table.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(values, list):
            self.fail(key, f"must be an array of strings, got {values!r}")
        checked = []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                self.fail(f"{key}[{index}]", f"must be a string, got {value!r}")
            try:
                checked.append(check(value))
            except ValueError as error:
                self.fail(f"{key}[{index}]", str(error))
        return tuple(checked)

    def name(self, table: Mapping[str, Any], key: str, default: str) -> str:
        value = self.string(table, key, default)
        try:
            return check_name(key, value)
        except Rejection as rejection:
            self.fail(key, rejection.detail)
            raise

    def url(self, table: Mapping[str, Any], key: str, schemes: tuple[str, ...]) -> str:
        default = RedisSettings().url if schemes[0] == "redis" else MqttSettings().url
        value = self.string(table, key, default)
        problem = _url_problem(value, schemes)
        if problem:
            self.fail(key, problem)
        return value

    def integer(
        self, table: Mapping[str, Any], key: str, default: int, low: int, high: int | None = None
    ) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(key, f"must be {bound}, got {value}")
        return value  # type: ignore[no-any-return]

    def decimal(self, table: Mapping[str, Any], key: str, default: Decimal | None) -> Decimal:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            self.fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            self.fail(key, f"must be a decimal string or number, got {value!r}")
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.fail(key, f"must be a decimal, got {value!r}")
            raise
        if not number.is_finite() or number < 0:
            self.fail(key, f"must be a finite non-negative decimal, got {value!r}")
        return number

    def sources(
        self, document: Mapping[str, Any], symbols: Mapping[str, Any]
    ) -> tuple[PriceSource, ...]:
        tables = document.get("sources", [])
        if not isinstance(tables, list):
            self.fail("sources", "must be an array of tables ([[sources]])")
        built = []
        for index, table in enumerate(tables):
            where = f"sources[{index}]"
            if not isinstance(table, dict):
                self.fail(where, "must be a table")
            names = table.get("symbols")
            # A symbols value of the wrong shape is left to source_from_config to name.
            for venue_symbol, symbol in names.items() if isinstance(names, dict) else ():
                if isinstance(symbol, str) and symbol not in symbols:
                    self.fail(
                        f"{where}.symbols.{venue_symbol}", f"{symbol!r} is not a configured symbol"
                    )
            try:
                built.append(source_from_config(table))
            except (ValueError, TypeError) as error:
                self.fail(where, str(error))
        return tuple(built)

    def contract(self, name: str, doc: Mapping[str, Any], risk: RiskLimits) -> Contract:
        where = f"symbols.{name}"
        try:
            check_name(where, name)
        except Rejection as rejection:
            self.fail(where, rejection.detail)
        self.only(doc, where, {"contract", "contract_size", "close_fee_rate", "brackets", "guards"})
        kind_text = doc.get("contract")
        try:
            kind = ContractKind(str(kind_text))
        except ValueError:
            self.fail(f"{where}.contract", f"must be 'linear' or 'inverse', got {kind_text!r}")
            raise
        size_default = None if kind is ContractKind.INVERSE else Decimal(1)
        size = self.decimal(doc, f"{where}.contract_size", size_default)
        if size <= 0:
            self.fail(f"{where}.contract_size", "must be positive")
        fee = self.decimal(doc, f"{where}.close_fee_rate", Decimal(0))
        rows = doc.get("brackets")
        if not isinstance(rows, list) or not rows:
            self.fail(f"{where}.brackets", "must be a non-empty array of tables")
            raise AssertionError
        brackets: list[Bracket] = []
        for index, row in enumerate(rows):
            at = f"{where}.brackets[{index}]"
            if not isinstance(row, dict):
                self.fail(at, "must be a table {notional_cap, mmr, cum}")
            self.only(row, at, {"notional_cap", "mmr", "cum"})
            cap = self.decimal(row, f"{at}.notional_cap", None) if "notional_cap" in row else None
            brackets.append(
                Bracket(
                    notional_cap=cap,
                    mmr=self.decimal(row, f"{at}.mmr", None),
                    cum=self.decimal(row, f"{at}.cum", Decimal(0)),
                )
            )
        for problem in check_brackets(brackets, fee, risk.margin_call_clear_ratio):
            self.fail(where, problem)
        return Contract(name, kind, tuple(brackets), size, fee)
