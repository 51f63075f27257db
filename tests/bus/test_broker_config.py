"""The shipped ``config/mosquitto.conf`` and ``mosquitto.acl``, run as shipped by a real mosquitto.

Only the paths and the port are rewritten for the test; every setting the
README's "Broker and Redis requirements" asks for is the file's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from monitor.devtools.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config"
PASSWORD = "change-me"
"""Every user's password in the shipped config/mosquitto.passwd."""

BURST = 10_000
"""Events in the burst: ten times mosquitto's default max_queued_messages."""


def settings(path: Path) -> dict[str, str]:
    """The ``key value`` lines of a mosquitto.conf (comments and blanks skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found[key] = value.strip()
    return found


@contextlib.contextmanager
def shipped_broker(workdir: Path) -> Iterator[int]:
    """mosquitto running config/mosquitto.conf (paths and port rewritten); yields the port."""
    port = free_port()
    for name in ("mosquitto.acl", "mosquitto.passwd"):
        shutil.copy(SHIPPED / name, workdir / name)
    (workdir / "data").mkdir()
    text = (
        (SHIPPED / "mosquitto.conf")
        .read_text()
        .replace("/mosquitto/config/", f"{workdir}/")
        .replace("/mosquitto/data/", f"{workdir}/data/")
        .replace("listener 1883", f"listener {port} 127.0.0.1")
    )
    if os.geteuid() == 0:  # mosquitto would switch to a user that cannot write workdir
        text += "user root\n"
    config = workdir / "mosquitto.conf"
    config.write_text(text)
    process = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "mosquitto refused config/mosquitto.conf"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "mosquitto did not listen within 10 s"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(port: int, user: str, client_id: str, persistent: bool = False) -> aiomqtt.Client:
    """A client logged in as one of the shipped users (``persistent``: clean_session false)."""
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=PASSWORD,
        identifier=client_id,
        clean_session=not persistent,
    )


def test_the_shipped_broker_config_holds_the_required_settings() -> None:
    """Nagle off, a queue far above a burst, persistence: what the README requires."""
    shipped = settings(SHIPPED / "mosquitto.conf")
    assert shipped["set_tcp_nodelay"] == "true"
    assert int(shipped["max_queued_messages"]) >= 100 * BURST
    assert shipped["max_queued_bytes"] == "0"
    assert shipped["persistence"] == "true"
    assert shipped["allow_anonymous"] == "false"


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
async def test_a_subscriber_away_during_a_burst_gets_it_whole_and_the_monitors_user_nothing(
    tmp_path: Path,
) -> None:
    """Through the shipped broker, a persistent subscriber away during a 10,000-event burst
    gets every event when back, while the monitor's own user (as `liqmon watch` would log
    in with the monitor's configuration) gets none."""
    with shipped_broker(tmp_path) as port:
        away = client(port, "operator", "operator-console", persistent=True)
        async with away:
            await away.subscribe("liqmon/events/#", qos=1)
        received = {"operator": 0, "liqmon": 0}

        async def count(name: str, subscriber: aiomqtt.Client) -> None:
            async for _ in subscriber.messages:
                received[name] += 1

        async with (
            client(port, "liqmon", "watch-as-monitor") as monitor_user,
            client(port, "liqmon", "publisher") as publisher,
            asyncio.TaskGroup() as group,
        ):
            await monitor_user.subscribe("liqmon/events/#", qos=1)
            reading = group.create_task(count("liqmon", monitor_user))
            payload = b'{"type": "liquidation"}' + b" " * 300
            # Every PUBACK back: the broker holds the whole burst for the absent session.
            await asyncio.gather(
                *(
                    publisher.publish(f"liqmon/events/acct-{n % 7}/BTC/liquidation", payload, 1)
                    for n in range(BURST)
                )
            )
            async with client(port, "operator", "operator-console", persistent=True) as back:
                catching_up = group.create_task(count("operator", back))
                # On timeout, the assertion below shows how many arrived.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        while received["operator"] < BURST:
                            await asyncio.sleep(0.05)
                catching_up.cancel()
            reading.cancel()
    assert received == {"operator": BURST, "liqmon": 0}
