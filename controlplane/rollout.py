"""Rollout: which instances of a workload to create and which to remove, right now.

`plan_workload` is the pure core of the scheduler/rollout controller: it reads one
workload, the fleet's instances and hosts (`controlplane.view`), and returns a
`WorkloadPlan`; the controller writes it (new instances, REMOVED tombstones) and, being
level-triggered, calls it again when anything changes. Placement itself is
`controlplane.scheduler`. Semantics follow a Kubernetes Deployment (DaemonSet for daemons):

- live = desired is not REMOVED; `target` = replicas (service) or the number of READY hosts
  matching the selector (daemon).
- available = ready by the agent's word, desired RUNNING, on a READY host. Removals keep
  available >= target - max_unavailable, except removals that cost no availability
  (not-ready instances that are old or surplus) which are always made.
- created instances are of the current generation, while current-generation live < target
  and live + stopping < target + max_surge. "Stopping" means removed, not yet reported
  STOPPED, on a READY host: max_surge bounds the processes that may run at once, so with
  max_surge 0 a replacement starts only after the instance it replaces has stopped. A
  removed instance on a host that is not READY does not count: its agent is gone, and the
  liveness controller already chose (reschedule-after) to replace it.

`blocked` says what remaining work is waiting for (the budget, instances still stopping);
it is not an error by itself: the stuck detector judges it against the workload deadline.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.scheduler import (
    Unschedulable,
    daemon_hosts,
    matches,
    place,
    place_on,
)
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import Desired, HostState, Kind, Phase

# Among instances otherwise equal, remove the one furthest from serving first.
_PHASE_RANK = {
    Phase.PENDING: 0,
    Phase.FAILED: 1,
    Phase.STOPPED: 1,
    Phase.STOPPING: 1,
    Phase.STARTING: 2,
    Phase.RUNNING: 3,
}


@dataclass(frozen=True)
class WorkloadPlan:
    """What to do for one workload; `empty` when there is nothing to write."""

    create: tuple[str, ...] = ()  # host names, one per new instance of the current generation
    remove: tuple[str, ...] = ()  # instance ids to mark REMOVED
    unschedulable: Unschedulable | None = None
    blocked: str | None = None

    @property
    def empty(self) -> bool:
        return not self.create and not self.remove


def plan_workload(
    workload: WorkloadView,
    instances: Sequence[InstanceView],
    hosts: Sequence[HostView],
) -> WorkloadPlan:
    """Plan one reconcile step for `workload`.

    `instances` is every instance in the fleet, any workload and any desired state: the
    planner filters its own, and capacity needs the others. Output is sorted; applying the
    plan and planning again with nothing else changed gives an empty plan.
    """
    mine = sorted((i for i in instances if i.workload == workload.name), key=lambda i: i.id)
    live = [i for i in mine if i.live]
    if workload.deleting:
        return WorkloadPlan(remove=tuple(i.id for i in live))
    state = _State(workload, instances, mine, {h.name: h for h in hosts})
    if workload.kind is Kind.DAEMON:
        return _plan_daemon(state, hosts)
    return _plan_service(state, hosts)


class _State:
    """The workload's instances as the plan removes them, with the counts rules read."""

    def __init__(
        self,
        workload: WorkloadView,
        fleet: Sequence[InstanceView],
        mine: Sequence[InstanceView],
        hosts: Mapping[str, HostView],
    ) -> None:
        self.workload = workload
        self.fleet = fleet
        self.hosts = hosts
        self.remaining = [i for i in mine if i.live]
        self.removed: list[InstanceView] = []  # by this plan
        self.tombstones = [i for i in mine if not i.live]  # removed by an earlier plan

    def host_ready(self, name: str) -> bool:
        host = self.hosts.get(name)
        return host is not None and host.state is HostState.READY

    def available(self, inst: InstanceView) -> bool:
        return inst.ready and inst.desired is Desired.RUNNING and self.host_ready(inst.host)

    def is_stopping(self, inst: InstanceView) -> bool:
        """Removed (or about to be) but its process may still run on a reachable host."""
        return inst.phase is not Phase.STOPPED and self.host_ready(inst.host)

    def current(self, inst: InstanceView) -> bool:
        return inst.generation == self.workload.generation

    def remove(self, inst: InstanceView) -> None:
        self.remaining.remove(inst)
        self.removed.append(inst)

    def stopping(self, on: Callable[[str], bool] = lambda _host: True) -> int:
        """Removed instances (earlier or now) whose processes may still run, on some hosts."""
        return sum(
            1 for i in (*self.tombstones, *self.removed) if on(i.host) and self.is_stopping(i)
        )

    def per_host(self) -> Counter[str]:
        return Counter(i.host for i in self.remaining)

    def fleet_after(self) -> list[InstanceView]:
        """The fleet as the next pass will see it once the removals are written."""
        gone = {i.id for i in self.removed}
        return [
            dataclasses.replace(i, desired=Desired.REMOVED) if i.id in gone else i
            for i in self.fleet
        ]

    def plan(
        self,
        create: Sequence[str],
        unschedulable: Unschedulable | None,
        blocked: Sequence[str],
    ) -> WorkloadPlan:
        return WorkloadPlan(
            create=tuple(sorted(create)),
            remove=tuple(sorted(i.id for i in self.removed)),
            unschedulable=unschedulable,
            blocked="; ".join(blocked) or None,
        )


