"""The drain planner: what a drain does next to empty its hosts, and what blocks the rest.

Pure, like `controlplane.rollout`: `plan_step` reads the drained hosts' workloads with all their
instances (`fleet_index.InstanceRecord`, as the leader's cache holds them), the hosts and what
each holds, and returns a `Step`: the replacements to start, the instances to stop, the hosts
whose daemons stop now, and a `Blocker` with a reason from the closed set
(`keel.blockers.BlockerReason`) for every instance that cannot move now. The drain controller
writes the step and, being level-triggered, asks again when anything changes; a restart or a
failover resumes from the instances as they are (a replacement names the instance it replaces,
`InstanceView.replaces`), so nothing is moved twice. `controlplane.drain_plan` runs the same
steps forward to answer a dry run with waves and an estimate of the time.

The rules, checked with the disruption budget (`controlplane.disruption`) before every action:
- a service instance moves make-before-break: a replacement starts on another eligible host
  (READY, schedulable, matching; never a host being drained) if max_surge leaves room, and the
  instance stops once its replacement is available and the budget lets one go down;
- with max_surge 0 it moves stop-before-start: it stops only if the budget lets one go down
  (instances already down anywhere count) and a replacement would fit somewhere; the workload
  controller places the replacement once it has stopped;
- at most `max_parallel` moves are under way at once, over every host of the drain;
- daemons stop last, once no service instance is left on their host (the host is marked
  drained, and the workload controller stops them), unless `ignore_daemons`;
- with `force` (the deadline passed and the operator chose force) every instance left stops
  now, budget or not.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.disruption import Budget, is_available, service_budget
from controlplane.fleet_index import InstanceRecord
from controlplane.scheduler import HostUsage, place
from controlplane.view import HostView, InstanceView, ReadyHosts, WorkloadView
from keel.blockers import BlockerReason
from keel.model import Desired, HostState, Kind, Phase

# How many instances a blocker's message names before it says "and N more".
_MESSAGE_INSTANCES = 3


class MoveKind(enum.StrEnum):
    MAKE_BEFORE_BREAK = "make-before-break"  # a replacement first, then the stop
    STOP_BEFORE_START = "stop-before-start"  # max_surge 0: the stop, then the replacement
    DAEMON = "daemon"  # stopped last, not replaced
    FORCE = "force"  # stopped at the deadline, budget or not


@dataclass(frozen=True)
class Start:
    """Start a replacement of instance `replaces` (of `workload`) on `host`."""

    workload: str
    replaces: str
    host: str


@dataclass(frozen=True)
class Stop:
    """Stop instance `instance` (mark it REMOVED): the last action of its move. `ready` and
    `floor` are its workload's budget when the stop was decided, this stop counted: how many
    stay available, and the fewest the budget allows (recorded with the move, so the history
    says the budget held)."""

    instance: str
    workload: str
    kind: MoveKind
    ready: int = 0
    floor: int = 0


@dataclass(frozen=True)
class Blocker:
    """Why `instance` (of `workload`, on `host`) cannot move now; `replacement` names its
    replacement when the blocker is about that one."""

    instance: str
    workload: str
    host: str
    reason: BlockerReason
    message: str
    replacement: str = ""


@dataclass(frozen=True)
class Options:
    """How the drain runs: `max_parallel` moves at once (None: no limit); daemons kept running
    (`ignore_daemons`); everything left stopped now (`force`). A replacement not ready within
    `replacement_timeout_s`, and a stop not confirmed within its stop grace and
    `stop_slack_s`, are blockers."""

    max_parallel: int | None = None
    ignore_daemons: bool = False
    force: bool = False
    replacement_timeout_s: float = 60.0
    stop_slack_s: float = 10.0


@dataclass(frozen=True)
class DrainFleet:
    """What a drain decides from: its hosts (`targets`), every host and what each holds, the
    hosts any drain is emptying (`draining`: never a replacement's host), and every workload
    with instances on the targets, with all its instances (its budget counts them all)."""

    targets: frozenset[str]
    hosts: Mapping[str, HostView]
    draining: Set[str]
    workloads: Mapping[str, WorkloadView]
    instances: Mapping[str, Sequence[InstanceRecord]]
    usage: Mapping[str, HostUsage]


@dataclass(frozen=True)
class Step:
    """What to do now. `in_flight`: moves under way (a replacement not ready yet, a stop not
    confirmed); `remaining`: instances still on the targets that the drain must move or stop
    (`done` when none); `queued`: instances waiting for a free slot of `max_parallel`."""

    starts: tuple[Start, ...] = ()
    stops: tuple[Stop, ...] = ()
    evict_daemons: tuple[str, ...] = ()
    blockers: tuple[Blocker, ...] = ()
    in_flight: int = 0
    remaining: int = 0
    queued: int = 0

    @property
    def done(self) -> bool:
        return self.remaining == 0

    @property
    def acts(self) -> bool:
        return bool(self.starts or self.stops or self.evict_daemons)


@dataclass
class _Workload:
    """One workload as the step changes it: its budget, its instances and their replacements."""

    view: WorkloadView
    records: Sequence[InstanceRecord]
    budget: Budget
    replacement_of: dict[str, InstanceRecord]
    started: list[InstanceView] = field(default_factory=list)
    stopped: int = 0  # stopped by this step before their replacements exist

    @property
    def missing(self) -> int:
        """Replicas the workload controller has yet to place: each needs room too."""
        counted = sum(1 for r in self.records if r.view.live and r.id not in self.replacement_of)
        return max(0, self.view.replicas - counted + self.stopped)


def plan_step(fleet: DrainFleet, options: Options, *, now: datetime) -> Step:
    """The next step of the drain of `fleet.targets`, as things are at `now`."""
    ready = ReadyHosts(fleet.hosts)
    workloads = {
        name: _workload(view, fleet.instances.get(name, ()), ready)
        for name, view in fleet.workloads.items()
    }
    on_targets = sorted(
        (r for w in workloads.values() for r in w.records if r.host in fleet.targets),
        key=lambda r: (r.workload, r.id),
    )
    services = [r for r in on_targets if fleet.workloads[r.workload].kind is Kind.SERVICE]
    daemons = [r for r in on_targets if fleet.workloads[r.workload].kind is Kind.DAEMON]
    acts = _Acts(fleet, options, ready, now)
    on_target_ids = {r.id for r in on_targets}
    pending: list[InstanceRecord] = []
    for inst in services:
        w = workloads[inst.workload]
        if inst.view.replaces in on_target_ids:
            # A replacement placed on a drained host before its cordon: it moves once the
            # instance it replaces has stopped and it stands alone.
            continue
        acts.remaining += 1
        if not inst.view.live:
            acts.stopping(inst)
        elif w.view.deleting:
            acts.in_flight += 1  # the workload controller removes it
        elif options.force:
            acts.stop(w, inst, MoveKind.FORCE)
        elif (replacement := w.replacement_of.get(inst.id)) is not None:
            acts.finish(w, inst, replacement)
        else:
            pending.append(inst)
    # Instances not serving first: moving them costs no availability.
    pending.sort(key=lambda r: (is_available(r.view, ready), r.workload, r.id))
    for inst in pending:
        if options.max_parallel is not None and acts.in_flight >= options.max_parallel:
            acts.queued += 1
            continue
        acts.begin(workloads[inst.workload], inst)
    if not options.ignore_daemons:
        left = {r.host for r in services}
        for host in sorted(fleet.targets - left):
            mine = [r for r in daemons if r.host == host]
            acts.remaining += len(mine)
            for inst in mine:
                if not inst.view.live:
                    acts.stopping(inst)
                elif options.force:
                    acts.stop(workloads[inst.workload], inst, MoveKind.FORCE)
            view = fleet.hosts.get(host)
            if view is not None and not view.drained and any(r.view.live for r in mine):
                acts.evict_daemons.append(host)
    return Step(
        starts=tuple(acts.starts),
        stops=tuple(acts.stops),
        evict_daemons=tuple(acts.evict_daemons),
        blockers=tuple(acts.blockers),
        in_flight=acts.in_flight,
        remaining=acts.remaining,
        queued=acts.queued,
    )


def _workload(view: WorkloadView, records: Sequence[InstanceRecord], ready: Set[str]) -> _Workload:
    return _Workload(
        view=view,
        records=records,
        budget=service_budget(view, (r.view for r in records), ready),
        replacement_of={r.view.replaces: r for r in records if r.view.live and r.view.replaces},
    )


class _Acts:
    """The step as it is decided, instance by instance, with the budgets it has used."""

    def __init__(self, fleet: DrainFleet, options: Options, ready: Set[str], now: datetime) -> None:
        self.fleet = fleet
        self.options = options
        self.ready = ready
        self.now = now
        self.starts: list[Start] = []
        self.stops: list[Stop] = []
        self.evict_daemons: list[str] = []
        self.blockers: list[Blocker] = []
        self.in_flight = 0
        self.remaining = 0
        self.queued = 0
        self.placed: dict[str, HostUsage] = {}  # usage of the hosts replacements start on
        self._candidates: list[HostView] | None = None

    def block(self, inst: InstanceRecord, reason: BlockerReason, message: str, **kw: str) -> None:
        self.blockers.append(Blocker(inst.id, inst.workload, inst.host, reason, message, **kw))

    def stopping(self, inst: InstanceRecord) -> None:
        """Asked to stop and not gone yet: a move under way, blocked if it cannot finish."""
        self.in_flight += 1
        host = self.fleet.hosts.get(inst.host)
        if host is None or host.state is not HostState.READY:
            state = host.state.value if host is not None else "gone"
            self.block(
                inst,
                BlockerReason.AGENT_UNREACHABLE,
                f"{inst.host} is {state}: its agent is not there to stop {inst.id}; the stop is "
                "recorded and happens when the agent comes back",
            )
            return
        waited = _seconds(self.now, inst.desired_changed_at)
        grace = inst.stop_grace_ms / 1000
        if inst.phase is not Phase.STOPPED and waited > grace + self.options.stop_slack_s:
            self.block(
                inst,
                BlockerReason.STOP_TIMEOUT,
                f"{inst.id} was asked to stop {waited:.0f}s ago (stop grace {grace:g}s) and is "
                f"still {inst.phase.value}{_reason_text(inst)}",
            )

    def stop(self, w: _Workload, inst: InstanceRecord, kind: MoveKind) -> None:
        self.in_flight += 1
        if is_available(inst.view, self.ready):
            w.budget = w.budget.took_down()
        b = w.budget
        self.stops.append(Stop(inst.id, inst.workload, kind, ready=b.available, floor=b.floor))

    def finish(self, w: _Workload, inst: InstanceRecord, replacement: InstanceRecord) -> None:
        """A move whose replacement exists: stop the instance once the replacement serves."""
        self.in_flight += 1
        if is_available(replacement.view, self.ready):
            if not is_available(inst.view, self.ready) or w.budget.may_go_down:
                self.in_flight -= 1  # counted again by `stop`
                self.stop(w, inst, MoveKind.MAKE_BEFORE_BREAK)
            else:
                self.block(inst, BlockerReason.BUDGET_EXHAUSTED, _down_text(w, self.ready))
            return
        waited = _seconds(self.now, replacement.desired_changed_at)
        trouble = replacement.agent_stuck or replacement.phase is Phase.FAILED
        if trouble or waited > self.options.replacement_timeout_s:
            self.block(
                inst,
                BlockerReason.REPLACEMENT_NOT_READY,
                f"replacement {replacement.id} on {replacement.host} is not ready after "
                f"{waited:.0f}s ({replacement.phase.value}{_reason_text(replacement)})",
                replacement=replacement.id,
            )

    def begin(self, w: _Workload, inst: InstanceRecord) -> None:
        """A move not started yet: its first action, if the budget and capacity allow it."""
        if w.view.max_surge >= 1:
            if not w.budget.may_start:
                self.block(inst, BlockerReason.BUDGET_EXHAUSTED, _surge_text(w, self.ready))
                return
            host = self._place(w, inst)
            if host is None:
                return
            self.starts.append(Start(inst.workload, inst.id, host))
            self.in_flight += 1
            w.budget = w.budget.started()
            return
        if w.budget.frozen:
            self.block(
                inst,
                BlockerReason.BUDGET_EXHAUSTED,
                f"{w.view.name} can never move an instance: max_unavailable and max_surge are "
                "both 0",
            )
            return
        if is_available(inst.view, self.ready) and not w.budget.may_go_down:
            self.block(inst, BlockerReason.BUDGET_EXHAUSTED, _down_text(w, self.ready))
            return
        # Stopped with nowhere to go, it would stay down: its replacement must fit first, with
        # every replica the workload controller has yet to place.
        if self._place(w, inst, count=w.missing + 1, commit=False) is not None:
            self.stop(w, inst, MoveKind.STOP_BEFORE_START)
            w.stopped += 1

    def _place(
        self, w: _Workload, inst: InstanceRecord, *, count: int = 1, commit: bool = True
    ) -> str | None:
        """The host a replacement of `inst` would start on (counted, with `commit`), or None
        with a NO_CAPACITY blocker saying why; `count` replicas must fit for it to count."""
        if self._candidates is None:
            self._candidates = [
                h for name, h in self.fleet.hosts.items() if name not in self.fleet.draining
            ]
        usage = ChainMap(self.placed, self.fleet.usage)  # type: ignore[arg-type]
        mine = [*(r.view for r in w.records), *w.started]
        placement = place(w.view, count, self._candidates, mine, usage)
        if placement.unplaced:
            why = placement.reason.message if placement.reason is not None else "no host fits"
            self.block(
                inst,
                BlockerReason.NO_CAPACITY,
                f"no host can take a replacement of {inst.id}: {why} (hosts being drained are "
                "not counted)",
            )
            return None
        host = placement.hosts[0]
        if commit:
            replacement = pending_view(w.view, f"{inst.id}>{host}", host, replaces=inst.id)
            w.started.append(replacement)
            self.placed[host] = usage.get(host, HostUsage()).plus(replacement)
        return host


def pending_view(
    w: WorkloadView, instance_id: str, host: str, *, replaces: str = ""
) -> InstanceView:
    """An instance of the workload's current generation about to start on `host` (desired
    RUNNING, not yet reported), replacing `replaces` if given: what a plan counts it as."""
    return InstanceView(
        id=instance_id,
        workload=w.name,
        generation=w.generation,
        host=host,
        desired=Desired.RUNNING,
        resources=w.resources,
        phase=Phase.PENDING,
        ready=False,
        replaces=replaces,
    )


def _seconds(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _reason_text(inst: InstanceRecord) -> str:
    parts = [p for p in (inst.reason, inst.message.strip().split("\n", 1)[0][:200]) if p]
    return ", " + ": ".join(parts) if parts else ""


def _down_text(w: _Workload, ready: Set[str]) -> str:
    """Which budget, and who holds it: the instances of the workload that are down."""
    b = w.budget
    down = [r for r in w.records if r.view.live and not is_available(r.view, ready)]
    text = (
        f"{w.view.name} allows max_unavailable={b.max_unavailable} of {b.target}: "
        f"{b.available} ready, at least {b.floor} must stay"
    )
    if down:
        text += "; down now: " + _instances_text(down, ready)
    return text


def _surge_text(w: _Workload, ready: Set[str]) -> str:
    """Which budget, and who holds it: the instances beyond the replicas that may still run."""
    b = w.budget
    busy = [
        r
        for r in w.records
        if (r.view.live and not is_available(r.view, ready))
        or (not r.view.live and r.phase is not Phase.STOPPED)
    ]
    text = (
        f"{w.view.name} allows max_surge={b.max_surge}: {b.may_run} instances may be running "
        f"for {b.target} replicas, at most {b.ceiling}"
    )
    if busy:
        text += "; starting or stopping now: " + _instances_text(busy, ready)
    return text


def _instances_text(records: Iterable[InstanceRecord], ready: Set[str]) -> str:
    listed = sorted(records, key=lambda r: r.id)
    parts = []
    for r in listed[:_MESSAGE_INSTANCES]:
        where = r.host if r.host in ready else f"{r.host} (host not READY)"
        state = r.phase.value if r.view.live else f"stopping, {r.phase.value}"
        parts.append(f"{r.id} on {where} ({state}{_reason_text(r)})")
    more = len(listed) - _MESSAGE_INSTANCES
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def with_drained(hosts: Mapping[str, HostView], drained: Iterable[str]) -> dict[str, HostView]:
    """The hosts with `drained` set on some (what marking them does), for planning ahead."""
    out = dict(hosts)
    for name in drained:
        if name in out:
            out[name] = dataclasses.replace(out[name], drained=True)
    return out
