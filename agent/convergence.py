"""Convergence bookkeeping on the agent: which desired changes are not yet matched, since when.

A desired change is an assignment whose desired state differs from what the agent held for
that instance; its kind is `keel.model.change_of` (create, stop, remove). A full set that
repeats what the agent already has is no change. The outcome handler (`agent.outcome`) tells
the tracker about changes (`changed`) and, after every pass, which desired instances match
(`observe`, with `keel.model.converged`; a tombstone matches once its removal is confirmed,
i.e. it is gone from the desired set). `observe` returns the changes that converged, with
their latency, for `keel_agent_convergence_seconds`. Pure: the clock is passed in.

The backlog is level-based: a desired instance that stops matching without a new change (a
crash) counts as unconverged from the moment it was first seen so, without feeding the
histogram, which measures changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keel.model import Change, Desired, change_of

CHANGES = tuple(Change)


@dataclass(frozen=True)
class Converged:
    instance_id: str
    change: Change
    seconds: float


class ConvergenceTracker:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[Change, float]] = {}  # instance -> (change, received at)
        self._since: dict[str, float] = {}  # unconverged instance -> since when

    def changed(self, instance_id: str, desired: Desired, *, at: float) -> None:
        """A new desired state for `instance_id` arrived at `at` (it replaces one pending)."""
        self._pending[instance_id] = (change_of(desired), at)
        self._since.setdefault(instance_id, at)

    def observe(self, matching: Mapping[str, bool], *, now: float) -> list[Converged]:
        """`matching`: every desired instance -> does actual match it now."""
        done: list[Converged] = []
        for iid in list(self._pending):
            change, at = self._pending[iid]
            gone = iid not in matching
            # A tombstone converges by going away (`keel.model.converged`): once confirmed, it
            # has left the desired set.
            if matching.get(iid, False) or (gone and change is Change.REMOVE):
                done.append(Converged(iid, change, max(0.0, now - at)))
                del self._pending[iid]
            elif gone:
                del self._pending[iid]  # dropped from a full set: no longer ours to measure
        for iid, ok in matching.items():
            if ok:
                self._since.pop(iid, None)
            else:
                self._since.setdefault(iid, now)
        for iid in [i for i in self._since if i not in matching]:
            del self._since[iid]
        return done

    @property
    def unconverged(self) -> int:
        return len(self._since)

    def oldest_age(self, now: float) -> float:
        """Seconds the longest-unconverged instance has been so (0 when all match)."""
        return max(0.0, now - min(self._since.values())) if self._since else 0.0
