"""Background tasks that are never fire-and-forget: named, supervised, cancelled on shutdown.

`TaskGroup.loop` keeps a long-lived coroutine running (a crash is logged and the coroutine
restarted after a pause); `TaskGroup.spawn` runs a one-shot task whose failure is logged.
`close` cancels whatever is still running. Used by the reconciler, the sync client and main.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("agent.tasks")

RESTART_PAUSE_S = 1.0
CLOSE_TIMEOUT_S = 10.0


class TaskGroup:
    def __init__(self, *, on_done: Callable[[], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_done = on_done

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def loop(
        self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[Any]:
        """Run `factory()` until cancelled; restart it (after a pause) if it crashes or returns."""

        async def supervise() -> None:
            while True:
                try:
                    await factory()
                    log.warning("task returned, restarting", task=name)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task crashed, restarting", task=name)
                await asyncio.sleep(RESTART_PAUSE_S)

        return self.spawn(name, supervise())

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", task=task.get_name(), exc_info=task.exception())
        if self._on_done is not None:
            self._on_done()

    async def close(self, *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Cancels every task and waits for them, bounded: a task that ignores its cancel is
        named in an error line rather than holding the agent's exit forever."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=timeout_s)
        for t in stuck:
            log.error("task did not stop when cancelled", task=t.get_name())
        for t in tasks:
            if t.done() and not t.cancelled():
                with contextlib.suppress(Exception):
                    t.result()
