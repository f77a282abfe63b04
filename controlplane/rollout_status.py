"""A workload's rollout now: its current revision, how far it is, and what it waits for.

`rollout_status` is pure: from the workload's row, its current revision (`revision_store`)
and its instances' tallies (`listing.tallies_on`, the counts GetWorkload's status is made of),
it counts by the leader's rules (`WorkloadRow.is_current`, `keel.model.converged`) and says the
state in one word and what it waits for in words. `read_status` reads those on one connection
(an operator's read, or a pause's answer inside its own transaction). `rollouts_api` presents
the result (`rollout_convert`); `keelctl rollout status` shows it and `--wait` polls it.

The state is the revision's (the rollout controller writes it), except: FAILED, ROLLED_BACK
and ABORTED are kept as they are; otherwise COMPLETE as soon as the counts show the rollout
done (every desired instance current and ready, nothing old left, no canary waiting), even
before the controller has marked it; else PAUSED while paused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.errors import NotFound
from controlplane.listing import Tally, tallies_on
from controlplane.revision_store import RevisionRow, revision_row
from controlplane.rollout_judge import is_keel_rollback
from controlplane.sql import Conn
from controlplane.workload_store import WorkloadRow, workload_row
from keel.model import Desired, Kind, converged

# Revision states that are an outcome, not a stage: the counts do not change them.
ENDED = frozenset({"FAILED", "ROLLED_BACK", "ABORTED"})

# The hosts a daemon should run on (`scheduler.daemon_hosts`, as SQL): READY, not drained,
# labels matching the selector.
_DAEMON_HOSTS = """SELECT count(*)::int FROM host
                   WHERE state = 'READY' AND NOT drained AND labels @> $1::jsonb"""


@dataclass(frozen=True)
class RolloutStatus:
    workload: str
    revision: int
    state: str
    desired: int
    updated: int  # live instances running the current spec
    ready: int  # of those, ready
    old_remaining: int  # live instances of other specs
    canaries: int  # current instances that are canaries awaiting promotion
    paused: bool
    paused_by: str
    paused_at: datetime | None
    message: str
    since: datetime | None  # when the current revision was applied
    failure: dict[str, Any] | None  # the revision's failure record, as stored


def rollout_status(
    row: WorkloadRow,
    revision: RevisionRow | None,
    tallies: Sequence[Tally],
    *,
    daemon_hosts: int,
    rolled_back: RevisionRow | None = None,
) -> RolloutStatus:
    """The rollout of `row`'s current revision; `daemon_hosts` is the number of hosts a
    daemon should run on (unused for a service). `rolled_back`: when the current revision is
    Keel's own rollback (`rollout_judge.is_keel_rollback`), the failed revision it rolled back,
    whose record the status shows: the rollout the operator started was ROLLED_BACK, as the
    keel_rollouts gauge counts it (`rollout_judge.rollout_state`)."""
    w = row.workload
    name = w.name
    live = [t for t in tallies if t.desired is not Desired.REMOVED]
    current = [t for t in live if row.is_current(t.generation)]
    desired = 0 if row.deleting else (w.replicas if w.kind is Kind.SERVICE else daemon_hosts)
    updated = sum(t.count for t in current)
    ready = sum(t.count for t in current if converged(Desired.RUNNING, t.phase, t.ready))
    old = sum(t.count for t in live) - updated
    canaries = updated if row.canary_pending else 0
    done = updated == desired and ready == desired and old == 0 and not row.canary_pending
    stored = revision.state if revision is not None else "PROGRESSING"
    failure = revision.failure if revision is not None else None
    if rolled_back is not None and stored not in ENDED:
        stored, failure = "ROLLED_BACK", rolled_back.failure
    if stored in ENDED:
        state = stored
    elif done:
        state = "COMPLETE"
    elif row.paused:
        state = "PAUSED"
    else:
        state = stored
    number = row.generation
    counts = f"{updated} of {desired} updated, {ready} ready"
    if rolled_back is not None and state == "ROLLED_BACK":
        why = str((failure or {}).get("message") or "")
        # The revision the record names (the same spec may be that of several revisions).
        to = (failure or {}).get("rolled_back_to") or (
            revision.same_as if revision is not None else "?"
        )
        message = (
            f"revision {rolled_back.number} failed and Keel rolled back to the spec of revision "
            f"{to} (now revision {number}: {counts})" + (f": {why}" if why else "")
        )
    elif state in ENDED:
        why = str((failure or {}).get("message") or "")
        message = f"revision {number} {state.lower().replace('_', ' ')}" + (
            f": {why}" if why else ""
        )
    elif done:
        message = f"revision {number} is complete: {counts}"
    elif row.paused:
        held = f"{old} old {_plural(old, 'instance')} held, " if old else ""
        message = (
            f"paused by {row.paused_by or 'unknown'}: {held}{counts}; it goes on with "
            f"`keelctl rollout resume {name}`"
        )
    elif row.canary_pending:
        message = (
            f"{canaries} {_plural(canaries, 'canary', 'canaries')} of revision {number} "
            f"({ready} ready) beside {old} old {_plural(old, 'instance')}, awaiting promotion: "
            f"`keelctl rollout promote {name}`"
        )
    else:
        message = f"revision {number}: waiting for " + _waiting(desired, updated, ready, old)
    return RolloutStatus(
        workload=name,
        revision=number,
        state=state,
        desired=desired,
        updated=updated,
        ready=ready,
        old_remaining=old,
        canaries=canaries,
        paused=row.paused,
        paused_by=row.paused_by,
        paused_at=row.paused_at,
        message=message,
        since=revision.created_at if revision is not None else row.updated_at,
        failure=failure,
    )


def _waiting(desired: int, updated: int, ready: int, old: int) -> str:
    """What a rollout under way still waits for, in words."""
    parts = []
    if updated < desired:
        n = desired - updated
        parts.append(f"{n} more updated {_plural(n, 'instance')} to start")
    if ready < min(updated, desired):
        n = min(updated, desired) - ready
        parts.append(f"{n} updated {_plural(n, 'instance')} to become ready")
    if old:
        parts.append(f"{old} old {_plural(old, 'instance')} to be replaced")
    if updated > desired:
        n = updated - desired
        parts.append(f"{n} surplus {_plural(n, 'instance')} to be removed")
    return ", ".join(parts) or "its instances to be reported"


def _plural(n: int, word: str, many: str = "") -> str:
    return word if n == 1 else (many or word + "s")


async def read_status(conn: Conn, name: str) -> RolloutStatus:
    """The workload's rollout status as `conn` sees it. NotFound when there is no such
    workload."""
    record = await conn.fetchrow("SELECT * FROM workload WHERE name = $1", name)
    if record is None:
        raise NotFound(f'workload "{name}" not found')
    row = workload_row(record)
    revision = await conn.fetchrow(
        "SELECT * FROM workload_revision WHERE workload = $1 AND revision = $2",
        name,
        row.generation,
    )
    rolled_back = None
    if revision is not None and is_keel_rollback(revision["actor"], revision["same_as"]):
        failed = await conn.fetchrow(
            """SELECT * FROM workload_revision
               WHERE workload = $1 AND revision < $2 AND state = 'ROLLED_BACK'
               ORDER BY revision DESC LIMIT 1""",
            name,
            row.generation,
        )
        rolled_back = revision_row(failed) if failed is not None else None
    tallies = await tallies_on(conn, [row])
    hosts = 0
    if row.workload.kind is Kind.DAEMON:
        hosts = await conn.fetchval(_DAEMON_HOSTS, row.workload.selector)
    return rollout_status(
        row,
        revision_row(revision) if revision is not None else None,
        tallies[name],
        daemon_hosts=hosts,
        rolled_back=rolled_back,
    )
