"""Read-only views of the fleet that the control plane's planners decide from.

The store (`controlplane.store`) loads hosts, workloads and instances as rows, which
`controlplane.rowviews` turns into these frozen dataclasses; `controlplane.scheduler` (placement)
and `controlplane.rollout` (what to create and remove) read them and return plans. Nothing
here does I/O or reads a clock, and nothing here imports the store (`make test` checks it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from datetime import datetime

from keel.model import Desired, HostState, Kind, Phase, Resources, holds_resources


@dataclass(frozen=True, slots=True)
class HostView:
    """A host as the planners see it: `schedulable` is false while it is cordoned; `drained`
    once a drain has moved its services off and stops its daemons (until it is uncordoned)."""

    name: str
    labels: Mapping[str, str]
    capacity: Resources
    state: HostState
    schedulable: bool
    drained: bool = False


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One placement of one workload generation on one host.

    `ready` is the agent's word: observed RUNNING, health check passing and past `min_ready`.
    The planners further treat an instance as unavailable when its host is not READY or its
    desired state is not RUNNING (see `controlplane.rollout`).
    """

    id: str
    workload: str
    generation: int
    host: str
    desired: Desired
    resources: Resources
    phase: Phase
    ready: bool
    # A drain's replacement names the instance it replaces (make-before-break): the two count
    # as one replica until the one replaced is gone.
    replaces: str = ""
    # Ready, but a new revision's instance up for less than its min_ready while old instances
    # remain: a rollout does not count it available yet (`controlplane.settling`).
    settling: bool = False

    @property
    def live(self) -> bool:
        """Still wanted on its host (desired RUNNING or STOPPED, not a removal tombstone)."""
        return self.desired is not Desired.REMOVED

    @property
    def holds_resources(self) -> bool:
        """Counts against its host's capacity (`keel.model.holds_resources`)."""
        return holds_resources(self.desired, self.phase)


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """A workload's current generation and the knobs placement and rollout read."""

    name: str
    kind: Kind
    generation: int
    replicas: int
    max_unavailable: int
    max_surge: int
    selector: Mapping[str, str]
    resources: Resources
    deleting: bool
    # Earlier generations whose spec is the current one (a rollback to it): their instances
    # are current too.
    spec_generations: frozenset[int] = frozenset()
    # A paused rollout holds where it is: old instances are neither removed nor replaced.
    paused: bool = False
    # Canaries the current revision runs beside the old instances while it waits to be
    # promoted (0: not a canary rollout, or promoted).
    canary: int = 0

    def is_current(self, generation: int) -> bool:
        """Whether an instance of `generation` runs the current spec."""
        return generation == self.generation or generation in self.spec_generations


@dataclass(frozen=True, slots=True)
class StuckState:
    """A stuck verdict as recorded on an instance or a workload (`controlplane.stuck`)."""

    reason: str
    since: datetime
    message: str


class ReadyHosts(Set[str]):
    """The names of the READY hosts, looked up in the host map when asked rather than copied
    from it: the map is the whole fleet's, and a plan asks only about the hosts it touches."""

    def __init__(self, hosts: Mapping[str, HostView]) -> None:
        self._hosts = hosts

    def __contains__(self, name: object) -> bool:
        host = self._hosts.get(name) if isinstance(name, str) else None
        return host is not None and host.state is HostState.READY

    def __iter__(self) -> Iterator[str]:
        return (name for name, h in self._hosts.items() if h.state is HostState.READY)

    def __len__(self) -> int:
        return sum(1 for _ in self)
