"""CPU per message received: aiomqtt against monitor.bus.client.Subscriber, on uvloop.

A driver process publishes ``--count`` QoS 0 mark ticks over 500 symbols at
a fixed rate (``benchmarks/rawmqtt.py``, a blocking socket) through a private
mosquitto (``set_tcp_nodelay true``, as ``bench.py`` runs it); this process
receives them as the daemon's intake does (subscribed at QoS 1, a persistent
session, a coroutine called per message that does nothing) and reports its
own CPU time (user + system, so the syscalls count) from the driver's start
to the last message, divided by the messages. The driver runs in its own
process, so none of its CPU is counted. ``floor`` is a bare protocol that
parses each read in the event loop's callback and calls nothing: what the
loop, the syscalls and the parsing cost, below any client with a coroutine
per message.

    .venv/bin/python -m benchmarks.receive                       # 1,000/s and 5,000/s
    .venv/bin/python -m benchmarks.receive --rate 10000 --count 20000 --only subscriber
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.rawmqtt import Publisher as RawPublisher
from monitor.bus.client import Subscriber
from monitor.bus.protocol import SubscribeSession, connect_packet, subscribe_packet
from monitor.bus.tool_client import make_client
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the driver runs as ``python -m benchmarks.receive`` from there."""

TOPIC_FILTER = "bench/prices/+/mark"
SYMBOLS = 500


def drive(port: int, rate: float, count: int) -> None:
    """Publish ``count`` QoS 0 ticks at ``rate`` per second, each at its due time."""
    publisher = RawPublisher("127.0.0.1", port, f"receive-driver-{os.getpid()}")
    packets = [
        RawPublisher.packet(
            f"bench/prices/S{n % SYMBOLS:03d}USDT/mark", b'{"price":"64000.5","ts":%d}' % n
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    for n, packet in enumerate(packets):
        ahead = started + n / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        publisher.send(packet)
    publisher.close()


class Counter:
    """Counts messages; ``done`` is set when the expected number arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.done = asyncio.Event()

    async def on_message(self, topic: str, payload: bytes) -> None:
        """The intake's signature; does nothing but count."""
        self.received += 1
        if self.received == self.expected:
            self.done.set()


async def with_aiomqtt(settings: MqttSettings, counter: Counter, ready: asyncio.Event) -> None:
    """Receive as Bus._consume did with aiomqtt."""
    async with make_client(settings, "receive-aiomqtt", persistent=True) as client:
        await client.subscribe(TOPIC_FILTER, qos=1)
        ready.set()
        async for message in client.messages:
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            await counter.on_message(message.topic.value, raw)


async def with_subscriber(settings: MqttSettings, counter: Counter, ready: asyncio.Event) -> None:
    """Receive as Bus does with monitor.bus.client.Subscriber."""
    async with Subscriber.connect(settings, "receive-subscriber", [TOPIC_FILTER]) as subscriber:
        ready.set()
        await subscriber.run(counter.on_message)


class Floor(asyncio.Protocol):
    """Parses in ``data_received`` and counts: no coroutine per message, no task to wake."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.session = SubscribeSession()
        self.subscribed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        """Count the messages; the first read holds the CONNACK, then comes the SUBACK."""
        if not self.subscribed.done():
            data = data[4:]
        for _ in self.session.receive(data):
            self.counter.received += 1
        if self.counter.received >= self.counter.expected:
            self.counter.done.set()
        if self.session.granted and not self.subscribed.done():
            self.subscribed.set_result(None)


async def with_floor(settings: MqttSettings, counter: Counter, ready: asyncio.Event) -> None:
    """The floor: what the event loop and the parsing cost without any handler."""
    transport, floor = await asyncio.get_running_loop().create_connection(
        lambda: Floor(counter), settings.host, settings.port
    )
    try:
        transport.write(connect_packet("receive-floor", 30) + subscribe_packet(1, [TOPIC_FILTER]))
        await floor.subscribed
        ready.set()
        await asyncio.Event().wait()
    finally:
        transport.close()


Receiver = Callable[[MqttSettings, Counter, asyncio.Event], Coroutine[Any, Any, None]]


async def measure(receiver: Receiver, port: int, rate: float, count: int) -> tuple[float, int]:
    """(CPU µs per message received, messages received) of one run."""
    counter = Counter(count)
    ready = asyncio.Event()
    receiving = asyncio.create_task(
        receiver(MqttSettings(url=f"mqtt://127.0.0.1:{port}"), counter, ready)
    )
    await ready.wait()
    await asyncio.sleep(0.2)  # the SUBACK is in, the connection is quiet
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.receive", "--drive", str(port), "--rate", str(rate),
        "--count", str(count), cwd=ROOT,
    )  # fmt: skip
    cpu_before = time.process_time()
    try:
        # QoS 0: a tick the broker could not deliver is not waited for.
        async with asyncio.timeout(count / rate + 10):
            await counter.done.wait()
    except TimeoutError:
        pass
    cpu_s = time.process_time() - cpu_before
    receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)
    await driver.wait()
    return cpu_s / max(counter.received, 1) * 1e6, counter.received


def main() -> None:
    """Parse the arguments, start mosquitto, measure each receiver at each rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="ticks/s (default 1000, 5000)")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--only", choices=["aiomqtt", "subscriber", "floor"])
    parser.add_argument("--drive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = args.rate or [1000.0, 5000.0]
    if args.drive:
        drive(args.drive, rates[0], args.count)
        return
    receivers: dict[str, Receiver] = {
        "aiomqtt": with_aiomqtt,
        "subscriber": with_subscriber,
        "floor": with_floor,
    }
    with (
        tempfile.TemporaryDirectory(prefix="liqmon-receive-") as workdir,
        MosquittoServer(
            Path(workdir), persistence=False, extra_config=["set_tcp_nodelay true"]
        ) as broker,
    ):
        for rate in rates:
            for name, receiver in receivers.items():
                if args.only in (None, name):
                    us, received = uvloop.run(measure(receiver, broker.port, rate, args.count))
                    print(
                        f"{name:>10} at {rate:>6,.0f}/s: {us:6.1f} µs of CPU per message "
                        f"({received:,}/{args.count:,} received)"
                    )


if __name__ == "__main__":
    main()
