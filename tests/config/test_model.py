"""The configuration model: environment overrides, defaults stated once, one error translation."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from monitor.config.environment import VARIABLES, Environment
from monitor.config.loading import EXAMPLE_PATH, load_settings, parse_settings
from monitor.config.model import HttpSettings, Limits, MqttSettings, RedisSettings
from monitor.config.problems import config_error, key_of, problem
from monitor.core.errors import ConfigError
from monitor.core.guards import DEFAULT_GUARDS
from monitor.core.margin import Bracket, Contract, ContractKind
from monitor.core.status import RiskLimits

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "liqmon.toml"
ONE_SYMBOL: dict[str, Any] = {
    "symbols": {"BTCUSDT": {"contract": "linear", "brackets": [{"mmr": "0.01"}]}}
}


def settings_with(environ: dict[str, str], document: dict[str, Any] | None = None) -> Any:
    """The settings of ``document`` (one symbol, nothing else, by default) under ``environ``."""
    return parse_settings(document or ONE_SYMBOL, "c.toml", environ)


def error_of(document: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The one line of the ConfigError that ``document`` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(document, "c.toml", environ or {})
    return str(caught.value)


# --- environment overrides ----------------------------------------------------------------


def test_every_variable_overrides_its_key() -> None:
    """Each LIQMON_* variable replaces the key it names, whatever the file says."""
    document = {
        **ONE_SYMBOL,
        "redis": {"url": "redis://file:6379/0", "cluster": False, "allow_eviction": False},
        "mqtt": {"url": "mqtt://file:1883"},
        "http": {"host": "file.example", "port": 1, "token": "from-file"},
    }
    environ = {
        "LIQMON_REDIS_URL": "redis://env:6379/1",
        "LIQMON_REDIS_CLUSTER": "yes",
        "LIQMON_REDIS_ALLOW_EVICTION": "TRUE",
        "LIQMON_MQTT_URL": "mqtts://env",
        "LIQMON_HTTP_HOST": "0.0.0.0",
        "LIQMON_HTTP_PORT": "9000",
        "LIQMON_HTTP_TOKEN": "from-env",
    }
    settings = settings_with(environ, document)
    assert RedisSettings("redis://env:6379/1", cluster=True, allow_eviction=True) == settings.redis
    assert "mqtts://env" == settings.mqtt.url
    assert HttpSettings("0.0.0.0", 9000, "from-env") == settings.http
    assert sorted(environ) == sorted(VARIABLES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), (" Yes ", True), ("true", True), ("0", False), ("NO", False), ("false", False)],
)
def test_flag_spellings(value: str, expected: bool) -> None:
    """A true/false variable takes true/false, 1/0 or yes/no, in any case, spaces around."""
    document = {**ONE_SYMBOL, "redis": {"allow_eviction": not expected}}
    assert (
        expected
        is settings_with({"LIQMON_REDIS_ALLOW_EVICTION": value}, document).redis.allow_eviction
    )


def test_empty_variables_are_unset_except_the_port() -> None:
    """An empty variable leaves the file's value, but an empty LIQMON_HTTP_PORT is refused."""
    document = {**ONE_SYMBOL, "http": {"token": "t"}, "redis": {"cluster": True}}
    empty = {name: "" for name in VARIABLES if name != "LIQMON_HTTP_PORT"}
    settings = settings_with(empty, document)
    assert (settings.http.token, settings.redis.cluster) == ("t", True)
    assert settings.redis.url == RedisSettings().url
    assert "LIQMON_HTTP_PORT: must be a port number, got ''" == error_of(
        ONE_SYMBOL, {"LIQMON_HTTP_PORT": ""}
    )


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any override variable (a developer may export some)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_given_mapping_hides_the_process_environment(unset: pytest.MonkeyPatch) -> None:
    """environ={} means no overrides at all, even with LIQMON_* set in the process."""
    monkeypatch = unset
    monkeypatch.setenv("LIQMON_HTTP_PORT", "9123")
    monkeypatch.setenv("LIQMON_REDIS_URL", "redis://process:6379/0")
    assert Environment.read({}).overrides() == {}
    assert Environment.read(None).overrides() == {
        "http": {"port": 9123},
        "redis": {"url": "redis://process:6379/0"},
    }


def test_other_variables_are_ignored(unset: pytest.MonkeyPatch) -> None:
    """Variables that are not overrides (the log settings, a typo) change nothing."""
    monkeypatch = unset
    monkeypatch.setenv("LIQMON_LOG_FORMAT", "json")
    monkeypatch.setenv("LIQMON_HTTP_PROT", "1")
    assert Environment.read(None).overrides() == {}


def test_an_override_meets_the_check_of_its_key() -> None:
    """A valid variable that the key's own check refuses fails like the file's value would."""
    document = {**ONE_SYMBOL, "redis": {"url": "redis://h:6379/0"}}
    assert "LIQMON_REDIS_URL: port must be between 0 and 65535, got 'redis://h:99999/0'" == (
        error_of(document, {"LIQMON_REDIS_URL": "redis://h:99999/0"})
    )


def test_the_documentation_names_every_variable() -> None:
    """README and the shipped file's header list every override the model reads."""
    readme = (ROOT / "README.md").read_text()
    header = SHIPPED.read_text().split("\n\n", 1)[0]
    assert [name for name in VARIABLES if name not in readme] == []
    assert [name for name in VARIABLES if name not in header] == []


# --- defaults, stated once ----------------------------------------------------------------


