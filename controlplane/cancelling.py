"""A cancelled task that must end even when its cancel was swallowed on the way.

On Python 3.11, `asyncio.wait_for` (which asyncpg's pool acquire and connection use for their
timeouts) can turn a cancel that lands as its timeout fires into a TimeoutError: the task's
CancelledError is lost, but the task still counts the request (`Task.cancelling()`). A loop
that catches errors and goes on (a controller retrying a pass the database failed, the
cache retrying a read) then never ends, and whoever waits for it on cancel (a leadership
term ending, the control plane stopping) waits forever: a Postgres freeze once left the
leader holding its lock with no controller running. Such loops call `end_if_cancelled`
after each error they swallow, and where they wait for work.
"""

from __future__ import annotations

import asyncio


def end_if_cancelled() -> None:
    """Raises CancelledError if the current task has a cancel request it did not see."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
