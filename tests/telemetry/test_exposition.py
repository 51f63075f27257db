"""/metrics rendered in turns: the same text as in one go, the event loop given back between
metric families."""

from __future__ import annotations

import asyncio

from monitor.telemetry.metrics import Metrics, render_in_turns


async def test_rendered_in_turns_is_the_text_rendered_in_one_go() -> None:
    metrics = Metrics()
    for n in range(500):
        metrics.ticks_received.labels(f"S{n:03d}USDT", "mark", "mqtt").inc(n)
        metrics.ticks_evaluated.labels(f"S{n:03d}USDT").inc()
    metrics.tick_seconds.observe(0.0004)
    assert metrics.render() == await render_in_turns(metrics.registry)


async def test_ticks_run_between_the_families() -> None:
    """Another task gets the loop while /metrics renders: it is not held for the whole."""
    metrics = Metrics()
    turns = 0

    async def ticking() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticking())
    await asyncio.sleep(0)
    before = turns
    await render_in_turns(metrics.registry)
    task.cancel()
    families = len(list(metrics.registry.collect()))
    assert turns - before >= families - 1
