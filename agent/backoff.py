"""Back-off arithmetic, pure: crash restarts (the planner, the executor) and reconnects (sync).

Crash back-off follows the kubelet: the first restart waits `base`, each further crash doubles
the wait up to `max`, and a process that stayed up at least `reset` starts again from `base`.
Reconnects use capped exponential back-off with jitter, so that a fleet of agents that lost the
same control-plane replica does not reconnect in lock-step.
"""

from __future__ import annotations

from collections.abc import Callable


def next_crash_delay(
    previous_s: float, uptime_s: float, *, base_s: float, max_s: float, reset_s: float
) -> float:
    """The wait before the restart that follows a crash after `uptime_s` of running.

    `previous_s` is the wait used before the last restart (0 = none yet).
    """
    if previous_s <= 0 or uptime_s >= reset_s:
        return min(base_s, max_s)
    return min(previous_s * 2, max_s)


def reconnect_delay(
    attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float]
) -> float:
    """Wait before reconnect attempt `attempt` (0-based): half fixed, half random ("equal jitter").

    The fixed half keeps a dead control plane from being hammered; the random half spreads a
    fleet's reconnects out.
    """
    ceiling = min(max_s, base_s * (1 << min(attempt, 30)))
    return ceiling / 2 + rng() * ceiling / 2
