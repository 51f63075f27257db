"""How long the event loop stands still while a call runs: what a tick would wait.

The daemon serves its HTTP API, its gauges and its ticks from one event loop,
so anything it computes there must give the loop back as it goes. The
benchmark of the stress endpoints and the tests that hold them to it measure
the same thing, with :func:`timed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def timed(call: Awaitable[T]) -> tuple[float, float, T]:
    """``call``'s wall time, the longest the event loop went without a turn meanwhile
    (both in seconds), and its result."""
    stall = 0.0
    done = asyncio.Event()

    async def turns() -> None:
        nonlocal stall
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0)
            stall = max(stall, time.perf_counter() - before)

    async with asyncio.TaskGroup() as group:
        group.create_task(turns())
        started = time.perf_counter()
        try:
            result = await call
        finally:
            done.set()
    return time.perf_counter() - started, stall, result
