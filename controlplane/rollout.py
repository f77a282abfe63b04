"""Rollout: which instances of a workload to create and which to remove, right now.

`plan_workload` is the pure core of the scheduler/rollout controller: it reads one
workload, its own instances, the hosts (`controlplane.view`) and what every host's instances
hold (`scheduler.HostUsage`, kept per host by the leader's cache), and returns a
`WorkloadPlan`, so a pass costs what the workload has, not what the fleet has; the
controller writes it (new instances, REMOVED tombstones) and, being level-triggered, calls
it again when anything changes. Placement itself is
`controlplane.scheduler`; the pass's working state (which instances count as replicas, which
the rollout replaces, the order removals are made in, usage once they are written) is
`controlplane.rollout_pass`. Semantics follow a Kubernetes Deployment (DaemonSet for daemons):

- live = desired is not REMOVED; `target` = replicas (service) or the number of READY hosts
  matching the selector (daemon).
- removals that cost no availability (not-ready instances that are old or surplus) are
  always made; the others only while the disruption budget (`controlplane.disruption`) says
  an instance may go down, so available >= target - max_unavailable.
- created instances are of the current generation, while current-generation live < target
  and the budget says an instance may start (target + max_surge bounds the processes that
  may run at once, removed ones still stopping included: with max_surge 0 a replacement
  starts only after the instance it replaces has stopped).

- canaries: while the current revision awaits promotion (`WorkloadView.canary` > 0), its old
  instances are the replicas and are kept (none is removed or replaced for being old; only a
  scale-down removes those past `replicas`), and `canary` current instances run beside them.
  They come on top of the surge: the budget's ceiling is replicas + canary + max_surge
  (`controlplane.disruption`), so the canaries start at once, a failing one is replaced like
  any instance, and max_surge still bounds what else may start (a canary's replacement while
  the failed one stops). Once promoted (canary 0) the rollout goes on as usual and the
  canaries count as updated replicas.

`blocked` says what remaining work is waiting for (the budget, instances still stopping);
it is not an error by itself: the stuck detector judges it against the workload deadline.
Paused (`keelctl rollout pause`): the rollout holds where it is. No instance is removed or
replaced for being old, and old ones count as replicas, so nothing starts in their place. A
scale change still works, as for a paused Deployment: a scale-up starts current instances
(never an old spec); a scale-down removes what is beyond replicas, those not available first
(they cost nothing), then current ones before old ones, so a pause never moves the rollout on
(a surge in flight beyond replicas is given back the same way; an available old instance goes
only once more of them than replicas are left). Removals not for age (a daemon host leaving
the selector, a duplicate) go on.
While paused, canaries awaiting promotion are held like the rest.

Canaries awaiting promotion are not `blocked`: the stuck detector judges that wait against
`--canary-waiting-after`.

One pass creates and removes at most `MAX_CHANGES_PER_PASS` instances each (`more` says
there is work left for the next pass), so one transaction never grows with the replica count
and a 100,000-replica scale-up does not hold the one controller worker while other
workloads' fresh changes wait. A pass whose removals were cut short creates nothing: its
surge room was counted with every removal written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.disruption import Budget, daemon_budget, service_budget
from controlplane.rollout_pass import PHASE_RANK, PassState, Remover
from controlplane.scheduler import (
    HostUsage,
    Unschedulable,
    daemon_hosts,
    matches,
    place,
    place_on,
)
from controlplane.view import HostView, InstanceView, ReadyHosts, WorkloadView
from keel.model import Kind

MAX_CHANGES_PER_PASS = 1000


@dataclass(frozen=True)
class WorkloadPlan:
    """What to do for one workload; `empty` when there is nothing to write."""

    create: tuple[str, ...] = ()  # host names, one per new instance of the current generation
    remove: tuple[str, ...] = ()  # instance ids to mark REMOVED
    unschedulable: Unschedulable | None = None
    blocked: str | None = None
    more: bool = False  # cut at the per-pass bound: plan again once this is written

    @property
    def empty(self) -> bool:
        return not self.create and not self.remove


def plan_workload(
    workload: WorkloadView,
    instances: Iterable[InstanceView],
    hosts: Mapping[str, HostView],
    usage: Mapping[str, HostUsage],
    *,
    max_changes: int = MAX_CHANGES_PER_PASS,
) -> WorkloadPlan:
    """Plan one reconcile step for `workload`.

    `instances` are the workload's own, in any desired state (another workload's are
    ignored); `hosts` is every host by name; `usage` is what every host's instances hold, this
    workload's included (capacity is shared). Hosts are scanned only to place: a pass with
    nothing to create costs what the workload has. Output is sorted; applying the plan and
    planning again with nothing else changed gives an empty plan, unless `more` says the pass
    stopped at `max_changes` creations or removals.
    """
    mine = sorted((i for i in instances if i.workload == workload.name), key=lambda i: i.id)
    live = [i for i in mine if i.live]
    if workload.deleting:
        plan = WorkloadPlan(remove=tuple(i.id for i in live))
    else:
        state = PassState(workload, usage, mine, ReadyHosts(hosts), max_changes)
        if workload.kind is Kind.DAEMON:
            plan = _plan_daemon(state, hosts)
        else:
            plan = _plan_service(state, hosts)
    if len(plan.remove) > max_changes:
        # Any subset of the removals keeps the budget (fewer go down); creating anything now
        # could pass max_surge, since the room was counted with all of them written.
        return dataclasses.replace(
            plan,
            create=(),
            remove=plan.remove[:max_changes],
            unschedulable=None,
            blocked=None,
            more=True,
        )
    return plan


def _outcome(
    s: PassState,
    create: Sequence[str],
    unschedulable: Unschedulable | None,
    blocked: Sequence[str],
    *,
    more: bool,
) -> WorkloadPlan:
    """The pass's plan: what to create, and what `s` removed."""
    return WorkloadPlan(
        create=tuple(sorted(create)),
        remove=tuple(sorted(i.id for i in s.removed)),
        unschedulable=unschedulable,
        blocked="; ".join(blocked) or None,
        more=more,
    )


