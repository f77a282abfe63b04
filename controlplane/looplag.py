"""How late the event loop runs what is due: the control plane's saturation signal.

Every replica is one asyncio event loop on one core. When it has more work than the core can do
(too many agent streams, a burst of changes, a neighbour taking the CPU), every callback waits
its turn: a reconcile, a push to an agent and an operator's call are all late by about the same
amount. `watch` sleeps for a fixed interval, over and over, and records how much later than
asked it woke (`keel_event_loop_lag_seconds`); the KeelControlPlaneSaturated alert and
docs/scaling.md read it as "this replica needs more cores, or fewer agents".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def watch(
    *,
    interval_s: float,
    observe: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Observes the loop's lateness every `interval_s`; returns only when cancelled."""
    while True:
        asked = clock() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, clock() - asked))
