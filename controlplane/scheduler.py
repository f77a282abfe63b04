"""Placement: which hosts get new instances of a workload, or why none can.

Pure functions over `controlplane.view` snapshots; `controlplane.rollout` decides how many
instances to create and calls `place` (services) or `place_on` (daemons, one per host);
the controller writes the result. When something cannot be placed the answer carries an
`Unschedulable` reason with a stable code, which the stuck detector reports as is.

Capacity: a host's free resources are its capacity minus every instance that holds resources
on it (`InstanceView.holds_resources`): live instances, and removed ones until the agent
reports them STOPPED, because their processes may still be running. The planners never scan
the fleet for that: they read each host's `HostUsage`, which the leader's cache
(`controlplane.cache`) keeps per host, one instance at a time, with `HostUsage.plus`/`minus`.
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import HostState, Resources

# How many hosts a message lists before it says "and N more" (messages are read by people).
_MESSAGE_HOSTS = 5
# Ranking hosts (not fitting: that uses the real request) counts every instance as asking for
# at least this much cpu, as Kubernetes' scheduler scores pods with no request: otherwise an
# instance that requests nothing never makes its host look fuller, and every such instance of
# every workload lands on the same host, the first by name.
SCORE_MIN_CPU_MILLIS = 100


class UnschedulableCode(enum.StrEnum):
    NO_MATCHING_HOST = "NO_MATCHING_HOST"
    ALL_HOSTS_CORDONED_OR_NOT_READY = "ALL_HOSTS_CORDONED_OR_NOT_READY"
    INSUFFICIENT_RESOURCES = "INSUFFICIENT_RESOURCES"


@dataclass(frozen=True)
class Unschedulable:
    """Why instances could not be placed: a stable code and a message with the specifics."""

    code: UnschedulableCode
    message: str


@dataclass(frozen=True)
class Placement:
    """Host names, one per placed instance (a host repeats when it takes several)."""

    hosts: tuple[str, ...]
    unplaced: int
    reason: Unschedulable | None


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Every selector key is a label with the same value (an empty selector matches all)."""
    return all(labels.get(key) == value for key, value in selector.items())


def eligible(host: HostView, selector: Mapping[str, str]) -> bool:
    """A service instance may be placed here: READY, not cordoned, labels match."""
    return host.state is HostState.READY and host.schedulable and matches(host.labels, selector)


def ranked_cpu(resources: Resources) -> int:
    """An instance's cpu as placement ranks hosts by it (`SCORE_MIN_CPU_MILLIS` at least)."""
    return max(resources.cpu_millis, SCORE_MIN_CPU_MILLIS)


@dataclass(frozen=True, slots=True)
class HostUsage:
    """What the instances on one host hold: the resources of those that hold any
    (`InstanceView.holds_resources`), their cpu as placement ranks hosts (`ranked_cpu`), and
    how many they are. Changed one instance at a time, so a cache can keep it per host."""

    allocated: Resources = Resources()  # noqa: RUF009 (frozen: one shared zero is safe)
    ranked_cpu: int = 0
    holding: int = 0

    def plus(self, inst: InstanceView) -> HostUsage:
        """With `inst` on the host (no change if it holds nothing)."""
        if not inst.holds_resources:
            return self
        return HostUsage(
            self.allocated + inst.resources,
            self.ranked_cpu + ranked_cpu(inst.resources),
            self.holding + 1,
        )

    def minus(self, inst: InstanceView) -> HostUsage:
        """Without `inst`, which `plus` counted (no change if it holds nothing)."""
        if not inst.holds_resources:
            return self
        return HostUsage(
            self.allocated - inst.resources,
            self.ranked_cpu - ranked_cpu(inst.resources),
            self.holding - 1,
        )


NO_USAGE = HostUsage()


def usage_of(instances: Iterable[InstanceView]) -> dict[str, HostUsage]:
    """Every host's usage, summed from scratch over `instances` (a cache keeps the same sums
    one change at a time; tests and a full resync compare against this)."""
    usage: dict[str, HostUsage] = {}
    for inst in instances:
        if inst.holds_resources:  # a host where nothing holds anything has no entry
            usage[inst.host] = usage.get(inst.host, NO_USAGE).plus(inst)
    return usage