def _plan_service(s: PassState, hosts: Mapping[str, HostView]) -> WorkloadPlan:
    w = s.workload
    target = w.replicas
    budget = service_budget(w, s.remaining, s.ready)
    old_may_go, wanted = _canary_split(s, target)
    if w.paused:
        # Held where it is: nothing goes for being old, waiting canaries already running stay,
        # and none starts (a scale-up still does).
        running = sum(1 for i in s.remaining if s.counted(i))
        old_may_go, wanted = 0, max(target, min(target + (w.canary if target else 0), running))

    # 1. Old instances that are not available cost nothing to remove (none while paused).
    for group in _old_groups(s, available=False):
        remover = Remover(s, group)
        while old_may_go > 0 and remover.remove_next():
            old_may_go -= 1
    # 2. Surplus instances (scale down), not available first (while paused the old ones
    # count too, and go last).
    surplus = sum(1 for i in s.remaining if s.counted(i)) - wanted
    for group in _newest_first(s, [i for i in s.remaining if s.counted(i)], available=False):
        remover = Remover(s, group)
        while surplus > 0 and remover.remove_next():
            surplus -= 1
    # 3. Available old instances, within the disruption budget (the old ones left are all
    # available: step 1 took the others; none while paused).
    for group in _old_groups(s, available=True):
        remover = Remover(s, group)
        while old_may_go > 0 and budget.may_go_down and remover.remove_next():
            budget = budget.took_down()
            old_may_go -= 1
    # 4. Available surplus instances, within the budget.
    for group in _newest_first(s, [i for i in s.remaining if s.counted(i)], available=True):
        remover = Remover(s, group)
        while surplus > 0 and budget.may_go_down and remover.remove_next():
            budget = budget.took_down()
            surplus -= 1

    current = sum(1 for i in s.remaining if s.counted(i))
    missing = wanted - current
    after = service_budget(w, s.after(), s.ready)
    room = max(0, min(missing, after.may_start))
    want = min(room, s.max_changes)
    placement = place(w, want, hosts.values(), s.remaining, s.usage_after())

    blocked: list[str] = []
    old = sum(1 for i in s.remaining if not s.current(i))
    if w.paused and old:
        blocked.append(_paused_text(old))
    old_left = 0 if w.paused else min(old_may_go, old)
    if old_left or surplus > 0:
        blocked.append(_budget_text(budget, old_left, max(surplus, 0), "ready"))
        not_ready = sum(1 for i in s.remaining if s.current(i) and not s.available(i))
        if not_ready:
            blocked.append(f"{not_ready} new {_plural(not_ready, 'instance')} not ready yet")
    if missing > room and after.stopping:
        blocked.append(after.why_no_start())
    return _outcome(
        s, placement.hosts, placement.reason, blocked, more=_more(want, room, placement.unplaced)
    )


def _newest_first(
    s: PassState, candidates: Sequence[InstanceView], *, available: bool
) -> list[list[InstanceView]]:
    """The surplus candidates that are (or are not) available, in the groups they are removed
    in: while paused the current ones before the old ones (see the module docstring)."""
    chosen = [i for i in candidates if s.available(i) == available]
    if not s.workload.paused:
        return [chosen]
    return [[i for i in chosen if s.current(i)], [i for i in chosen if not s.current(i)]]


def _old_groups(s: PassState, *, available: bool) -> list[list[InstanceView]]:
    """The old instances that are (or are not) available, in the groups they go in. While
    canaries wait, the old instances past the replicas go newest generation first: a canary
    that this revision superseded before it was promoted goes before any instance of the spec
    it ran beside."""
    old = [i for i in s.remaining if s.replaceable(i) and s.available(i) == available]
    if not s.workload.canary:
        return [old]
    generations = sorted({i.generation for i in old}, reverse=True)
    return [[i for i in old if i.generation == g] for g in generations]


