"""Configuration: the shipped file loads; every mistake names the file, the key and the problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from monitor.config.loading import load_settings
from monitor.config.model import HttpSettings, Limits
from monitor.core.errors import ConfigError
from monitor.core.margin import Bracket, Contract, ContractKind
from monitor.core.status import RiskLimits

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "liqmon.toml"
DOCKER = SHIPPED.with_name("liqmon.docker.toml")

MINIMAL = """\
[redis]
url = "redis://127.0.0.1:6379/0"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[http]
port = 8321

[risk]
margin_call_ratio = "0.8"
margin_call_clear_ratio = "0.7"

[symbols.BTCUSDT]
contract = "linear"
brackets = [
  { notional_cap = "50000",  mmr = "0.004", cum = "0" },
  { notional_cap = "250000", mmr = "0.005", cum = "50" },
  {                          mmr = "0.01",  cum = "1300" },
]
"""


Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write a TOML text to a file of its own and return the path."""

    def make(text: str) -> Path:
        path = tmp_path / "liqmon.toml"
        path.write_text(text)
        return path

    return make


def fails(path: Path, environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading ``path`` raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={} if environ is None else environ)
    return str(caught.value)


def test_the_shipped_configuration_loads() -> None:
    """config/liqmon.toml loads with its documented values and five symbols."""
    settings = load_settings(SHIPPED, environ={})
    assert settings.source == str(SHIPPED)
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.key_prefix == "liqmon"
    assert (settings.mqtt.url, settings.mqtt.topic_prefix, settings.mqtt.client_id) == (
        "mqtt://127.0.0.1:1883",
        "liqmon",
        "liqmon-monitor",
    )
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert settings.http == HttpSettings("127.0.0.1", 8321)
    assert settings.risk == RiskLimits(Decimal("0.8"), Decimal("0.7"))
    assert settings.limits == Limits(1048576, 10000, 10000)
    assert list(settings.symbols) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSD", "ETHUSD"]
    btcusdt = settings.symbols["BTCUSDT"]
    assert (btcusdt.kind, btcusdt.contract_size, btcusdt.close_fee_rate) == (
        ContractKind.LINEAR,
        Decimal(1),
        Decimal(0),
    )
    assert btcusdt.brackets[0] == Bracket(Decimal(50000), Decimal("0.004"), Decimal(0))
    assert btcusdt.brackets[-1] == Bracket(None, Decimal("0.5"), Decimal(167872550))
    assert settings.symbols["SOLUSDT"].close_fee_rate == Decimal("0.0005")
    btcusd = settings.symbols["BTCUSD"]
    assert (btcusd.kind, btcusd.contract_size) == (ContractKind.INVERSE, Decimal(100))
    assert settings.sources == ()


def test_a_minimal_file_gets_the_defaults(write: Write) -> None:
    """Keys left out take their documented defaults; decimals are exact."""
    settings = load_settings(write(MINIMAL), environ={})
    assert settings.http.host == "127.0.0.1"
    assert settings.redis.cluster is False
    assert settings.mqtt.topic_prefix == "liqmon"
    assert settings.limits == Limits()
    assert settings.symbols == {
        "BTCUSDT": Contract(
            "BTCUSDT",
            ContractKind.LINEAR,
            (
                Bracket(Decimal(50000), Decimal("0.004"), Decimal(0)),
                Bracket(Decimal(250000), Decimal("0.005"), Decimal(50)),
                Bracket(None, Decimal("0.01"), Decimal(1300)),
            ),
        )
    }