def _plan_service(s: _State, hosts: Sequence[HostView]) -> WorkloadPlan:
    w = s.workload
    target, floor = w.replicas, w.replicas - w.max_unavailable
    ready = sum(1 for i in s.remaining if s.available(i))

    def pick(candidates: Callable[[], list[InstanceView]]) -> InstanceView | None:
        # Recomputed after every removal: the host counts that rank candidates change.
        counts = s.per_host()
        found = candidates()
        if not found:
            return None
        return min(
            found,
            key=lambda i: (
                s.host_ready(i.host),  # a dead host's instance frees surge room at once
                -counts[i.host],  # most instances of this workload first: keeps the spread
                _PHASE_RANK[i.phase],
                i.id,
            ),
        )

    # 1. Old instances that are not available cost nothing to remove.
    for inst in [i for i in s.remaining if not s.current(i) and not s.available(i)]:
        s.remove(inst)
    # 2. Surplus current instances (scale down), not available first.
    surplus = sum(1 for i in s.remaining if s.current(i)) - target
    while surplus > 0:
        choice = pick(lambda: [i for i in s.remaining if s.current(i) and not s.available(i)])
        if choice is None:
            break
        s.remove(choice)
        surplus -= 1
    # 3. Available old instances, within the disruption budget.
    while ready - 1 >= floor:
        choice = pick(lambda: [i for i in s.remaining if not s.current(i)])
        if choice is None:
            break
        s.remove(choice)
        ready -= 1
    # 4. Available surplus current instances, within the budget.
    while surplus > 0 and ready - 1 >= floor:
        choice = pick(lambda: [i for i in s.remaining if s.current(i)])
        if choice is None:
            break
        s.remove(choice)
        ready -= 1
        surplus -= 1

    current = sum(1 for i in s.remaining if s.current(i))
    missing = target - current
    stopping = s.stopping()
    room = target + w.max_surge - (len(s.remaining) + stopping)
    want = max(0, min(missing, room))
    placement = place(w, want, hosts, s.fleet_after())

    blocked: list[str] = []
    old_left = sum(1 for i in s.remaining if not s.current(i))
    if old_left or surplus > 0:
        blocked.append(_budget_text(w, old_left, max(surplus, 0), ready, floor, "ready"))
        not_ready = sum(1 for i in s.remaining if s.current(i) and not s.available(i))
        if not_ready:
            blocked.append(f"{not_ready} new {_plural(not_ready, 'instance')} not ready yet")
    if missing > want and stopping:
        blocked.append(_stopping_text(w, stopping))
    return s.plan(placement.hosts, placement.reason, blocked)