def _canary_split(s: PassState, target: int) -> tuple[int, int]:
    """How many old instances the rollout may remove, and how many current ones it wants.

    Ordinarily every old instance goes and `target` current ones are wanted. While canaries
    await promotion the old instances (those a drain is not replacing) are the replicas: only
    those past `target` go (a scale-down), and the current instances wanted are the canaries
    plus the replicas the old ones do not make up (a scale-up, or a drain's replacement). A
    workload scaled to zero runs no canary: there is nothing to run it beside.
    """
    w = s.workload
    if not w.canary:
        return len(s.remaining), target
    old = sum(1 for i in s.remaining if s.replaceable(i))
    return max(0, old - target), (w.canary if target else 0) + max(0, target - old)


def _more(want: int, room: int, unplaced: int) -> bool:
    """Cut at the bound with room for more: but not when hosts are full already (`unplaced`),
    or the workload would be planned again at once, forever, with nothing to place."""
    return want < room and unplaced == 0


def _plan_daemon(s: PassState, hosts: Mapping[str, HostView]) -> WorkloadPlan:
    w = s.workload
    targets = daemon_hosts(w, hosts.values())
    target_set = set(targets)
    # A drained host is no daemon's host any more: its instances go like those of a host that
    # left the selector.
    matching = {h.name for h in hosts.values() if matches(h.labels, w.selector) and not h.drained}

    # Not on a target host: gone from the selector (remove all), or a matching host that is
    # not READY (remove old ones, which cost nothing; keep the current one for its return).
    for inst in list(s.remaining):
        if inst.host in target_set:
            continue
        if inst.host not in matching or not s.held(inst):
            s.remove(inst)
    for name in sorted(matching - target_set):
        _remove_duplicates(s, name)

    for name in targets:
        _remove_duplicates(s, name)
        for inst in [i for i in s.remaining if i.host == name and not s.held(i)]:
            if not s.available(inst):
                s.remove(inst)  # 1. not available: free
            elif any(s.available(o) for o in s.remaining if o.host == name and o is not inst):
                s.remove(inst)  # 2. its host stays available (a new one is ready): free

    # 3. Old instances that are their host's only available one, within the budget (steps 1
    # and 2 took the others): each removal takes one host down.
    budget = daemon_budget(w, s.remaining, target_set, s.ready)
    for inst in [i for i in s.remaining if i.host in target_set and not s.held(i)]:
        if not budget.may_go_down:
            break
        s.remove(inst)
        budget = budget.took_down()

    on_targets = [i for i in s.remaining if i.host in target_set]
    has_current = {i.host for i in on_targets if s.held(i)}
    occupied = {i.host for i in on_targets}
    # Hosts with nothing running first: a replacement there needs no surge room.
    lacking = sorted((n for n in targets if n not in has_current), key=lambda n: (n in occupied, n))
    after = daemon_budget(w, s.after(), target_set, s.ready)
    room = max(0, min(len(lacking), after.may_start))
    want = min(room, s.max_changes)
    placement = place_on(w, [hosts[n] for n in lacking], s.usage_after(), limit=want)

    blocked: list[str] = []
    old_left = sum(1 for i in on_targets if not s.current(i))
    if old_left and w.paused:
        blocked.append(_paused_text(old_left))
    elif old_left:
        blocked.append(_budget_text(budget, old_left, 0, "hosts available"))
        not_ready = sum(1 for i in on_targets if s.current(i) and not s.available(i))
        if not_ready:
            blocked.append(f"{not_ready} new {_plural(not_ready, 'instance')} not ready yet")
    if len(lacking) > room and after.stopping:
        blocked.append(after.why_no_start())
    return _outcome(
        s, placement.hosts, placement.reason, blocked, more=_more(want, room, placement.unplaced)
    )


def _remove_duplicates(s: PassState, host: str) -> None:
    """A daemon runs one current instance per host: keep the most advanced, drop the rest."""
    current = [i for i in s.remaining if i.host == host and s.current(i)]
    current.sort(key=lambda i: (not s.available(i), -PHASE_RANK[i.phase], i.id))
    for extra in current[1:]:
        s.remove(extra)


def _budget_text(budget: Budget, old: int, surplus: int, unit: str) -> str:
    """Why removals wait, and what is left for them to do."""
    if budget.frozen:
        return budget.why_no_removal(unit)
    left = []
    if old:
        left.append(f"{old} old {_plural(old, 'instance')} to replace")
    if surplus:
        left.append(f"{surplus} surplus {_plural(surplus, 'instance')} to remove")
    return budget.why_no_removal(unit) + "; " + ", ".join(left)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _paused_text(old: int) -> str:
    """What a paused rollout waits for (the stuck detector does not call it blocked)."""
    return f"rollout paused: {old} old {_plural(old, 'instance')} held until it is resumed"