def test_toml_numbers_are_read_exactly(write: Write) -> None:
    """A ratio written as a TOML float (0.8) is the decimal 0.8, not a binary approximation."""
    text = MINIMAL.replace('margin_call_ratio = "0.8"', "margin_call_ratio = 0.8")
    assert load_settings(write(text), environ={}).risk.margin_call_ratio == Decimal("0.8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[http]\n", "[http]\nhots = 1\n", "http.hots: unknown key"),
        ("[redis]\n", "[redis]\npassword = 'x'\n", "redis.password: unknown key"),
        ("[risk]\n", "[rsik]\n", "rsik: unknown key"),
        (
            'contract = "linear"\n',
            'contract = "linear"\nleverage = 10\n',
            "symbols.BTCUSDT.leverage: unknown key",
        ),
        (
            'mmr = "0.004", cum = "0" }',
            'mmr = "0.004", cum = "0", fee = "0" }',
            "symbols.BTCUSDT.brackets[0].fee: unknown key",
        ),
        (
            'url = "mqtt://127.0.0.1:1883"',
            'url = "http://127.0.0.1:1883"',
            "mqtt.url: must start with mqtt:// or mqtts://, got 'http://127.0.0.1:1883'",
        ),
        (
            'url = "redis://127.0.0.1:6379/0"',
            'url = "127.0.0.1:6379"',
            "redis.url: must start with redis:// or rediss://, got '127.0.0.1:6379'",
        ),
        (
            'url = "mqtt://127.0.0.1:1883"',
            'url = "mqtt://127.0.0.1:99999"',
            "mqtt.url: port must be between 0 and 65535, got 'mqtt://127.0.0.1:99999'",
        ),
        (
            'url = "mqtt://127.0.0.1:1883"',
            'url = "mqtt://127.0.0.1:1883"\npublisher = "elsewhere"',
            "mqtt.publisher: must be one of 'inline', 'separate', got 'elsewhere'",
        ),
        (
            'url = "redis://127.0.0.1:6379/0"',
            'url = "redis://127.0.0.1:6379/0"\ncluster = "yes"',
            "redis.cluster: must be true or false, got 'yes'",
        ),
        ("port = 8321", "port = 70000", "http.port: must be between 0 and 65535, got 70000"),
        ("port = 8321", "port = -1", "http.port: must be between 0 and 65535, got -1"),
        ("port = 8321", 'port = "8321"', "http.port: must be an integer, got '8321'"),
        (
            'margin_call_clear_ratio = "0.7"',
            'margin_call_clear_ratio = "0.9"',
            "risk: need 0 < margin_call_clear_ratio <= margin_call_ratio < 1, got 0.9 and 0.8",
        ),
        (
            'margin_call_ratio = "0.8"',
            'margin_call_ratio = "1.2"',
            "risk: need 0 < margin_call_clear_ratio <= margin_call_ratio < 1, got 0.7 and 1.2",
        ),
        (
            'margin_call_ratio = "0.8"',
            'margin_call_ratio = "most"',
            "risk.margin_call_ratio: must be a decimal, got 'most'",
        ),
        (
            'cum = "50" }',
            'cum = "40" }',
            "symbols.BTCUSDT: brackets[1].cum must be 50.000 to keep the maintenance margin "
            "continuous at notional 50000, got 40",
        ),
        (
            'contract = "linear"',
            'contract = "perpetual"',
            "symbols.BTCUSDT.contract: must be 'linear' or 'inverse', got 'perpetual'",
        ),
        (
            'contract = "linear"',
            'contract = "inverse"',
            "symbols.BTCUSDT.contract_size: is required",
        ),
        (
            'contract = "linear"',
            'contract = "inverse"\ncontract_size = "0"',
            "symbols.BTCUSDT.contract_size: must be positive",
        ),
        (
            '{ notional_cap = "250000", mmr = "0.005", cum = "50" },',
            '{ mmr = "0.005", cum = "50" },',
            "symbols.BTCUSDT: brackets[1].notional_cap may be omitted only on the last bracket",
        ),
    ],
)
def test_each_mistake_names_file_key_and_problem(
    write: Write, old: str, new: str, message: str
) -> None:
    """A wrong value fails at load with `FILE: KEY: PROBLEM`."""
    assert old in MINIMAL
    path = write(MINIMAL.replace(old, new, 1))
    assert fails(path) == f"{path}: {message}"


