"""The store's rows as the planners' views: the one step from what Postgres holds to what
`controlplane.scheduler` and `controlplane.rollout` decide from.

The rows come from `controlplane.workload_store` and `controlplane.instance_store`; the views
are `controlplane.view`'s frozen dataclasses. The leader's cache reads instances through
`controlplane.records` instead (columns only); `instance_view` is the same conversion from a
full row. It lives on the store's side so that the views and the planners never import the
store (the import-layering contract in pyproject.toml).
"""

from __future__ import annotations

from controlplane.instance_store import InstanceRow
from controlplane.view import InstanceView, WorkloadView
from controlplane.workload_store import WorkloadRow


def workload_view(row: WorkloadRow) -> WorkloadView:
    w = row.workload
    return WorkloadView(
        name=w.name,
        kind=w.kind,
        generation=row.generation,
        replicas=w.replicas,
        max_unavailable=w.max_unavailable,
        max_surge=w.max_surge,
        selector=w.selector,
        resources=w.spec.resources,
        deleting=row.deleting,
        spec_generations=row.spec_generations,
        paused=row.paused,
        canary=w.rollout.canary if row.canary_pending else 0,
    )


def instance_view(row: InstanceRow) -> InstanceView:
    return InstanceView(
        id=row.id,
        workload=row.workload,
        generation=row.generation,
        host=row.host,
        desired=row.desired,
        resources=row.spec.resources,
        phase=row.phase,
        ready=row.ready,
    )
