"""Small fleets for the drain planner's tests: hosts, workloads and instance records, with
the defaults a drain test does not care about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from controlplane.drain import DrainFleet
from controlplane.fleet_index import InstanceRecord
from controlplane.scheduler import usage_of
from controlplane.view import HostView, InstanceView, WorkloadView
from keel.model import Desired, HostState, Kind, Phase, Resources

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def host(
    name: str,
    *,
    cpu: int = 4000,
    state: HostState = HostState.READY,
    schedulable: bool = True,
    drained: bool = False,
    labels: Mapping[str, str] | None = None,
) -> HostView:
    return HostView(name, dict(labels or {}), Resources(cpu, 4096), state, schedulable, drained)


def workload(
    name: str = "web",
    *,
    replicas: int = 3,
    max_unavailable: int = 1,
    max_surge: int = 1,
    kind: Kind = Kind.SERVICE,
    cpu: int = 100,
    deleting: bool = False,
) -> WorkloadView:
    return WorkloadView(
        name=name,
        kind=kind,
        generation=1,
        replicas=replicas,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        selector={},
        resources=Resources(cpu, 64),
        deleting=deleting,
    )


def inst(
    id: str,
    on: str,
    *,
    workload: str = "web",
    desired: Desired = Desired.RUNNING,
    phase: Phase = Phase.RUNNING,
    ready: bool | None = None,
    replaces: str = "",
    age_s: float = 60.0,
    reason: str = "",
    stuck: bool = False,
    cpu: int = 100,
    grace_ms: int = 2000,
) -> InstanceRecord:
    if ready is None:
        ready = phase is Phase.RUNNING and desired is Desired.RUNNING
    view = InstanceView(
        id=id,
        workload=workload,
        generation=1,
        host=on,
        desired=desired,
        resources=Resources(cpu, 64),
        phase=phase,
        ready=ready,
        replaces=replaces,
    )
    changed = NOW - timedelta(seconds=age_s)
    return InstanceRecord(
        view=view,
        desired_changed_at=changed,
        unconverged_since=None,
        observed=True,
        reason=reason,
        message="",
        agent_stuck=stuck,
        stop_grace_ms=grace_ms,
    )


def fleet(
    targets: Iterable[str],
    hosts: Sequence[HostView],
    workloads: Sequence[WorkloadView],
    instances: Sequence[InstanceRecord],
    *,
    draining: Iterable[str] = (),
) -> DrainFleet:
    by_workload: dict[str, list[InstanceRecord]] = {w.name: [] for w in workloads}
    for r in instances:
        by_workload[r.workload].append(r)
    target_set = frozenset(targets)
    return DrainFleet(
        targets=target_set,
        hosts={h.name: h for h in hosts},
        draining=set(draining) | target_set,
        workloads={w.name: w for w in workloads},
        instances=by_workload,
        usage=usage_of(r.view for r in instances),
    )