def test_missing_brackets(write: Write) -> None:
    """A symbol without a tier table is refused, naming its brackets key."""
    start = MINIMAL.index("brackets = [")
    path = write(MINIMAL[:start])
    assert fails(path) == f"{path}: symbols.BTCUSDT.brackets: must be a non-empty array of tables"
    path = write(MINIMAL[:start] + "brackets = []\n")
    assert fails(path) == f"{path}: symbols.BTCUSDT.brackets: must be a non-empty array of tables"


def test_no_symbols_at_all(write: Write) -> None:
    """A file without any [symbols.NAME] table says that one is needed."""
    path = write(MINIMAL[: MINIMAL.index("[symbols.BTCUSDT]")])
    assert fails(path) == f"{path}: symbols: configure at least one [symbols.NAME] table"


def test_a_topic_unsafe_symbol_name(write: Write) -> None:
    """A symbol name that cannot be an MQTT topic level is refused at load."""
    path = write(MINIMAL.replace("[symbols.BTCUSDT]", '[symbols."BTC/USDT"]'))
    assert fails(path) == (
        f"{path}: symbols.BTC/USDT: symbols.BTC/USDT 'BTC/USDT' must be 1-64 characters of "
        "letters, digits and ._:@=- (no '+', '#', '/', spaces)"
    )


def test_an_unknown_symbol_in_a_source(write: Write) -> None:
    """A [[sources]] entry mapping a venue symbol to an unconfigured symbol is refused."""
    text = MINIMAL + '\n[[sources]]\ntype = "binance"\nsymbols = { XRPUSDT = "XRPUSDT" }\n'
    path = write(text)
    assert (
        fails(path) == f"{path}: sources[0].symbols.XRPUSDT: 'XRPUSDT' is not a configured symbol"
    )


def test_a_source_whose_symbols_are_not_a_table(write: Write) -> None:
    """A [[sources]] entry with a list for symbols fails with a message, not a traceback."""
    path = write(MINIMAL + '\n[[sources]]\ntype = "binance"\nsymbols = ["BTCUSDT"]\n')
    assert fails(path) == f"{path}: sources[0]: source 'binance': symbols must map names to names"


def test_a_configured_source_is_built(write: Write) -> None:
    """A valid [[sources]] entry for a configured symbol becomes a price source."""
    text = MINIMAL + '\n[[sources]]\ntype = "binance"\nsymbols = { BTCUSDT = "BTCUSDT" }\n'
    (source,) = load_settings(write(text), environ={}).sources
    assert source.name == "binance"


def test_bad_toml(write: Write) -> None:
    """A file that is not TOML names the file and where the parser stopped."""
    path = write("[redis\nurl = 1\n")
    assert fails(path) == (
        f"{path}: not valid TOML: Expected ']' at the end of a table declaration "
        "(at line 1, column 7)"
    )


def test_a_missing_file(tmp_path: Path) -> None:
    """A configuration path that does not exist says so and how to pass another."""
    path = tmp_path / "nope.toml"
    assert fails(path) == f"{path}: file not found (pass --config FILE)"


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    """A configuration path that is a directory fails with a message, not a traceback."""
    assert fails(tmp_path).startswith(f"{tmp_path}: cannot read: ")


def test_environment_overrides_apply(write: Write) -> None:
    """LIQMON_REDIS_URL, LIQMON_MQTT_URL, LIQMON_HTTP_HOST and LIQMON_HTTP_PORT beat the file."""
    environ = {
        "LIQMON_REDIS_URL": "rediss://user:secret@redis.internal:6380/2",
        "LIQMON_MQTT_URL": "mqtts://broker.internal",
        "LIQMON_HTTP_HOST": "0.0.0.0",
        "LIQMON_HTTP_PORT": "9000",
    }
    settings = load_settings(write(MINIMAL), environ=environ)
    assert settings.redis.url == "rediss://user:secret@redis.internal:6380/2"
    assert settings.mqtt.url == "mqtts://broker.internal"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == (
        "broker.internal",
        8883,
        True,
    )
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("in_file", "environ", "cluster"),
    [
        ("cluster = true", {}, True),
        ("cluster = false", {"LIQMON_REDIS_CLUSTER": "true"}, True),
        ("cluster = true", {"LIQMON_REDIS_CLUSTER": "0"}, False),
        ("cluster = true", {"LIQMON_REDIS_CLUSTER": ""}, True),
    ],
)
def test_redis_cluster_is_read_from_the_file_or_the_environment(
    write: Write, in_file: str, environ: dict[str, str], cluster: bool
) -> None:
    """redis.cluster selects a Redis Cluster; LIQMON_REDIS_CLUSTER (when not empty) wins."""
    text = MINIMAL.replace(
        'url = "redis://127.0.0.1:6379/0"', f'url = "redis://n1:7000"\n{in_file}'
    )
    assert load_settings(write(text), environ=environ).redis.cluster is cluster


