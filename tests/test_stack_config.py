"""The docker-compose stack's files: the compose file, Prometheus' config and rules, Grafana's.

The tools that check them are used where they are installed (``docker-compose``
or ``docker compose`` needs no engine to validate; ``promtool`` comes with
Debian's ``prometheus``); each test says why it skipped otherwise. Every
metric the Grafana dashboard and the alerting rules query must be one the
monitor exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import settings_for

from monitor.daemon import Daemon

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
SERVICES = {"redis", "mosquitto", "monitor", "publisher", "prometheus", "grafana"}


def compose_command() -> list[str] | None:
    """``docker-compose`` or ``docker compose``, whichever validates files here."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_file_validates_and_has_the_whole_stack() -> None:
    """``docker-compose config -q`` accepts the file; it defines the six services."""
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    compose = [*command, "-f", str(ROOT / "docker-compose.yml")]
    checked = subprocess.run(
        [*compose, "config", "-q"], capture_output=True, text=True, check=False
    )
    assert (0, "") == (checked.returncode, checked.stderr)
    listed = subprocess.run(
        [*compose, "config", "--services"], capture_output=True, text=True, check=True
    )
    assert SERVICES == set(listed.stdout.split())


def test_prometheus_config_and_rules_pass_promtool() -> None:
    """``promtool check config`` (which also checks the rule file it loads)."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus')")
    checked = subprocess.run(
        ["promtool", "check", "config", str(CONFIG / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == checked.returncode, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout


def exported_names(redis_url: str, mqtt_url: str) -> set[str]:
    """The metric families a daemon exports (HELP lines), from its registry; nothing runs."""
    daemon = Daemon(settings_for(redis_url, mqtt_url, "names"))
    text = daemon.metrics.render().decode()
    return set(re.findall(r"^# HELP (\S+)", text, re.MULTILINE))


def queried_names(text: str) -> set[str]:
    """``liqmon_*`` series named in PromQL, reduced to their family names."""
    names = set(re.findall(r"\bliqmon_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_grafana_dashboard_and_rules_query_only_exported_metrics(
    redis_url: str, mqtt_url: str
) -> None:
    """Every metric in the dashboard and the rules exists, and panels use the provisioned source."""
    exported = exported_names(redis_url, mqtt_url)
    dashboard = json.loads((CONFIG / "grafana" / "dashboards" / "liqmon.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) > 20
    for text in [*exprs, (CONFIG / "liqmon-rules.yml").read_text()]:
        assert queried_names(text) <= exported, queried_names(text) - exported
    datasource = (
        CONFIG / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    ).read_text()
    uid = re.search(r"uid: (\S+)", datasource)
    assert uid is not None
    sources = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert {uid.group(1)} == sources
    assert "monitor:8321" in (CONFIG / "prometheus.yml").read_text()
