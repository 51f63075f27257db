"""``[alerts]`` in the configuration, and ``liqmon alerts`` at the command line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from monitor.config.loading import parse_settings
from monitor.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LIQMON = Path(sys.executable).parent / "liqmon"


def readme_example() -> dict[str, Any]:
    """The TOML of README's "Alert forwarding" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Alert forwarding") :]
    found = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert found is not None
    return tomllib.loads(found.group(1))


def with_alerts(alerts: dict[str, Any]) -> dict[str, Any]:
    base = tomllib.loads((ROOT / "config" / "liqmon.toml").read_text())
    return {**base, "alerts": alerts}


@pytest.mark.unit
def test_the_readme_example_is_a_valid_configuration() -> None:
    """The user's example: a webhook for liquidations, Slack for margin calls, PagerDuty."""
    settings = parse_settings(with_alerts(readme_example()["alerts"]), "README.md", {})
    routes = {route.name: route for route in settings.alerts.routes}
    assert ["risk-webhook", "desk-slack", "oncall"] == list(routes)
    assert ("liquidation",) == routes["risk-webhook"].types
    assert "100000" == str(routes["desk-slack"].min_notional)
    assert ("feed_stale", "feed_resumed") == routes["oncall"].types


@pytest.mark.unit
@pytest.mark.parametrize(
    ("route", "line"),
    [
        (
            {"name": "h", "type": "webhook", "url": "https://x"},
            "alerts.routes[0].secret_env: a webhook needs secret_env (its HMAC key)",
        ),
        (
            {"name": "p", "type": "pagerduty"},
            "alerts.routes[0].routing_key_env: a pagerduty route needs routing_key_env",
        ),
        (
            {"name": "s", "type": "apprise", "url_env": "X", "types": ["liquidations"]},
            "alerts.routes[0].types[0]: must be one of margin_call, margin_call_cleared, "
            "liquidation, funding_applied, feed_stale, feed_resumed, price_deviation, "
            "price_deviation_cleared, liquidation_cluster, liquidation_cluster_cleared, "
            "got 'liquidations'",
        ),
        (
            {"name": "s", "type": "apprise", "url_env": "X", "colour": "red"},
            "alerts.routes[0].colour: unknown key",
        ),
        (
            {"name": "s", "type": "apprise", "url_env": "not a name"},
            "alerts.routes[0].url_env: must name an environment variable, got 'not a name'",
        ),
        (
            {"name": "s/x", "type": "apprise", "url_env": "X"},
            "alerts.routes[0].name: name 's/x' must be 1-64 characters of letters, digits "
            "and ._:@=- (no '+', '#', '/', spaces)",
        ),
    ],
)
def test_a_bad_route_is_one_line_naming_its_key(route: dict[str, Any], line: str) -> None:
    """``FILE: KEY: PROBLEM``, as for every other table."""
    with pytest.raises(ConfigError) as raised:
        parse_settings(with_alerts({"routes": [route]}), "f.toml", {})
    assert f"f.toml: {line}" == str(raised.value)


def test_a_missing_secret_stops_the_forwarder_with_one_line(tmp_path: Path) -> None:
    """Exit status 2 and the variable's name, never a traceback (nothing is contacted)."""
    config = tmp_path / "alerts.toml"
    config.write_text(
        f'include = "{ROOT / "config" / "liqmon.toml"}"\n'
        '[[alerts.routes]]\nname = "oncall"\ntype = "pagerduty"\n'
        'routing_key_env = "LIQMON_TEST_UNSET_PD_KEY"\n'
    )
    done = subprocess.run(
        [str(LIQMON), "alerts", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
    )
    expected = (
        f"liqmon: error: {config}: alerts.routes.oncall.routing_key_env: the environment "
        "variable LIQMON_TEST_UNSET_PD_KEY is not set\n"
    )
    assert (2, expected) == (done.returncode, done.stderr)
    unknown = subprocess.run(
        [str(LIQMON), "alerts", "retry", "nope", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert 2 == unknown.returncode
    assert "no route 'nope' (configured: oncall)" in unknown.stderr


def test_a_port_in_use_is_one_line_naming_the_option(
    tmp_path: Path, redis_url: str, mqtt_url: str
) -> None:
    """Exit status 1 and what to change: --http-port or [alerts] http_port."""
    config = tmp_path / "alerts.toml"
    config.write_text(
        f'include = "{ROOT / "config" / "liqmon.toml"}"\n'
        f'[redis]\nurl = "{redis_url}"\n[mqtt]\nurl = "{mqtt_url}"\n'
        '[[alerts.routes]]\nname = "oncall"\ntype = "pagerduty"\nrouting_key_env = "PD"\n'
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [str(LIQMON), "alerts", "--config", str(config), "--http-port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, "PD": "key"},
            timeout=30,
        )
    errors = [line for line in done.stderr.splitlines() if line.startswith("liqmon: error:")]
    assert 1 == done.returncode
    assert 1 == len(errors)
    assert errors[0].startswith(f"liqmon: error: cannot listen on 127.0.0.1:{port}: ")
    assert "(--http-port, or [alerts] http_port in" in errors[0]
    assert "Traceback" not in done.stderr