def test_environment_overrides_are_optional(write: Write) -> None:
    """Without the variables (or with empty ones) the file's values stand."""
    environ = {"LIQMON_REDIS_URL": "", "LIQMON_MQTT_URL": "", "LIQMON_HTTP_HOST": ""}
    text = MINIMAL.replace("[http]\n", '[http]\nhost = "::1"\n')
    settings = load_settings(write(text), environ=environ)
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert (settings.http.host, settings.http.port) == ("::1", 8321)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LIQMON_HTTP_PORT", "eighty", "LIQMON_HTTP_PORT: must be a port number, got 'eighty'"),
        (
            "LIQMON_REDIS_CLUSTER",
            "maybe",
            "LIQMON_REDIS_CLUSTER: must be true or false, got 'maybe'",
        ),
        ("LIQMON_HTTP_PORT", "65536", "LIQMON_HTTP_PORT: must be a port number, got '65536'"),
        (
            "LIQMON_MQTT_URL",
            "tcp://broker:1883",
            "LIQMON_MQTT_URL: must start with mqtt:// or mqtts://, got 'tcp://broker:1883'",
        ),
        (
            "LIQMON_REDIS_URL",
            "localhost:6379",
            "LIQMON_REDIS_URL: must start with redis:// or rediss://, got 'localhost:6379'",
        ),
    ],
)
def test_a_bad_environment_override_names_the_variable(
    write: Write, name: str, value: str, message: str
) -> None:
    """A wrong override fails at load, naming the variable and the problem."""
    assert fails(write(MINIMAL), {name: value}) == message


def test_the_process_environment_is_the_default(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without environ=, load_settings reads the real process environment."""
    monkeypatch.setenv("LIQMON_HTTP_PORT", "9123")
    assert load_settings(write(MINIMAL)).http.port == 9123


def test_the_docker_configuration_is_the_shipped_one_with_a_separate_publisher() -> None:
    """config/liqmon.docker.toml includes liqmon.toml and changes only mqtt.publisher."""
    shipped = load_settings(SHIPPED, environ={})
    docker = load_settings(DOCKER, environ={})
    assert "[symbols" not in DOCKER.read_text()
    assert (shipped.mqtt.publisher, docker.mqtt.publisher) == ("inline", "separate")
    assert replace(docker, mqtt=shipped.mqtt, source=shipped.source) == shipped


def test_the_image_binds_every_interface_only_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped file binds loopback; LIQMON_HTTP_HOST from the process environment wins."""
    monkeypatch.delenv("LIQMON_HTTP_HOST", raising=False)
    assert load_settings(DOCKER).http.host == "127.0.0.1"
    monkeypatch.setenv("LIQMON_HTTP_HOST", "0.0.0.0")
    assert load_settings(DOCKER).http.host == "0.0.0.0"


def test_an_including_file_wins_key_by_key(tmp_path: Path) -> None:
    """Keys of the including file replace the included ones; the others are kept."""
    (tmp_path / "base.toml").write_text(MINIMAL)
    variant = tmp_path / "variant.toml"
    variant.write_text(
        'include = "base.toml"\n[http]\nhost = "0.0.0.0"\n[risk]\nmargin_call_ratio = "0.9"\n'
    )
    settings = load_settings(variant, environ={})
    assert settings.source == str(variant)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 8321)
    assert settings.risk == RiskLimits(Decimal("0.9"), Decimal("0.7"))
    assert settings.symbols == load_settings(tmp_path / "base.toml", environ={}).symbols


