"""Operations at the protobuf edge: a drain request's parameters checked, operation records,
blockers and drain plans presented.

The operations' part of the control plane's edge (`controlplane.convert` has the rest and the
rules: a field that breaks one is a `SpecError` naming it); `controlplane.fleet` calls these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from controlplane.convert import each
from controlplane.drain import Blocker
from controlplane.drain_plan import DrainPlan
from controlplane.operations import (
    DEFAULT_DEADLINE_MS,
    BlockerRecord,
    DrainParams,
    OnDeadline,
    OperationRow,
)
from keel import blockers, convert, fields
from keel.fields import SpecError
from keel.stuck import GUIDES, Reason
from keel.v1 import fleet_pb2, types_pb2

MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000
MAX_PARALLEL = 100_000


def drain_params(m: fleet_pb2.DrainRequest) -> DrainParams:
    """A drain's parameters, checked: the deadline (0: the default), what happens at it, how
    many moves at once (0: no limit), daemons."""
    deadline = fields.integer(m.deadline_ms, "deadline_ms", minimum=0, maximum=MAX_DEADLINE_MS)
    try:
        on_deadline = OnDeadline(m.on_deadline or OnDeadline.FAIL.value)
    except ValueError:
        raise SpecError(
            "on_deadline", f"must be fail or force, got {fields.shown(m.on_deadline)}"
        ) from None
    return DrainParams(
        deadline_ms=deadline or DEFAULT_DEADLINE_MS,
        on_deadline=on_deadline,
        max_parallel=max_parallel(m.max_parallel),
        ignore_daemons=m.ignore_daemons,
    )


def max_parallel(value: int) -> int:
    return fields.integer(value, "max_parallel", minimum=0, maximum=MAX_PARALLEL)


def operation_id(value: str, field: str = "id") -> str:
    return fields.object_id(value, field)


def blocker_pb(b: Blocker | BlockerRecord) -> fleet_pb2.Blocker:
    """A drain blocker as an operator reads it: with its runbook and the next command."""
    guide = blockers.GUIDES[b.reason]
    return fleet_pb2.Blocker(
        instance=b.instance,
        workload=b.workload,
        host=b.host,
        reason=b.reason.value,
        message=b.message,
        since=convert.ts(b.since) if isinstance(b, BlockerRecord) else None,
        runbook=guide.runbook,
        next_command=blockers.next_command(
            b.reason,
            instance=b.instance,
            workload=b.workload,
            host=b.host,
            replacement=b.replacement,
        ),
        replacement=b.replacement,
    )


def _seconds(value: float | None) -> float:
    """A duration in seconds on the wire: -1 for unknown (it would not finish)."""
    return -1.0 if value is None else value


def operation_pb(op: OperationRow) -> fleet_pb2.Operation:
    p = op.progress
    return fleet_pb2.Operation(
        id=op.id,
        kind=op.kind,
        state=op.state.value,
        hosts=list(op.hosts),
        params=fleet_pb2.DrainParams(
            deadline_ms=op.params.deadline_ms,
            on_deadline=op.params.on_deadline.value,
            max_parallel=op.params.max_parallel,
            ignore_daemons=op.params.ignore_daemons,
        ),
        actor=op.actor,
        reason=op.reason,
        runbook=op.runbook,
        progress=fleet_pb2.OperationProgress(
            moved=p.moved,
            remaining=p.remaining,
            blocked=p.blocked,
            in_flight=p.in_flight,
            eta_s=_seconds(p.eta_s),
            blockers=[blocker_pb(b) for b in p.blockers],
        ),
        message=op.message,
        forced=op.forced,
        created_at=convert.ts(op.created_at),
        started_at=convert.ts(op.started_at),
        finished_at=convert.ts(op.finished_at),
        deadline_at=convert.ts(op.deadline_at),
        blocked_since=convert.ts(op.blocked_since),
        version=op.version,
    )


def operations_pb(rows: Iterable[OperationRow]) -> list[fleet_pb2.Operation]:
    return each(rows, operation_pb, what="operation", name=lambda r: r.id)


def drain_plan_pb(plan: DrainPlan, hosts: Sequence[str]) -> fleet_pb2.PlanDrainResponse:
    return fleet_pb2.PlanDrainResponse(
        moves=[
            fleet_pb2.PlannedMove(
                instance=m.instance,
                workload=m.workload,
                source=m.source,
                target=m.target,
                kind=m.kind.value,
                wave=m.wave,
                starts_at_s=m.starts_at_s,
                done_at_s=_seconds(m.done_at_s),
            )
            for m in plan.moves
        ],
        blockers=[blocker_pb(b) for b in plan.blockers],
        waves=plan.waves,
        remaining=plan.remaining,
        eta_s=_seconds(plan.eta_s),
        hosts=list(hosts),
    )


def blocked_drains_pb(
    ops: Iterable[OperationRow], *, now: datetime, after_s: float
) -> list[fleet_pb2.StuckObject]:
    """Running drains blocked past `--drain-blocked-after` with no move finishing, as stuck
    objects (DRAIN_BLOCKED): since when, the first blocker, and the operation to look at."""
    out = []
    for op in ops:
        since = op.blocked_since
        if since is None or (now - since).total_seconds() < after_s or not op.progress.blockers:
            continue
        first = op.progress.blockers[0]
        out.append(
            fleet_pb2.StuckObject(
                object=f"operation/{op.id}",
                stuck=types_pb2.Stuck(
                    reason=Reason.DRAIN_BLOCKED.value,
                    since=convert.ts(since),
                    message=(
                        f"{op.progress.blocked} instance(s) blocked, none moved since; "
                        f"{first.instance} {first.reason.value}: {first.message}"
                    ),
                    runbook=GUIDES[Reason.DRAIN_BLOCKED].runbook,
                    next_command=f"keelctl op get {op.id}",
                ),
            )
        )
    return out
