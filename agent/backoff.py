"""Reconnect back-off to the control plane, pure: how long the sync client waits, and when
its count of failed attempts starts over.

`agent.sync` is the one caller. Process restarts have a back-off of their own, the kubelet's,
in `agent.restart`. Reconnects use capped exponential back-off with jitter, so that a fleet of
agents that lost the same control-plane replica does not reconnect in lock-step; and the count
of attempts only starts over after a stream that stayed up a while (--reconnect-reset-after),
so a replica that accepts streams and drops them at once is not hammered at the base rate.
"""

from __future__ import annotations

from collections.abc import Callable


def reconnect_delay(
    attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float]
) -> float:
    """Wait before reconnect attempt `attempt` (0-based): half fixed, half random ("equal jitter").

    The fixed half keeps a dead control plane from being hammered; the random half spreads a
    fleet's reconnects out.
    """
    ceiling = min(max_s, base_s * (1 << min(attempt, 30)))
    return ceiling / 2 + rng() * ceiling / 2


class Reconnects:
    """The waits between one host's reconnect attempts (`agent.sync` keeps one)."""

    def __init__(
        self, *, base_s: float, max_s: float, reset_after_s: float, rng: Callable[[], float]
    ) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._reset_after_s = reset_after_s
        self._rng = rng
        self._attempt = 0  # reconnects since the last stream that stayed up

    def delay_after(self, stream_up_s: float | None) -> float:
        """The wait after an attempt whose stream was open `stream_up_s` (None: never opened).

        Only a stream that stayed up `reset_after_s` proves the control plane healthy enough
        to retry at the base rate again; a shorter one counts as one more failed attempt.
        """
        if stream_up_s is not None and stream_up_s >= self._reset_after_s:
            self._attempt = 0
        delay = reconnect_delay(
            self._attempt, base_s=self._base_s, max_s=self._max_s, rng=self._rng
        )
        self._attempt += 1
        return delay
