"""The docker-compose stack's files: the image, the compose file, Prometheus, Alertmanager, Grafana.

There is no Docker engine to run the stack here, so each file is checked by
the tool that reads it, where it is installed (``docker-compose`` or ``docker
compose`` validate without an engine; ``promtool`` comes with Debian's
``prometheus``, ``amtool`` with ``prometheus-alertmanager``); each test says why
it skipped otherwise. Every metric the Grafana dashboard and the alerting rules
query must be one the monitor exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import http_ready, settings_for

from monitor.alerts.metrics import AlertMetrics
from monitor.devtools.embedded import free_ports
from monitor.service.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
SERVICES = {"redis", "mosquitto", "monitor", "publisher", "prometheus", "alertmanager", "grafana"}


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
    """``docker-compose config -q`` accepts the file; it defines the seven services."""
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


def system_python() -> str | None:
    """The interpreter that runs Debian's docker-compose (it has PyYAML and docker-py)."""
    found = shutil.which("docker-compose")
    if found is None:
        return None
    first = Path(found).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    return first[2:].strip() if first.startswith("#!") and "python" in first else None


def compose_model() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (defaults and variables applied)."""
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    compose = [*command, "-f", str(ROOT / "docker-compose.yml"), "config"]
    # The file's own defaults, whatever this shell exports.
    env = {name: value for name, value in os.environ.items() if name != "LIQMON_MQTT_PASSWORD"}
    if command == ["docker", "compose"]:
        text = subprocess.run(
            [*compose, "--format", "json"], capture_output=True, check=True, env=env
        )
        return json.loads(text.stdout)  # type: ignore[no-any-return]
    python = system_python()
    if python is None:
        pytest.skip("docker-compose is not the Python one whose YAML reader can be borrowed")
    resolved = subprocess.run(compose, capture_output=True, check=True, env=env).stdout
    as_json = subprocess.run(
        [python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=resolved,
        capture_output=True,
        check=True,
    )
    return json.loads(as_json.stdout)  # type: ignore[no-any-return]


def test_one_image_serves_the_monitor_and_the_publisher() -> None:
    """Only the monitor builds liqmon:local; the publisher runs it, started after the build."""
    services = compose_model()["services"]
    assert {"monitor"} == {name for name, service in services.items() if "build" in service}
    liqmon = (services["monitor"], services["publisher"])
    assert ["liqmon:local", "liqmon:local"] == [service["image"] for service in liqmon]
    assert "monitor" in services["publisher"]["depends_on"]
    for service in liqmon:
        assert ["liqmon", "--config", "config/liqmon.docker.toml"] == service["entrypoint"]
        url = service["environment"]["LIQMON_MQTT_URL"]
        assert "mqtt://liqmon:change-me@mosquitto:1883" == url


def test_the_image_listens_beyond_loopback_and_installs_the_locked_packages() -> None:
    """The Dockerfile sets LIQMON_HTTP_HOST=0.0.0.0 and installs requirements/lock.txt by hash."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(
        r"^ENV .*\bLIQMON_HTTP_HOST=0\.0\.0\.0\b", dockerfile, re.MULTILINE | re.DOTALL
    )
    assert "pip install --no-cache-dir --require-hashes -r requirements/lock.txt" in dockerfile


def copied_sources(dockerfile: str) -> list[str]:
    """Every path a ``COPY`` line takes from the build context."""
    sources = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            sources.extend(word for word in words[1:-1] if not word.startswith("--"))
    return sources


