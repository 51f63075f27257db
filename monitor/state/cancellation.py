"""A guard for cancellations that Python 3.11 can lose inside redis-py.

With ``socket_timeout`` set, redis-py sends each command through
``asyncio.wait_for(send, socket_timeout)``. On Python 3.11, ``wait_for``
returns the result instead of raising when the task is cancelled just as the
send completes (fixed in 3.12), so the cancellation is silently lost: a loop
around Redis calls then never ends, and a ``TaskGroup`` waiting for it hangs
(seen as a daemon that does not stop). The task still says it is being
cancelled, so a loop that calls :func:`raise_if_cancelling` once per round
stops as it should.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop (and the request was lost)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