def free_resources(
    hosts: Iterable[HostView], usage: Mapping[str, HostUsage]
) -> dict[str, Resources]:
    """Capacity minus what instances hold, per host (may go negative if overcommitted)."""
    return {h.name: h.capacity - usage.get(h.name, NO_USAGE).allocated for h in hosts}


def place(
    workload: WorkloadView,
    count: int,
    hosts: Collection[HostView],
    mine: Iterable[InstanceView],
    usage: Mapping[str, HostUsage],
) -> Placement:
    """Choose hosts for `count` new instances of `workload`, spreading softly.

    `mine` is the workload's instances; `usage` is what every host's instances hold (all
    workloads: capacity is shared). Each pick goes to the eligible host where the request fits
    that has the fewest live instances of this workload (of its current generation, then of
    any), then the most free cpu (each instance counted at `SCORE_MIN_CPU_MILLIS` at least),
    then the first name; usage is updated after each pick, so replicas share a host only when
    no emptier host fits.
    """
    if count <= 0:
        return Placement((), 0, None)
    request = workload.resources
    candidates = [h for h in hosts if eligible(h, workload.selector)]
    mine = [i for i in mine if i.workload == workload.name and i.live]
    # Spread the current generation first: mid-rollout, old instances are on their way out,
    # and counting them equally would pile the new generation onto the hosts they left.
    current = Counter(i.host for i in mine if workload.is_current(i.generation))
    spread = Counter(i.host for i in mine)
    # Every host once in a heap by its rank; only the picked host's rank changes, so each pick
    # is a pop and a push (placing R instances on H hosts costs (H + R) log H, not R x H). A
    # host the request no longer fits is dropped: its free resources only shrink from here.
    ranks = [
        (current[h.name], spread[h.name], usage.get(h.name, NO_USAGE).ranked_cpu
         - h.capacity.cpu_millis, h.name)
        for h in candidates
    ]  # fmt: skip
    heapq.heapify(ranks)
    capacity = {h.name: h.capacity for h in candidates}
    free: dict[str, Resources] = {}  # of the hosts looked at (`free_resources`' rule)
    picked: list[str] = []
    while ranks and len(picked) < count:
        here, anywhere, fullness, name = heapq.heappop(ranks)
        room = free.get(name)
        if room is None:
            room = capacity[name] - usage.get(name, NO_USAGE).allocated
        if not request.fits_in(room):
            continue
        picked.append(name)
        free[name] = room - request
        heapq.heappush(ranks, (here + 1, anywhere + 1, fullness + ranked_cpu(request), name))
    unplaced = count - len(picked)
    reason = None
    if unplaced:
        left = free_resources(candidates, usage) | free
        reason = _why_not_placed(workload, hosts, candidates, left)
    return Placement(tuple(picked), unplaced, reason)


def daemon_hosts(workload: WorkloadView, hosts: Iterable[HostView]) -> list[str]:
    """Hosts a daemon should run on: labels match and READY, sorted by name.

    Cordon is ignored on purpose, as Kubernetes does for DaemonSets: a cordoned host still
    needs its per-host agents (log shippers, exporters). A drained host does not: a drain stops
    its daemons last, and they stay stopped until it is uncordoned. Capacity is checked by
    `place_on`.
    """
    return sorted(
        h.name
        for h in hosts
        if h.state is HostState.READY and not h.drained and matches(h.labels, workload.selector)
    )