def test_the_build_context_holds_what_the_image_copies_and_nothing_heavy() -> None:
    """Through .dockerignore (read by docker-py's own matcher), the context is the copied files."""
    python = system_python()
    if python is None:
        pytest.skip("docker-py (Debian's docker-compose) is not installed")
    listed = subprocess.run(
        [
            python,
            "-c",
            "import sys; from docker.utils.build import exclude_paths; "
            "patterns = open(sys.argv[1] + '/.dockerignore').read().splitlines(); "
            "print('\\n'.join(sorted(exclude_paths(sys.argv[1], patterns))))",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    context = set(listed.stdout.split())
    for source in copied_sources((ROOT / "Dockerfile").read_text()):
        inside = source.rstrip("/")
        assert any(path == inside or path.startswith(inside + "/") for path in context), source
    heavy = (".venv/", ".git/", "tests/", "benchmarks/", "artifacts/", ".mypy_cache/")
    assert [] == [path for path in context if path.startswith(heavy) or "__pycache__" in path]
    assert "config/mosquitto.passwd" not in context
    assert "monitor/state/lua/commit.lua" in context
    assert "monitor/web/dashboard/index.html" in context


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


def test_alerts_go_from_prometheus_to_alertmanager() -> None:
    """Prometheus sends to the compose file's alertmanager, which mounts config/alertmanager.yml."""
    prometheus = (CONFIG / "prometheus.yml").read_text()
    assert re.search(r"^alerting:\n  alertmanagers:\n", prometheus, re.MULTILINE)
    assert '"alertmanager:9093"' in prometheus
    services = compose_model()["services"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    mounts = " ".join(str(volume) for volume in services["alertmanager"]["volumes"])
    assert "config/alertmanager.yml" in mounts
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def test_alertmanager_config_passes_amtool_and_routes_every_rule_to_the_webhook() -> None:
    """``amtool check-config`` accepts the file; each alert of the rules reaches the webhook."""
    if shutil.which("amtool") is None:
        pytest.skip("amtool not on PATH (Debian package 'prometheus-alertmanager')")
    config = str(CONFIG / "alertmanager.yml")
    checked = subprocess.run(
        ["amtool", "check-config", config], capture_output=True, text=True, check=False
    )
    assert 0 == checked.returncode, checked.stdout + checked.stderr
    assert "webhook_configs" in (CONFIG / "alertmanager.yml").read_text()
    rules = (CONFIG / "liqmon-rules.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)\n.*?severity: (\w+)", rules, re.DOTALL)
    assert len(alerts) >= 7
    for alert, severity in alerts:
        routed = subprocess.run(
            [
                "amtool",
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"alertname={alert}",
                f"severity={severity}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "operator-webhook" == routed.stdout.strip(), alert


def exported_names(redis_url: str, mqtt_url: str) -> set[str]:
    """The metric families a daemon and ``liqmon alerts`` export (HELP lines), from their
    registries; nothing runs."""
    daemon = Daemon(settings_for(redis_url, mqtt_url, "names"))
    text = daemon.metrics.render().decode() + AlertMetrics().render().decode()
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


def readme_commands(tool: str) -> list[list[str]]:
    """The ``tool`` command lines of README's "Docker" section, continuations joined."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Docker\n") :]
    section = section[: section.index("\n## ", 1)]
    text = section.replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.startswith(f"{tool} ")]


def on_port(command: list[str], port: int) -> list[str]:
    """``command`` with its ``-p 1883`` pointed at ``port``."""
    at = command.index("-p")
    return [*command[: at + 1], str(port), *command[at + 2 :]]


async def run(command: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a command given a deadline."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def liqmon(args: list[str], env: dict[str, str]) -> AsyncIterator[None]:
    """``liqmon --config config/liqmon.docker.toml ARGS`` as compose runs it, stopped after."""
    command = [str(Path(sys.executable).parent / "liqmon"), "--config"]
    process = await asyncio.create_subprocess_exec(
        *command, str(CONFIG / "liqmon.docker.toml"), *args, env={**os.environ, **env}
    )
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def test_the_walk_through_liquidates_with_the_shipped_broker_users(
    fresh_redis: Any, fresh_mosquitto: Any
) -> None:
    """README's broker commands, as the shipped users, end in a liquidation the operator reads."""
    subscribe = readme_commands("mosquitto_sub")
    feed = readme_commands("mosquitto_pub")
    assert (1, 2) == (len(subscribe), len(feed))
    redis = fresh_redis()
    broker = fresh_mosquitto(
        allow_anonymous=False,
        extra_config=[
            f"password_file {CONFIG / 'mosquitto.passwd'}",
            f"acl_file {CONFIG / 'mosquitto.acl'}",
        ],
    )
    monitor_port, publisher_port = free_ports(2)
    env = {
        "LIQMON_REDIS_URL": redis.url,
        "LIQMON_MQTT_URL": f"mqtt://liqmon:change-me@127.0.0.1:{broker.port}",
        "LIQMON_HTTP_PORT": str(monitor_port),
        "LIQMON_LOG_FORMAT": "json",
    }
    # A persistent session, subscribed before anything is fed, keeps the event
    # for the operator's command however fast it is published.
    operator = [*on_port(subscribe[0], broker.port), "-c", "-i", "readme-operator"]
    assert 0 == (await run([*operator, "-E"]))[0]
    async with (
        liqmon(["run"], env),
        liqmon(["publish", "--http-port", str(publisher_port)], env),
    ):
        await http_ready(monitor_port)
        await http_ready(publisher_port)
        anonymous = [
            word
            for word in on_port(feed[0], broker.port)
            if word not in {"-u", "-P", "feeder", "change-me"}
        ]
        status, _, refused = await run(anonymous)
        first_line = refused.splitlines()[0]
        assert (5, "Connection error: Connection Refused: not authorised.") == (status, first_line)
        for command in feed:
            assert (0, "", "") == await run(on_port(command, broker.port))
        status, received, _ = await run([*operator, "-C", "1", "-W", "20"])
    topic, payload = received.split(" ", 1)
    event = json.loads(payload)
    assert "liqmon/events/acct-42/BTCUSDT/liquidation" == topic
    assert ("p-1", "liquidation", "54000") == (
        event["position_id"],
        event["type"],
        event["mark_price"],
    )