def _plan_daemon(s: _State, hosts: Sequence[HostView]) -> WorkloadPlan:
    w = s.workload
    targets = daemon_hosts(w, hosts)
    target_set = set(targets)
    matching = {h.name for h in hosts if matches(h.labels, w.selector)}
    floor = len(targets) - w.max_unavailable

    # Not on a target host: gone from the selector (remove all), or a matching host that is
    # not READY (remove old ones, which cost nothing; keep the current one for its return).
    for inst in list(s.remaining):
        if inst.host in target_set:
            continue
        if inst.host not in matching or not s.current(inst):
            s.remove(inst)
    for name in sorted(matching - target_set):
        _remove_duplicates(s, name)

    for name in targets:
        _remove_duplicates(s, name)
        for inst in [i for i in s.remaining if i.host == name and not s.current(i)]:
            if not s.available(inst):
                s.remove(inst)  # 1. not available: free
            elif any(s.available(o) for o in s.remaining if o.host == name and o is not inst):
                s.remove(inst)  # 2. its host stays available (a new one is ready): free

    def hosts_available() -> int:
        return len({i.host for i in s.remaining if i.host in target_set and s.available(i)})

    # 3. Old instances that are their host's only available one, within the budget.
    available = hosts_available()
    for inst in [i for i in s.remaining if i.host in target_set and not s.current(i)]:
        if available - 1 < floor:
            break
        s.remove(inst)
        available = hosts_available()

    on_targets = [i for i in s.remaining if i.host in target_set]
    has_current = {i.host for i in on_targets if s.current(i)}
    occupied = {i.host for i in on_targets}
    # Hosts with nothing running first: a replacement there needs no surge room.
    lacking = sorted((n for n in targets if n not in has_current), key=lambda n: (n in occupied, n))
    stopping = s.stopping(lambda host: host in target_set)
    room = len(targets) + w.max_surge - (len(on_targets) + stopping)
    want = max(0, min(len(lacking), room))
    by_name = {h.name: h for h in hosts}
    placement = place_on(w, [by_name[n] for n in lacking], s.fleet_after(), limit=want)

    blocked: list[str] = []
    old_left = sum(1 for i in on_targets if not s.current(i))
    if old_left:
        blocked.append(_budget_text(w, old_left, 0, available, floor, "hosts available"))
        not_ready = sum(1 for i in on_targets if s.current(i) and not s.available(i))
        if not_ready:
            blocked.append(f"{not_ready} new {_plural(not_ready, 'instance')} not ready yet")
    if len(lacking) > want and stopping:
        blocked.append(_stopping_text(w, stopping))
    return s.plan(placement.hosts, placement.reason, blocked)


def _remove_duplicates(s: _State, host: str) -> None:
    """A daemon runs one current instance per host: keep the most advanced, drop the rest."""
    current = [i for i in s.remaining if i.host == host and s.current(i)]
    current.sort(key=lambda i: (not s.available(i), -_PHASE_RANK[i.phase], i.id))
    for extra in current[1:]:
        s.remove(extra)


def _budget_text(w: WorkloadView, old: int, surplus: int, ready: int, floor: int, unit: str) -> str:
    if w.max_unavailable == 0 and w.max_surge == 0 and old:
        return "max_unavailable and max_surge are both 0: no instance can be replaced"
    left = []
    if old:
        left.append(f"{old} old {_plural(old, 'instance')} to replace")
    if surplus:
        left.append(f"{surplus} surplus {_plural(surplus, 'instance')} to remove")
    return (
        f"waiting on max_unavailable={w.max_unavailable}: {ready} {unit}, "
        f"at least {max(floor, 0)} must stay so; " + ", ".join(left)
    )


def _stopping_text(w: WorkloadView, stopping: int) -> str:
    return (
        f"waiting for {stopping} removed {_plural(stopping, 'instance')} to stop "
        f"(max_surge={w.max_surge})"
    )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
