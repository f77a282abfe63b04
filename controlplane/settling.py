"""Settling: a new revision's instance counts as available to its rollout only once it has
been ready for its spec's `min_ready`.

The agent reports a first start ready at once (its convergence counts from there, `keel.model
.converged`), and re-counts `min_ready` only after a restart. A rollout that took that word
for availability would remove an old instance as soon as its replacement had started: a
revision that crashes a moment after it starts, with no health check to hold it, would be
rolled through the whole workload within a few passes, before its first exit was reported,
and an automatic rollback (`controlplane.rollouts`) would find no old instance left to keep.
Like Nomad's `min_healthy_time`, the rollout waits: while old instances remain, an instance of
the current revision that became ready less than `min_ready` ago is `settling`, which the
disruption budget (`controlplane.disruption.is_available`) counts as not available. So old
instances go at most `max_unavailable` ahead of replacements that have stayed up.

Once one instance of the revision has stayed ready for `min_ready`, the revision has shown it
does not crash at start, and nothing settles any more: the rollout pays one `min_ready` wait,
not one per wave, so a large rollout's instances still converge within the convergence SLO's
threshold (`docs/slos.md`). A rollback's instances that already ran count as that proof.

Pure: the workload controller (`controlplane.workload`) passes the clock and requeues the
workload when the first settling instance will have settled. Only rollouts are concerned: with
no old instance left, or for a drain's moves and fencing (their own views), nothing changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from controlplane.fleet_index import InstanceRecord
from controlplane.view import InstanceView, WorkloadView


def may_settle(workload: WorkloadView, views: Iterable[InstanceView], *, min_ready_ms: int) -> bool:
    """Whether any instance can be settling: a rollout under way (old instances remain) with
    a min_ready. Otherwise the views are used as they are, and no clock is read."""
    return min_ready_ms > 0 and any(v.live and not workload.is_current(v.generation) for v in views)


def settled_views(
    workload: WorkloadView,
    records: Iterable[InstanceRecord],
    *,
    min_ready_ms: int,
    now: datetime,
) -> tuple[list[InstanceView], float | None]:
    """The workload's instance views for a rollout pass, and the seconds until the first
    settling one settles (None: none settles). `now` is database time, the clock
    `converged_at` is stamped with."""
    records = list(records)
    proven = [
        r
        for r in records
        if r.view.ready
        and r.view.live
        and workload.is_current(r.view.generation)
        and r.converged_at is not None
        and (now - r.converged_at).total_seconds() >= min_ready_ms / 1000
    ]
    if proven:
        return [r.view for r in records], None
    out: list[InstanceView] = []
    soonest: float | None = None
    for r in records:
        v = r.view
        if v.ready and v.live and workload.is_current(v.generation) and r.converged_at is not None:
            left = min(
                min_ready_ms / 1000, min_ready_ms / 1000 - (now - r.converged_at).total_seconds()
            )
            if left > 0:
                v = dataclasses.replace(v, settling=True)
                soonest = left if soonest is None else min(soonest, left)
        out.append(v)
    return out, soonest
