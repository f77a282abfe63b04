"""A leader's rollout machinery on a real Postgres, for the integration tests that drive it by
hand: the workload and rollout controllers and the stuck detector on one loaded cache, and the
agent's word on an instance (running and ready or not, or in a crash loop)."""

from __future__ import annotations

from typing import Any

from plans import loaded_cache

from controlplane.cache import FleetCache
from controlplane.metrics import Metrics
from controlplane.reconcile import Result, Term
from controlplane.rollouts import RolloutController
from controlplane.status import StatusStore
from controlplane.store import Report, Store
from controlplane.stuck import StuckDetector
from controlplane.workload import WorkloadController
from keel.model import Phase, Resources

TERM = Term(epoch=None, started_at=0.0)
STDERR = "stderr (last lines):\nboom: config.yaml not found"


class Leader:
    """The workload and rollout controllers and the stuck detector on one loaded cache, as a
    leader runs them."""

    def __init__(self, store: Store, cache: FleetCache) -> None:
        self.store = store
        self.cache = cache
        self.metrics = Metrics()
        self.workloads = WorkloadController(store, cache=cache, metrics=self.metrics)
        self.rollouts = RolloutController(store, cache=cache, metrics=self.metrics)
        self.stuck = StuckDetector(
            store, StatusStore(store.pool), cache=cache, metrics=self.metrics, interval_s=1.0
        )

    async def plan(self, name: str = "web") -> None:
        await self.workloads.reconcile(name, term=TERM)

    async def judge(self, name: str = "web", *, term: Term = TERM) -> Result:
        return await self.rollouts.reconcile(name, term=term)

    async def report(self, iid: str, *, ready: bool = True, crash: bool = False) -> None:
        """The agent's word on an instance: running and ready, running and not ready, or in a
        crash loop (the agent's own verdict, with the stderr tail)."""
        [inst] = [i for i in await self.store.list_instances() if i.id == iid]
        if crash:
            report = Report(inst.host, iid, Phase.FAILED, 0, 2, "exit 1", "CRASH_LOOP",
                            f"last exit: exit 1; restarts: 2\n{STDERR}", {}, False, False, None,
                            agent_stuck=True)  # fmt: skip
        else:
            report = Report(inst.host, iid, Phase.RUNNING, 7, 0, "", "", "", {}, ready, False,
                            None)  # fmt: skip
        self.cache.reported(await StatusStore(self.store.pool).write_reports([report]))

    async def live(self, name: str = "web") -> list[Any]:
        return [i for i in await self.store.list_instances() if i.desired.value != "REMOVED"]


async def leader_on(store: Store) -> Leader:
    """Four hosts registered, and a leader over the cache loaded from them."""
    for h in ("h1", "h2", "h3", "h4"):
        await store.register_host(h, labels={}, capacity=Resources(4000, 8192), agent_version="t")
    return Leader(store, await loaded_cache(store))