def place_on(
    workload: WorkloadView,
    targets: Sequence[HostView],
    usage: Mapping[str, HostUsage],
    *,
    limit: int | None = None,
) -> Placement:
    """Place one instance on each target host that has room, in the order given.

    Used for daemons, whose hosts are fixed by `daemon_hosts`. With `limit`, stop after that
    many placements (a target without room does not use up the limit: the next one is
    tried). `unplaced` is how many of the wanted placements (`limit`, or all targets) did not
    happen; the reason names the hosts that were too full.
    """
    wanted = len(targets) if limit is None else max(0, min(limit, len(targets)))
    request = workload.resources
    free = free_resources(targets, usage)
    picked: list[str] = []
    too_full: list[HostView] = []
    for host in targets:
        if len(picked) >= wanted:
            break
        if request.fits_in(free[host.name]):
            picked.append(host.name)
            free[host.name] = free[host.name] - request
        else:
            too_full.append(host)
    unplaced = wanted - len(picked)
    reason = None
    if unplaced:
        shown = [_fit_text(h.name, free[h.name], request) for h in too_full[:_MESSAGE_HOSTS]]
        message = f"needs {_request_text(request)}; " + "; ".join(shown)
        message += _more(len(too_full))
        reason = Unschedulable(UnschedulableCode.INSUFFICIENT_RESOURCES, message)
    return Placement(tuple(picked), unplaced, reason)


def _why_not_placed(
    workload: WorkloadView,
    hosts: Collection[HostView],
    candidates: Sequence[HostView],
    free: Mapping[str, Resources],
) -> Unschedulable:
    """The most specific reason, checked in the order an operator would look."""
    selector = workload.selector
    matching = sorted((h for h in hosts if matches(h.labels, selector)), key=lambda h: h.name)
    if not matching:
        if not hosts:
            message = "no hosts are registered"
        else:
            message = f"no host has labels {format_selector(selector)} ({len(hosts)} hosts known)"
        return Unschedulable(UnschedulableCode.NO_MATCHING_HOST, message)
    if not candidates:
        states = ", ".join(f"{h.name} {_host_condition(h)}" for h in matching[:_MESSAGE_HOSTS])
        message = (
            f"{_count(len(matching), 'host')} {'match' if len(matching) > 1 else 'matches'} "
            f"{format_selector(selector)} but none is READY and schedulable: {states}"
            f"{_more(len(matching))}"
        )
        return Unschedulable(UnschedulableCode.ALL_HOSTS_CORDONED_OR_NOT_READY, message)
    request = workload.resources
    closest = min(candidates, key=lambda h: (_shortfall(free[h.name], request), h.name))
    message = (
        f"needs {_request_text(request)}; closest fit "
        f"{_fit_text(closest.name, free[closest.name], request)}"
    )
    unusable = len(matching) - len(candidates)
    if unusable:
        message += f"; {unusable} more matching {_plural(unusable, 'host')} cordoned or not ready"
    return Unschedulable(UnschedulableCode.INSUFFICIENT_RESOURCES, message)


def format_selector(selector: Mapping[str, str]) -> str:
    """`role=web,zone=a` (sorted), or `(any)` for the empty selector."""
    if not selector:
        return "(any)"
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _host_condition(host: HostView) -> str:
    parts = [] if host.state is HostState.READY else [host.state.value]
    if not host.schedulable:
        parts.append("cordoned")
    return " and ".join(parts)


def _shortfall(free: Resources, request: Resources) -> Fraction:
    """How far a host is from fitting, each dimension relative to the request."""
    total = Fraction(0)
    for need, have in (
        (request.cpu_millis, free.cpu_millis),
        (request.memory_mib, free.memory_mib),
    ):
        short = need - max(0, have)
        if short > 0:
            total += Fraction(short, max(need, 1))
    return total


def _request_text(request: Resources) -> str:
    return f"cpu {request.cpu_millis}m, memory {request.memory_mib}Mi"


def _fit_text(name: str, free: Resources, request: Resources) -> str:
    """`host-2 has cpu 1900m free (short 2100m), memory 3900Mi free`."""
    cpu = max(0, free.cpu_millis)
    memory = max(0, free.memory_mib)
    cpu_text = f"cpu {cpu}m free"
    if request.cpu_millis > cpu:
        cpu_text += f" (short {request.cpu_millis - cpu}m)"
    memory_text = f"memory {memory}Mi free"
    if request.memory_mib > memory:
        memory_text += f" (short {request.memory_mib - memory}Mi)"
    return f"{name} has {cpu_text}, {memory_text}"


def _more(total: int) -> str:
    return f", and {total - _MESSAGE_HOSTS} more" if total > _MESSAGE_HOSTS else ""


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _count(n: int, word: str) -> str:
    return f"{n} {_plural(n, word)}"
