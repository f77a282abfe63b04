"""Stuck verdicts, pure: from an object's desired and observed state, its host and its deadline,
which reason from the closed set in `keel.stuck` it is stuck for (or None), and whether a
workload is converged.

`controlplane.stuck.StuckDetector` runs them over the leader's cache every pass and records what
changed. `judge_instance` and `judge_workload` return a `Verdict`; `workload_converged` says
whether nothing is left to do; `surely_unconverged` and `may_be_stuck` are the cheap checks that
let the detector skip planning a workload whose plan could not change the answer.

A paused rollout (`keelctl rollout pause`) holds on purpose: it is never ROLLOUT_BLOCKED for
that. Paused for longer than `--rollout-paused-after` it is ROLLOUT_PAUSED, converged or not,
naming who paused it and since when, so a forgotten pause is seen. A rollout that failed and
that Keel holds (paused as `keel/rollout` by the rollout controller) waits for an operator from
the start: it is ROLLOUT_FAILED at once, with the failure's reason and message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controlplane.reconcile import ReconcileFailure
from controlplane.rollout import WorkloadPlan
from controlplane.rollout_judge import ACTOR as HOLDER
from controlplane.store import WorkloadRow
from controlplane.view import WorkloadView
from keel.model import Desired, HostState, Kind, Phase
from keel.spec import format_duration
from keel.stuck import IMMEDIATE, Reason


class InstanceFacts(Protocol):
    """What the verdicts read of an instance (the cache's record, or the store's full row)."""

    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def desired(self) -> Desired: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def converged(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def agent_stuck(self) -> bool: ...
    @property
    def observed(self) -> bool: ...
    @property
    def stop_grace_ms(self) -> int: ...
    @property
    def desired_changed_at(self) -> datetime: ...
    @property
    def unconverged_since(self) -> datetime | None: ...


class HostFacts(Protocol):
    """What the verdicts read of a host (the cache's record, or the store's row)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> HostState: ...
    @property
    def state_since(self) -> datetime: ...
    @property
    def last_heartbeat(self) -> datetime | None: ...
    @property
    def connected(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    message: str


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _heartbeat(host: HostFacts, now: datetime) -> str:
    if host.last_heartbeat is None:
        return "no heartbeat ever"
    return f"last heartbeat {_ago((now - host.last_heartbeat).total_seconds())} ago"


def judge_instance(
    inst: InstanceFacts, host: HostFacts | None, *, deadline_s: float, now: datetime
) -> Verdict | None:
    """Why this instance is stuck, or None."""
    if host is not None and host.state is not HostState.READY:
        down_s = (now - host.state_since).total_seconds()
        if down_s > deadline_s and inst.desired is not Desired.REMOVED:
            return Verdict(
                Reason.HOST_UNREACHABLE,
                f"host {host.name} is {host.state.value} for {_ago(down_s)} "
                f"({_heartbeat(host, now)}); "
                f"its state is unknown. Service instances are fenced and replaced elsewhere "
                f"(within max_surge) after --reschedule-after, unless most hosts are silent",
            )
    if inst.converged:
        return None
    agent_reason = inst.reason if inst.reason in Reason.__members__ else ""
    if inst.agent_stuck and agent_reason and Reason(agent_reason) in IMMEDIATE:
        return Verdict(Reason(agent_reason), inst.message)
    since = inst.unconverged_since or inst.desired_changed_at
    age_s = (now - since).total_seconds()
    if age_s <= deadline_s:
        return None
    if host is not None and host.state is not HostState.READY:
        # Its agent stopped heartbeating (frozen, or cut off with its stream still open):
        # that, not the instance, is why nothing was reported.
        down_s = (now - host.state_since).total_seconds()
        return Verdict(
            Reason.HOST_UNREACHABLE,
            f"host {host.name} is {host.state.value} for {_ago(down_s)} ({_heartbeat(host, now)}); "
            f"{inst.id} wants {inst.desired.value} for {_ago(age_s)} and was last observed "
            f"{inst.phase if inst.observed else 'never'}",
        )
    if host is not None and not host.connected:
        return Verdict(
            Reason.AGENT_DISCONNECTED,
            f"the agent of host {host.name} has no stream open to the control plane; "
            f"{inst.id} was last observed {inst.phase} and wants {inst.desired.value} "
            f"for {_ago(age_s)}",
        )
    if agent_reason:
        return Verdict(Reason(agent_reason), inst.message or f"reported {agent_reason}")
    if inst.desired is not Desired.RUNNING:
        return Verdict(
            Reason.STOP_TIMEOUT,
            f"asked to stop {_ago(age_s)} ago (stop grace {inst.stop_grace_ms} ms) "
            f"but still {inst.phase}",
        )
    if not inst.observed and inst.desired is Desired.RUNNING:
        where = f"host {host.name}" if host is not None else f"host {inst.host}"
        return Verdict(
            Reason.NOT_STARTED,
            f"placed on {where} {_ago(age_s)} ago and never reported by its agent, which is "
            f"connected; the agent may be overloaded or its reconcile loop stuck",
        )
    if inst.phase is Phase.RUNNING:
        return Verdict(
            Reason.HEALTH_CHECK_FAILING,
            f"running but not ready for {_ago(age_s)}"
            + (f": {inst.message}" if inst.message else ""),
        )
    return Verdict(
        Reason.START_FAILED,
        f"not running {_ago(age_s)} after it was placed (phase {inst.phase})"
        + (f": {inst.message}" if inst.message else ""),
    )


def workload_converged(row: WorkloadRow, plan: WorkloadPlan, own: Sequence[InstanceFacts]) -> bool:
    """Nothing left to do: no placement, removal or wait pending, every instance converged."""
    if plan.create or plan.remove or plan.unschedulable or plan.blocked:
        return False
    live = [i for i in own if i.desired is not Desired.REMOVED]
    return all(i.converged and row.is_current(i.generation) for i in live)


class Converging(Protocol):
    """What `surely_unconverged` reads of an instance."""

    @property
    def generation(self) -> int: ...
    @property
    def desired(self) -> Desired: ...
    @property
    def converged(self) -> bool: ...


def surely_unconverged(workload: WorkloadView, own: Sequence[Converging]) -> bool:
    """Not converged whatever its plan says (`workload_converged` would say False): a live
    instance not converged or of an older generation, or a service without as many live
    instances as it wants. Only otherwise does convergence need the plan."""
    live = [i for i in own if i.desired is not Desired.REMOVED]
    if any(not i.converged or not workload.is_current(i.generation) for i in live):
        return True
    wanted = 0 if workload.deleting else workload.replicas
    return workload.kind is Kind.SERVICE and len(live) != wanted


# How long a rollout may stay paused before `keelctl stuck` shows it (--rollout-paused-after).
PAUSED_AFTER_S = 3600.0


def may_be_stuck(
    row: WorkloadRow,
    *,
    now: datetime,
    failure: ReconcileFailure | None,
    paused_after_s: float = PAUSED_AFTER_S,
) -> bool:
    """Whether `judge_workload` can find anything: a reconcile failing, canaries awaiting
    promotion, paused too long, or unconverged for longer than its deadline. Otherwise it
    returns None without looking at the plan."""
    if (
        failure is not None
        or row.canary_pending
        or held_by_keel(row)
        or _paused_too_long(row, now=now, after_s=paused_after_s)
    ):
        return True
    if row.unconverged_since is None:
        return False
    return (now - row.unconverged_since).total_seconds() > row.workload.deadline_ms / 1000


def judge_workload(
    row: WorkloadRow,
    plan: WorkloadPlan,
    own: Sequence[InstanceFacts],
    stuck_instances: set[str],
    *,
    now: datetime,
    failure: ReconcileFailure | None = None,
    canary_since: datetime | None = None,
    canary_waiting_after_s: float = 3600.0,
    paused_after_s: float = PAUSED_AFTER_S,
    rollout_failure: Mapping[str, Any] | None = None,
) -> Verdict | None:
    """Why this workload is stuck (its reconcile, placement or rollout), or None.

    Instance-level trouble is reported on the instances; the workload is stuck itself only
    when the control plane cannot reconcile it, cannot place instances, a rollout cannot
    progress, or its rollout has been paused for longer than `paused_after_s`. Canaries
    awaiting promotion (`canary_since`: when their revision was applied, given while they
    wait) hold the rollout by design: that is no ROLLOUT_BLOCKED, but past
    `canary_waiting_after_s` it is CANARY_AWAITING_PROMOTION, so that a canary is not forgotten.
    A pause holds everything, canaries included: a paused workload is judged as paused.
    Keel's own hold of a failed rollout is ROLLOUT_FAILED at once (`rollout_failure`: the
    current revision's failure record, given while Keel holds it and that revision is FAILED).
    """
    deadline_s = row.workload.deadline_ms / 1000
    if failure is not None and failure.permanent:
        return Verdict(
            Reason.RECONCILE_FAILING,
            f"the control plane cannot carry out this workload's changes, and retrying will "
            f"not help until the workload or its surroundings change: {failure.error}",
        )
    if failure is not None and failure.failing_for_s > deadline_s:
        return Verdict(
            Reason.RECONCILE_FAILING,
            f"the control plane has failed to reconcile this workload for longer than its "
            f"deadline ({_ago(deadline_s)}) and keeps retrying with back-off: {failure.error}",
        )
    age_s = (now - row.unconverged_since).total_seconds() if row.unconverged_since else 0.0
    live = [i for i in own if i.desired is not Desired.REMOVED]
    old = [i for i in live if not row.is_current(i.generation)]
    if held_by_keel(row) and rollout_failure is not None:
        # Held with the current revision FAILED (a fix applied since is held only until the
        # rollout controller lifts the hold: that revision has not failed).
        return _failed(row, len(old), rollout_failure)
    paused = _paused_verdict(row, len(old), now=now, after_s=paused_after_s)
    awaiting = row.canary_pending and row.workload.rollout.canary > 0 and not row.paused
    # Waiting is by design: only canaries that cannot be placed are stuck otherwise.
    if canary_since is not None and awaiting and (age_s <= deadline_s or not plan.unschedulable):
        return _awaiting(row, own, canary_since, now, canary_waiting_after_s)
    if row.unconverged_since is None or age_s <= deadline_s:
        return paused
    if plan.unschedulable is not None:
        return Verdict(
            Reason.UNSCHEDULABLE,
            f"{plan.unschedulable.code.value}: {plan.unschedulable.message}",
        )
    if row.paused:
        return paused  # held on purpose: not blocked
    if old or plan.blocked:
        waiting = sorted(i.id for i in live if i.id in stuck_instances)
        detail = plan.blocked or f"{len(old)} instance(s) of older generations remain"
        if waiting:
            detail += f"; waiting on stuck {', '.join(waiting)}"
        return Verdict(
            Reason.ROLLOUT_BLOCKED,
            f"generation {row.generation} not rolled out after {_ago(age_s)} "
            f"(max_unavailable {row.workload.max_unavailable}, "
            f"max_surge {row.workload.max_surge}): {detail}",
        )
    return None


def _awaiting(
    row: WorkloadRow, own: Sequence[InstanceFacts], since: datetime, now: datetime, after_s: float
) -> Verdict | None:
    """CANARY_AWAITING_PROMOTION once the canaries have waited past `after_s`, else None. The
    message holds no age (it would change every pass, and each change is recorded): `since`
    says when."""
    if (now - since).total_seconds() <= after_s:
        return None
    live = [i for i in own if i.desired is not Desired.REMOVED]
    canaries = [i for i in live if row.is_current(i.generation)]
    ready = sum(1 for i in canaries if i.converged)
    name = row.workload.name
    return Verdict(
        Reason.CANARY_AWAITING_PROMOTION,
        f"revision {row.generation} has awaited promotion since "
        f"{since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (longer than "
        f"--canary-waiting-after {_ago(after_s)}): {len(canaries)} of "
        f"{row.workload.rollout.canary} canaries live, {ready} ready and "
        f"{len(canaries) - ready} not, beside {len(live) - len(canaries)} old instance(s); "
        f"`keelctl rollout promote {name}` lets the rollout continue, "
        f"`keelctl rollout abort {name}` removes the canaries",
    )


def _paused_too_long(row: WorkloadRow, *, now: datetime, after_s: float) -> bool:
    if not row.paused:
        return False
    # A pause with no time (never so when written by PauseRollout) counts from the epoch.
    since = row.paused_at or datetime.fromtimestamp(0, UTC)
    return (now - since).total_seconds() > after_s


def _paused_verdict(row: WorkloadRow, old: int, *, now: datetime, after_s: float) -> Verdict | None:
    """ROLLOUT_PAUSED once paused longer than `after_s`. The message names who paused it and
    since when (a time, not an age: an age would change the record at every pass)."""
    if not _paused_too_long(row, now=now, after_s=after_s):
        return None
    since = _paused_at(row)
    held = f"{old} old instance(s) held" if old else "nothing to roll out now"
    setting = format_duration(round(after_s * 1000))
    return Verdict(
        Reason.ROLLOUT_PAUSED,
        f"rollout of revision {row.generation} paused by {row.paused_by or 'unknown'} since "
        f"{since} (longer than --rollout-paused-after {setting}): {held}; a spec change "
        f"waits until it is resumed",
    )


def _paused_at(row: WorkloadRow) -> str:
    """When the workload was paused, as a time (an age would change the verdict each pass)."""
    return row.paused_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if row.paused_at else "?"


def held_by_keel(row: WorkloadRow) -> bool:
    """Whether the rollout controller holds the workload's failed rollout (paused as
    `keel/rollout`, until the next revision or a resume)."""
    return row.paused and row.paused_by == HOLDER


def _failed(row: WorkloadRow, old: int, record: Mapping[str, Any] | None) -> Verdict:
    """ROLLOUT_FAILED: the failure's reason and message from the revision's record (written
    once, so the verdict does not change from pass to pass), what the hold keeps, what to run."""
    since = _paused_at(row)
    name = row.workload.name
    held = f"{old} old instance(s) kept" if old else "no old instance left"
    why = ""
    if record is not None and record.get("reason"):
        why = f" ({record['reason']})"
    what = f": {record['message']}" if record is not None and record.get("message") else ""
    return Verdict(
        Reason.ROLLOUT_FAILED,
        f"rollout of revision {row.generation} failed{why} and Keel holds it since {since}, "
        f"{held}{what}; `keelctl rollout status {name}` prints the record with the evidence; "
        f"`keelctl rollout undo {name}` returns to the last fully ready revision, and applying "
        f"a fixed spec lifts the hold (`keelctl rollout resume` would roll the failed revision "
        f"on)",
    )