def test_left_out_tables_take_the_types_defaults() -> None:
    """A document with one symbol and nothing else gets each type's own defaults."""
    settings = settings_with({})
    assert (RedisSettings(), MqttSettings(), HttpSettings(), Limits()) == (
        settings.redis,
        settings.mqtt,
        settings.http,
        settings.limits,
    )
    assert RiskLimits() == settings.risk
    assert {"BTCUSDT": DEFAULT_GUARDS} == settings.guards
    assert {
        "BTCUSDT": Contract(
            "BTCUSDT", ContractKind.LINEAR, (Bracket(None, Decimal("0.01"), Decimal(0)),)
        )
    } == settings.symbols


def test_the_example_states_the_defaults_truthfully() -> None:
    """Every value config/liqmon.toml spells out for redis, mqtt, http, risk and limits is the
    default: dropping those tables (and the guards' values) changes nothing."""
    text = SHIPPED.read_text()
    stripped = re.sub(
        r"^\[(redis|mqtt|http|risk|limits|guards)\]\n(?:[^\[\n].*\n|\n)*", "", text, flags=re.M
    )
    assert "[redis]" not in stripped and "[symbols.BTCUSDT]" in stripped
    shipped = load_settings(SHIPPED, environ={})
    bare = parse_settings(tomllib.loads(stripped, parse_float=Decimal), str(SHIPPED), {})
    assert shipped == bare


def test_the_installed_example_is_the_shipped_file() -> None:
    """The example the package installs (for ``liqmon demo`` outside a checkout) is
    config/liqmon.toml itself, not a copy that could drift."""
    assert EXAMPLE_PATH.resolve() == SHIPPED.resolve()
    assert (
        load_settings(EXAMPLE_PATH, environ={}).symbols
        == load_settings(SHIPPED, environ={}).symbols
    )


def test_replace_keeps_working_and_checks_the_new_value() -> None:
    """The settings stay dataclasses: replace() works, and checks a value as the file would."""
    assert dataclasses.is_dataclass(Limits)
    assert 0 == dataclasses.replace(HttpSettings(), port=0).port
    with pytest.raises(ValidationError):
        dataclasses.replace(Limits(), dead_letter_max_bytes=1)
    with pytest.raises(ValidationError):
        dataclasses.replace(MqttSettings(), topic_prefix="a/b")


def test_a_source_with_toml_floats_loads() -> None:
    """A [[sources]] table's fractional seconds (TOML floats, read as decimals) are numbers."""
    table = {"type": "binance", "symbols": {"BTCUSDT": "BTCUSDT"}, "idle_timeout_s": Decimal("2.5")}
    (source,) = settings_with({}, {**ONE_SYMBOL, "sources": [table]}).sources
    assert 2.5 == source.feed.options.idle_timeout_s


@pytest.mark.parametrize(
    ("sources", "line"),
    [
        ({"type": "binance"}, "c.toml: sources: must be an array of tables ([[sources]])"),
        ([5], "c.toml: sources[0]: must be a table"),
        (
            [{"type": "synthetic", "start_prices": {"BTCUSDT": "1"}, "jumps": 5}],
            "c.toml: sources[0]: synthetic: jumps must be an array of tables",
        ),
    ],
)
def test_a_bad_sources_value_is_one_line(sources: Any, line: str) -> None:
    """The feeds' ValueError is the problem; the model names the entry."""
    assert line == error_of({**ONE_SYMBOL, "sources": sources})


# --- one error translation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "at", "key"),
    [
        (("http", "port"), "", "http.port"),
        (("symbols", "BTCUSDT", "brackets", 0, "fee"), "", "symbols.BTCUSDT.brackets[0].fee"),
        (("sources",), "[2].symbols.X", "sources[2].symbols.X"),
        (("limits",), "dead_letter_max_bytes", "limits.dead_letter_max_bytes"),
        ((), "symbols", "symbols"),
        (("LIQMON_HTTP_PORT",), "", "LIQMON_HTTP_PORT"),
    ],
)
def test_keys_are_dotted_with_indexes_in_brackets(
    loc: tuple[int | str, ...], at: str, key: str
) -> None:
    """A location and the key a table's check blames become one TOML-like key."""
    assert key == key_of(loc, at)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 0
    rows: list[_Row] = []


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str

    @model_validator(mode="after")
    def _short(self) -> _Row:
        if len(self.name) > 3:
            raise problem("is {too} long", at="name")
        return self


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ({"sise": 1}, "t.toml: sise: unknown key"),
        ({"rows": [{}]}, "t.toml: rows[0].name: is required"),
        ({"rows": [5]}, "t.toml: rows[0]: must be a table"),
        ({"rows": [{"name": "long"}]}, "t.toml: rows[0].name: is {too} long"),
        (
            {"rows": [{"name": "ok"}, {"name": "long"}], "extra": 1},
            "t.toml: rows[1].name: is {too} long",
        ),
    ],
)
def test_a_validation_error_becomes_one_line(document: dict[str, Any], line: str) -> None:
    """pydantic's own errors get fixed sentences, a check's sentence is kept as written
    (braces too), and only the first problem is reported."""
    with pytest.raises(ValidationError) as caught:
        _Table.model_validate(document)
    assert line == str(config_error(caught.value, "t.toml"))


def test_an_environment_error_names_the_variable_alone() -> None:
    """Without a file, the line is VARIABLE: PROBLEM."""
    with pytest.raises(ConfigError) as caught:
        Environment.read({"LIQMON_REDIS_CLUSTER": "maybe"})
    assert "LIQMON_REDIS_CLUSTER: must be true or false, got 'maybe'" == str(caught.value)
