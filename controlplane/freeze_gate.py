"""The deploy freeze's gates: what a freeze refuses, and the words of each refusal.

`gate` runs inside `WorkloadStore._apply`, in the apply's transaction, for an apply that
changes the spec and is not a rollback: while frozen it refuses (FailedPrecondition: nothing
is changed) unless the apply overrides the freeze with a reason (`check_override`), which is
recorded (`FreezeOverridden`). `gate_resume` refuses resuming a paused rollout that would roll
its new spec further (`rollout_pause` calls it; a rollback and waiting canaries resume).
Promoting a canary is refused in `revision_store.promote`, with `freeze.summary`.

Neighbours: `freeze` (the freezes themselves: `holding`, `summary`), `workload_store` and
`rollout_pause` (the callers).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.freeze import OPERATOR, OVERRIDE, RUNBOOK, Freeze, holding, summary
from controlplane.sql import Conn, record_event

log = structlog.get_logger("keel.freeze")


def gate_resume(
    freezes: Sequence[Freeze], workload: str, *, revision: int, old_instances: int
) -> None:
    """Refuses to resume a paused rollout while `freezes` hold if it would roll its new spec
    further (`old_instances` of other specs remain), as a promotion is refused: the way
    through is a rollback or the freeze lifted. With nothing left to roll it changes nothing
    new and goes through; the caller lets a rollback and waiting canaries resume too."""
    if not freezes or not old_instances:
        return
    those = (
        "the old instance that remains"
        if old_instances == 1
        else (f"the {old_instances} old instances that remain")
    )
    raise FailedPrecondition(
        f'workload "{workload}": deploys are frozen ({summary(freezes)}); resuming the rollout '
        f"of revision {revision} would roll its new spec to {those}, so it stays paused. Roll "
        f"back with `keelctl rollout undo {workload}` (a rollback to the last fully ready "
        f"revision goes through, and resumes), or {_lift(freezes)} (`keelctl freeze --status`, "
        f"{RUNBOOK})"
    )


def check_override(override: bool, reason: str) -> None:
    """An override of the freeze must say why: it is recorded with its actor."""
    if override and not reason.strip():
        raise InvalidArgument(
            "reason: --override-freeze needs a reason (--reason TEXT): an apply through a "
            "deploy freeze is recorded with who made it and why; nothing was changed"
        )


async def gate(conn: Conn, workload: str, *, override: bool, reason: str, actor: str) -> None:
    """Refuses a spec change while deploys are frozen, unless `override` (then records it).

    Called in the apply's transaction, before anything is written or after it is written
    (the refusal rolls the transaction back): either way the apply changes nothing."""
    freezes = await holding(conn)
    if not freezes:
        return
    what = summary(freezes)
    if override:
        await record_event(
            conn,
            f"workload/{workload}",
            "FreezeOverridden",
            f"spec change applied through the deploy freeze ({what}): {reason}",
            actor=actor,
        )
        log.warning("deploy freeze overridden", workload=workload, actor=actor, reason=reason)
        return
    raise FailedPrecondition(
        f'workload "{workload}": deploys are frozen ({what}); a spec change is refused while '
        f"frozen (scale changes, deletes, drains and rollbacks to a spec that was fully ready "
        f"still work). Deploy anyway, recorded with your reason: `{OVERRIDE}`; or "
        f"{_lift(freezes)} (see `keelctl freeze --status`, {RUNBOOK})"
    )


def _lift(freezes: Sequence[Freeze]) -> str:
    """How the freezes that hold are lifted, in words."""
    if any(f.source == OPERATOR for f in freezes):
        return "lift it with `keelctl unfreeze`"
    return (
        "an alert's freeze lifts when the alert resolves (`keelctl unfreeze --alert NAME` if "
        "its resolve was lost)"
    )
