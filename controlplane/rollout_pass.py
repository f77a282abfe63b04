"""One pass of the rollout planner: the workload's instances as the pass removes them, and the
order it removes them in.

`controlplane.rollout` plans a pass in steps (old instances that cost nothing, surplus, old
ones within the disruption budget, then what to create); each step removes through a `Remover`
from one `PassState`, which answers the questions the steps ask of an instance: is it current
(`WorkloadView.is_current`), held (current, or any while the rollout is paused), counted as a
replica (held and not being replaced by a drain), replaceable by the rollout (old, and while
canaries await promotion not one a drain replaces), available (`controlplane.disruption`,
settling included). It also gives the instances and every host's usage as the next pass will
see them once the removals are written, which is what the creations are counted against.

Pure, like its neighbours: `controlplane.rollout` (the steps and the plan),
`controlplane.disruption` (the budget), `controlplane.scheduler` (placement, `HostUsage`).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set, ValuesView

from controlplane.disruption import is_available
from controlplane.scheduler import NO_USAGE, HostUsage
from controlplane.view import InstanceView, WorkloadView
from keel.model import Desired, Phase

# Among instances otherwise equal, remove the one furthest from serving first.
PHASE_RANK = {
    Phase.PENDING: 0,
    Phase.FAILED: 1,
    Phase.STOPPED: 1,
    Phase.STOPPING: 1,
    Phase.STARTING: 2,
    Phase.RUNNING: 3,
}


class UsageAfter(Mapping[str, HostUsage]):
    """Every host's usage with some hosts' replaced (those of the plan's removals)."""

    def __init__(self, base: Mapping[str, HostUsage], changed: Mapping[str, HostUsage]) -> None:
        self._base = base
        self._changed = changed

    def __getitem__(self, name: str) -> HostUsage:
        return self._changed[name] if name in self._changed else self._base[name]

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._base) | set(self._changed))

    def __len__(self) -> int:
        return len(set(self._base) | set(self._changed))


class PassState:
    """The workload's instances as the pass removes them, with the rules the steps count by."""

    def __init__(
        self,
        workload: WorkloadView,
        usage: Mapping[str, HostUsage],
        mine: Sequence[InstanceView],
        ready: Set[str],
        max_changes: int,
    ) -> None:
        self.workload = workload
        self.max_changes = max_changes
        self.usage = usage
        self.ready = ready  # names of READY hosts
        # By id, in id order: removals are O(1), so a scale-down of thousands stays linear.
        self._remaining = {i.id: i for i in mine if i.live}
        self.removed: list[InstanceView] = []  # by this plan
        self.tombstones = [i for i in mine if not i.live]  # removed by an earlier plan
        # Live instances a drain is replacing (make-before-break): each counts as one replica
        # with its replacement, which is the one counted; the drain stops it.
        self.leaving = {i.replaces for i in mine if i.live and i.replaces}
        self.per_host = Counter(i.host for i in self._remaining.values())  # live, per host

    @property
    def remaining(self) -> ValuesView[InstanceView]:
        """Live instances not removed by this plan."""
        return self._remaining.values()

    def host_ready(self, name: str) -> bool:
        return name in self.ready

    def available(self, inst: InstanceView) -> bool:
        return is_available(inst, self.ready)

    def current(self, inst: InstanceView) -> bool:
        return self.workload.is_current(inst.generation)

    def replaceable(self, inst: InstanceView) -> bool:
        """An old instance the rollout replaces; while canaries await promotion, not one a
        drain is replacing (the drain stops it once its replacement is ready)."""
        return not self.current(inst) and not (self.workload.canary and inst.id in self.leaving)

    def held(self, inst: InstanceView) -> bool:
        """Kept for its spec: current, or any instance while the rollout is paused (it holds
        where it is: nothing is removed or replaced for being old)."""
        return self.workload.paused or self.current(inst)

    def counted(self, inst: InstanceView) -> bool:
        """Held (current, or any while paused) and not being replaced by a drain: a replica."""
        return self.held(inst) and inst.id not in self.leaving

    def remove(self, inst: InstanceView) -> None:
        del self._remaining[inst.id]
        self.per_host[inst.host] -= 1
        self.removed.append(inst)

    def after(self) -> list[InstanceView]:
        """The workload's instances as the next pass will see them, removals written."""
        gone = [dataclasses.replace(i, desired=Desired.REMOVED) for i in self.removed]
        return [*self.remaining, *gone, *self.tombstones]

    def usage_after(self) -> Mapping[str, HostUsage]:
        """Every host's usage as the next pass will see it once the removals are written (a
        removed instance already reported STOPPED holds nothing from then on)."""
        changed: dict[str, HostUsage] = {}
        for inst in self.removed:
            before = changed.get(inst.host) or self.usage.get(inst.host, NO_USAGE)
            gone = dataclasses.replace(inst, desired=Desired.REMOVED)
            changed[inst.host] = before.minus(inst).plus(gone)
        return UsageAfter(self.usage, changed) if changed else self.usage


class Remover:
    """Removes candidates one at a time, best first: on a host that is not READY (its
    instance frees surge room at once), then on the host with the most live instances of the
    workload (keeps the spread), then the furthest from serving, then by id.

    Only the host of the instance just removed changes rank, so a heap of hosts (each with its
    candidates in order) gives each removal in O(log hosts), not a scan of every instance.
    """

    def __init__(self, s: PassState, candidates: Iterable[InstanceView]) -> None:
        self._s = s
        self._by_host: dict[str, list[InstanceView]] = {}
        # Worst first, so each host's best candidate is at the end of its list.
        for inst in sorted(candidates, key=candidate_order, reverse=True):
            self._by_host.setdefault(inst.host, []).append(inst)
        self._heap = [self._rank(host) for host in self._by_host]
        heapq.heapify(self._heap)

    def _rank(self, host: str) -> tuple[bool, int, int, str, str]:
        rank, inst_id = candidate_order(self._by_host[host][-1])
        return (self._s.host_ready(host), -self._s.per_host[host], rank, inst_id, host)

    def remove_next(self) -> InstanceView | None:
        """Removes the best candidate left (from the plan's state) and returns it."""
        if not self._heap:
            return None
        host = heapq.heappop(self._heap)[-1]
        chosen = self._by_host[host].pop()
        self._s.remove(chosen)
        if self._by_host[host]:
            heapq.heappush(self._heap, self._rank(host))
        return chosen


def candidate_order(inst: InstanceView) -> tuple[int, str]:
    return (PHASE_RANK[inst.phase], inst.id)
