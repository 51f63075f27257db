"""What a process that is asked to stop is still waiting for.

A cancelled task ends within milliseconds. One that does not has lost its
cancellation (Python 3.11's ``wait_for`` inside redis-py can swallow one) or
ignores it, and a stop that waits on it hangs. Both long-running processes
(the monitor and ``liqmon alerts``) start :func:`report_stuck_tasks` when they
cancel their tasks, so such a hang names its culprit in the log.
"""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("liqmon.stopping")


STOP_REPORTED_AFTER_S = 5.0
"""A stop still waiting for tasks this long logs each of them, with where it waits."""


async def report_stuck_tasks() -> None:
    """Log every task that has not ended :data:`STOP_REPORTED_AFTER_S` after the stop.

    Cancelled tasks end within milliseconds; one that does not has lost its
    cancellation or ignores it, and the await it sits in names the culprit.
    """
    await asyncio.sleep(STOP_REPORTED_AFTER_S)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me and not task.done():
            log.warning(
                "stop_waiting_for_task",
                task=task.get_name(),
                cancelling=task.cancelling(),
                awaiting=_awaiting(task.get_coro()),
            )


def _awaiting(coro: object) -> str:
    """The chain of awaits a coroutine is suspended in, outermost first."""
    where: list[str] = []
    while coro is not None and len(where) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(where)
