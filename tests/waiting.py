"""Waiting for a condition in an async test: poll it until it holds or a deadline passes.

Tests wait on conditions, never on bare sleeps; this is the one poll loop the in-process
tests share (the end-to-end harness has its own, `harness.wait_for`, for real processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    cond: Callable[[], bool], within: float = 15.0, *, what: str = "the condition"
) -> None:
    """Returns once `cond()` holds; fails the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.02)
