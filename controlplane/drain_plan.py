"""The drain ahead: which instance would move to which host, in which wave, what would block,
and how long it would take.

Pure: `plan_drain` runs the drain planner's steps (`controlplane.drain.plan_step`) forward on a
copy of the fleet, with a simulated clock: a replacement becomes ready `Timing.start_s` after
it starts, a stopped instance is gone `Timing.stop_s` after its stop, and (stop-before-start)
the workload controller places a replacement as soon as an instance is gone, where placement
(`controlplane.scheduler.place`) would put it. Nothing else in the fleet changes meanwhile:
an instance down elsewhere stays down. The dry run (`FleetService.PlanDrain`) shows the result;
a running drain's ETA is the same simulation from where the drain stands (moves under way count
the time they have already taken).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.drain import (
    Blocker,
    DrainFleet,
    MoveKind,
    Options,
    Step,
    pending_view,
    plan_step,
)
from controlplane.fleet_index import InstanceRecord
from controlplane.scheduler import NO_USAGE, HostUsage, place
from controlplane.view import HostView, InstanceView
from keel.model import Desired, HostState, Kind, Phase, WorkloadSpec

# A process's start, when nothing better is known: added to its min_ready.
START_OVERHEAD_S = 1.0
# The control loop's own pace, as measured with a hollow fleet (bench scenario 4, 2 cores): from
# a report to the drain's next pass, and per move written (one transaction each).
LOOP_S = 0.1
WRITE_S = 0.005


@dataclass(frozen=True)
class Timing:
    """How long an instance of a workload takes from its start to ready, and to stop."""

    start_s: float
    stop_s: float


def timing_of(spec: WorkloadSpec, *, observed_start_s: float | None = None) -> Timing:
    """A workload's timing: ready after its observed start-to-ready time, or without one after
    its min_ready and a second to start; a stop takes at most its stop grace."""
    start = observed_start_s
    if start is None:
        start = spec.min_ready_ms / 1000 + START_OVERHEAD_S
    return Timing(start_s=start, stop_s=spec.stop_grace_ms / 1000)


@dataclass(frozen=True)
class PlannedMove:
    """One instance leaving a drained host: to `target` (empty: a daemon or a forced stop, not
    replaced), in `wave` (1 = now), from `starts_at_s` until `done_at_s` (None: it would not
    finish) after the drain starts."""

    instance: str
    workload: str
    source: str
    target: str
    kind: MoveKind
    wave: int
    starts_at_s: float
    done_at_s: float | None


@dataclass(frozen=True)
class DrainPlan:
    """The drain ahead: its moves in order, what would block it for good (`blockers`, with the
    `remaining` instances it would leave), and its `eta_s` (None: it would not finish)."""

    moves: tuple[PlannedMove, ...]
    blockers: tuple[Blocker, ...]
    waves: int
    remaining: int
    eta_s: float | None


# What the simulation reports after each change: every workload's instances, and the hosts.
Observer = Callable[[Mapping[str, Sequence[InstanceRecord]], Mapping[str, HostView]], None]


def plan_drain(
    fleet: DrainFleet,
    options: Options,
    *,
    now: datetime,
    timings: Mapping[str, Timing],
    observe: Observer | None = None,
    loop_s: float = LOOP_S,
    write_s: float = WRITE_S,
) -> DrainPlan:
    """The drain of `fleet.targets` from where it stands at `now`, simulated to its end.

    `timings` holds every workload of the fleet's; `loop_s` and `write_s` are the control
    loop's pace (see LOOP_S); `observe` is told every state the simulation passes through (the
    property tests check the disruption budget on each)."""
    sim = _Simulation(fleet, options, now=now, timings=timings, observe=observe)
    sim.loop_s, sim.write_s = loop_s, write_s
    return sim.run()


@dataclass(order=True)
class _Event:
    at_s: float
    seq: int
    kind: str = dataclasses.field(compare=False)  # ready | gone
    workload: str = dataclasses.field(compare=False)
    instance: str = dataclasses.field(compare=False)


class _Simulation:
    def __init__(
        self,
        fleet: DrainFleet,
        options: Options,
        *,
        now: datetime,
        timings: Mapping[str, Timing],
        observe: Observer | None,
    ) -> None:
        self.fleet = fleet
        self.options = options
        self.start = now
        self.timings = timings
        self.observe = observe
        self.t = 0.0
        self.loop_s = LOOP_S
        self.write_s = WRITE_S
        self.hosts = dict(fleet.hosts)
        self.records = {
            name: {r.id: r for r in fleet.instances.get(name, ())} for name in fleet.workloads
        }
        self.usage: dict[str, HostUsage] = {}  # hosts whose usage the simulation changed
        self.events: list[_Event] = []
        self.seq = 0
        self.moves: dict[str, PlannedMove] = {}
        self.order: list[str] = []
        self.waves = 0
        self._wave_at: float | None = None
        self._schedule_under_way()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> DrainPlan:
        on_targets = sum(
            1 for rs in self.records.values() for r in rs.values() if r.host in self.fleet.targets
        )
        step = Step()
        for _ in range(8 * on_targets + 16):
            step = plan_step(self._fleet(), self.options, now=self._now())
            if step.done:
                break
            if step.acts:
                self._act(step)
                continue
            if not self.events:
                break  # nothing under way and nothing can start: blocked for good
            self._advance()
        eta = self.t if step.done else None
        # The hosts are empty; replacements placed after their stops may still be starting.
        while step.done and self.events:
            self._advance()
        moves = tuple(self.moves[i] for i in self.order)
        return DrainPlan(
            moves=moves,
            blockers=() if step.done else step.blockers,
            waves=self.waves,
            remaining=step.remaining,
            eta_s=eta,
        )

    def _fleet(self) -> DrainFleet:
        usage = self.fleet.usage if not self.usage else {**self.fleet.usage, **self.usage}
        return dataclasses.replace(
            self.fleet,
            hosts=self.hosts,
            instances={name: list(rs.values()) for name, rs in self.records.items()},
            usage=usage,
        )

    def _now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def _timing(self, workload: str) -> Timing:
        return self.timings[workload]

    # -- acting -----------------------------------------------------------------------------

    def _act(self, step: Step) -> None:
        for start in step.starts:
            source = self.records[start.workload][start.replaces]
            self._start(start.workload, start.host, replaces=start.replaces)
            self._move(source, start.host, MoveKind.MAKE_BEFORE_BREAK)
        for stop in step.stops:
            inst = self.records[stop.workload][stop.instance]
            self._stop(inst)
            if stop.instance not in self.moves:
                self._move(inst, "", stop.kind)
        for host in step.evict_daemons:
            self.hosts[host] = dataclasses.replace(self.hosts[host], drained=True)
            for rs in self.records.values():
                for inst in list(rs.values()):
                    kind = self.fleet.workloads[inst.workload].kind
                    if inst.host == host and inst.view.live and kind is Kind.DAEMON:
                        self._stop(inst)
                        self._move(inst, "", MoveKind.DAEMON)
        self._observed()
        # The moves are written one after the other: the next acts after them.
        self.t += self.write_s * (len(step.starts) + len(step.stops))

    def _move(self, inst: InstanceRecord, target: str, kind: MoveKind) -> None:
        """A move begins: the moves that begin at one moment are one wave."""
        if self._wave_at != self.t:
            self.waves += 1
            self._wave_at = self.t
        self.order.append(inst.id)
        self.moves[inst.id] = PlannedMove(
            instance=inst.id,
            workload=inst.workload,
            source=inst.host,
            target=target,
            kind=kind,
            wave=self.waves,
            starts_at_s=self.t,
            done_at_s=None,
        )

    def _start(self, workload: str, host: str, *, replaces: str = "") -> InstanceRecord:
        w = self.fleet.workloads[workload]
        self.seq += 1
        record = InstanceRecord(
            view=pending_view(w, f"{workload}-planned-{self.seq}", host, replaces=replaces),
            desired_changed_at=self._now(),
            unconverged_since=self._now(),
            observed=False,
            reason="",
            message="",
            agent_stuck=False,
            stop_grace_ms=round(self._timing(workload).stop_s * 1000),
        )
        self._put(record)
        self._schedule(self._timing(workload).start_s, "ready", record)
        return record

    def _stop(self, inst: InstanceRecord) -> None:
        view = dataclasses.replace(inst.view, desired=Desired.REMOVED)
        stopped = dataclasses.replace(inst, view=view, desired_changed_at=self._now())
        self._put(stopped)
        if self.hosts[inst.host].state is HostState.READY:
            self._schedule(self._timing(inst.workload).stop_s, "gone", stopped)

    # -- time -------------------------------------------------------------------------------

    def _schedule(self, after_s: float, kind: str, inst: InstanceRecord) -> None:
        self.seq += 1
        event = _Event(self.t + max(0.0, after_s), self.seq, kind, inst.workload, inst.id)
        heapq.heappush(self.events, event)

    def _schedule_under_way(self) -> None:
        """Moves already under way finish in the time they have left."""
        targets = self.fleet.targets
        for rs in self.records.values():
            on_targets = {i for i, r in rs.items() if r.host in targets}
            for inst in rs.values():
                waited = max(0.0, (self.start - inst.desired_changed_at).total_seconds())
                timing = self._timing(inst.workload)
                if inst.view.live and inst.view.replaces in on_targets and not inst.view.ready:
                    self._schedule(timing.start_s - waited, "ready", inst)
                elif (
                    not inst.view.live
                    and inst.host in targets
                    and self.hosts[inst.host].state is HostState.READY
                ):
                    self._schedule(timing.stop_s - waited, "gone", inst)

    def _advance(self) -> None:
        first = heapq.heappop(self.events)
        self.t = max(self.t, first.at_s)
        due = [first]
        while self.events and self.events[0].at_s <= self.t:
            due.append(heapq.heappop(self.events))
        for event in due:
            inst = self.records[event.workload].get(event.instance)
            if inst is None:
                continue
            if event.kind == "ready":
                view = dataclasses.replace(inst.view, phase=Phase.RUNNING, ready=True)
                self._put(dataclasses.replace(inst, view=view))
                self._finish_replacement(inst)
            else:
                self._gone(inst)
        self._observed()
        self.t += self.loop_s  # the reports reach the drain, which looks again

    def _finish_replacement(self, replacement: InstanceRecord) -> None:
        """A stop-before-start move is done when the replacement placed after it is ready."""
        move = self.moves.get(replacement.view.replaces or "")
        if move is not None and move.kind is MoveKind.STOP_BEFORE_START:
            self.moves[move.instance] = dataclasses.replace(move, done_at_s=self.t)

    def _gone(self, inst: InstanceRecord) -> None:
        del self.records[inst.workload][inst.id]
        self._hold(inst.host, inst.view, add=False)
        move = self.moves.get(inst.id)
        if move is None:
            return
        if move.kind is not MoveKind.STOP_BEFORE_START:
            self.moves[inst.id] = dataclasses.replace(move, done_at_s=self.t)
            return
        # The workload controller places the replacement as soon as the instance is gone.
        w = self.fleet.workloads[inst.workload]
        hosts = [h for n, h in self.hosts.items() if n not in self.fleet.draining]
        mine = [r.view for r in self.records[inst.workload].values()]
        placement = place(w, 1, hosts, mine, self._fleet().usage)
        if placement.hosts:
            self._start(inst.workload, placement.hosts[0], replaces=inst.id)
            self.moves[inst.id] = dataclasses.replace(move, target=placement.hosts[0])

    # -- bookkeeping ------------------------------------------------------------------------

    def _put(self, record: InstanceRecord) -> None:
        old = self.records[record.workload].get(record.id)
        if old is not None:
            self._hold(old.host, old.view, add=False)
        self.records[record.workload][record.id] = record
        self._hold(record.host, record.view, add=True)

    def _hold(self, host: str, view: InstanceView, *, add: bool) -> None:
        before = self.usage.get(host) or self.fleet.usage.get(host, NO_USAGE)
        self.usage[host] = before.plus(view) if add else before.minus(view)

    def _observed(self) -> None:
        if self.observe is not None:
            self.observe({n: list(rs.values()) for n, rs in self.records.items()}, self.hosts)