def test_nested_tables_merge_and_arrays_are_replaced_whole(tmp_path: Path) -> None:
    """A symbol's table merges with the included one; a brackets array replaces it whole."""
    (tmp_path / "base.toml").write_text(MINIMAL)
    variant = tmp_path / "variant.toml"
    variant.write_text(
        'include = "base.toml"\n'
        '[symbols.BTCUSDT]\nclose_fee_rate = "0.0005"\n'
        '[symbols.ETHUSDT]\ncontract = "linear"\nbrackets = [{ mmr = "0.01" }]\n'
    )
    symbols = load_settings(variant, environ={}).symbols
    base = load_settings(tmp_path / "base.toml", environ={}).symbols["BTCUSDT"]
    assert list(symbols) == ["BTCUSDT", "ETHUSDT"]
    assert symbols["BTCUSDT"] == replace(base, close_fee_rate=Decimal("0.0005"))
    assert symbols["ETHUSDT"].brackets == (Bracket(None, Decimal("0.01"), Decimal(0)),)
    variant.write_text('include = "base.toml"\n[symbols.BTCUSDT]\nbrackets = [{ mmr = "0.02" }]\n')
    assert load_settings(variant, environ={}).symbols["BTCUSDT"].brackets == (
        Bracket(None, Decimal("0.02"), Decimal(0)),
    )


def test_includes_chain_and_are_relative_to_the_including_file(tmp_path: Path) -> None:
    """An included file may include another, each path read from its own directory."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text(MINIMAL)
    (tmp_path / "shared" / "staging.toml").write_text(
        'include = "base.toml"\n[http]\nport = 9001\n'
    )
    top = tmp_path / "top.toml"
    top.write_text('include = "shared/staging.toml"\n[http]\nhost = "0.0.0.0"\n')
    http = load_settings(top, environ={}).http
    assert (http.host, http.port) == ("0.0.0.0", 9001)


def test_a_missing_included_file(tmp_path: Path) -> None:
    """An include naming no file says which file is missing and who included it."""
    top = tmp_path / "top.toml"
    top.write_text('include = "nope.toml"\n')
    assert fails(top) == f"{tmp_path / 'nope.toml'}: file not found (included by {top})"


def test_a_bad_included_file_is_named(tmp_path: Path) -> None:
    """Broken TOML in an included file names that file, not the one that included it."""
    (tmp_path / "base.toml").write_text("[redis\n")
    top = tmp_path / "top.toml"
    top.write_text('include = "base.toml"\n')
    assert fails(top).startswith(f"{tmp_path / 'base.toml'}: not valid TOML: ")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.toml": "a.toml"}, "{a}: include: 'a.toml' closes a cycle ({a} -> {a})"),
        (
            {"a.toml": "b.toml", "b.toml": "./a.toml"},
            "{b}: include: './a.toml' closes a cycle ({a} -> {b} -> {a})",
        ),
    ],
)
def test_an_include_cycle_is_refused(tmp_path: Path, files: dict[str, str], message: str) -> None:
    """A file that includes itself, directly or through another, fails with the chain of files."""
    folder = tmp_path.resolve()
    for name, included in files.items():
        (folder / name).write_text(f'include = "{included}"\n')
    a, b = folder / "a.toml", folder / "b.toml"
    assert fails(a) == message.format(a=a, b=b)


@pytest.mark.parametrize("value", ["3", '""', '["base.toml"]'])
def test_an_include_that_is_not_a_file_name(write: Write, value: str) -> None:
    """include takes one file name; anything else is refused naming the key."""
    path = write(f"include = {value}\n" + MINIMAL)
    assert fails(path).startswith(f"{path}: include: must be a file name, got ")


def test_include_is_a_top_level_key_only(write: Write) -> None:
    """An include inside a table is an unknown key there, not a second include."""
    path = write(MINIMAL.replace("[http]\n", '[http]\ninclude = "other.toml"\n'))
    assert fails(path) == f"{path}: http.include: unknown key"
