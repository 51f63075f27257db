"""QoS 1 publish throughput: monitor.bus.client.Publisher against aiomqtt, via a private mosquitto.

Publishes ``--count`` messages of about 600 bytes (an event's size) in batches
of ``--batch`` (the Bus's outbox batch), each batch acknowledged before the
next, as ``Bus._send`` does. ``mosquitto_sub -q 1`` counts what arrives; the
rate is messages over the time from the first write to the last message
received (and, for the publisher alone, to its last PUBACK).

    .venv/bin/python -m benchmarks.publisher                  # both, 100,000 messages
    .venv/bin/python -m benchmarks.publisher --only publisher --count 20000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from monitor.bus.client import Publisher
from monitor.bus.tool_client import make_client
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer, which_or_explain

Batch = Sequence[tuple[str, bytes]]


def messages(count: int, run: str) -> list[tuple[str, bytes]]:
    """``count`` (topic, payload) pairs over 100 accounts, payloads of about 600 bytes."""
    out = []
    for n in range(count):
        payload = (b'{"event_id":"p-%d:1:1","type":"liquidation","pad":"' % n).ljust(598, b"x")
        out.append((f"bench/{run}/acct-{n % 100}/BTCUSDT/liquidation", payload + b'"}'))
    return out


async def with_publisher(settings: MqttSettings, batches: Sequence[Batch]) -> float:
    """Seconds to publish every batch with monitor.bus.client.Publisher, PUBACKs included."""
    async with Publisher.connect(settings, "bench-publisher") as publisher:
        started = time.perf_counter()
        for batch in batches:
            await publisher.publish_batch(batch)
        return time.perf_counter() - started


async def with_aiomqtt(settings: MqttSettings, batches: Sequence[Batch]) -> float:
    """Seconds to publish every batch with aiomqtt, as Bus._send did before the lean Publisher."""
    client = make_client(settings, "bench-aiomqtt", persistent=False)
    client.pending_calls_threshold = settings.max_inflight
    async with client:
        started = time.perf_counter()
        for batch in batches:
            async with asyncio.TaskGroup() as group:
                for topic, payload in batch:
                    group.create_task(client.publish(topic, payload, qos=1))
        return time.perf_counter() - started


def measure(
    name: str,
    publish: Callable[[MqttSettings, Sequence[Batch]], Coroutine[Any, Any, float]],
    broker: MosquittoServer,
    count: int,
    batch: int,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> None:
    """Run one publisher against a fresh mosquitto_sub and print its rates."""
    settings = MqttSettings(url=broker.url)
    every = messages(count, name)
    batches = [every[i : i + batch] for i in range(0, count, batch)]
    subscriber = subprocess.Popen(
        [which_or_explain("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port),
         "-q", "1", "-t", f"bench/{name}/#", "-C", str(count), "-W", "120", "-F", "%t"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.3)  # mosquitto_sub connects and subscribes
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        acked_s = runner.run(publish(settings, batches))
    out, _ = subscriber.communicate(timeout=180)
    received_s = time.perf_counter() - started
    received = out.count(b"\n")
    print(
        f"{name:>9}: {count:,} messages x {len(every[0][1])} B, batches of {batch}: "
        f"PUBACKed in {acked_s:.2f} s ({count / acked_s:,.0f} msg/s), "
        f"{received:,} received in {received_s:.2f} s ({received / received_s:,.0f} msg/s)"
    )


def main() -> None:
    """Parse the arguments, start mosquitto, measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--only", choices=["publisher", "aiomqtt"])
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=20,
        help="mosquitto max_inflight_messages towards the subscriber (default 20, its own)",
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as liqmon run does")
    args = parser.parse_args()
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with (
        tempfile.TemporaryDirectory(prefix="liqmon-pub-") as workdir,
        MosquittoServer(
            Path(workdir), persistence=False, max_inflight_messages=args.broker_inflight
        ) as broker,
    ):
        for name, publish in (("publisher", with_publisher), ("aiomqtt", with_aiomqtt)):
            if args.only in (None, name):
                measure(name, publish, broker, args.count, args.batch, loop_factory)


if __name__ == "__main__":
    main()
