"""The disruption budget: how many of a workload's instances may go down now, and how many
extra may start.

Pure arithmetic over `controlplane.view` snapshots, written once for everything that moves
instances: `controlplane.rollout` (rollouts, scale-downs, replacements) asks it before every
removal and creation; a drain planner (make-before-break moves off a cordoned host, or
stop-before-start with max_surge 0) and fencing ask the same questions of the same `Budget`.

- **Available** (`is_available`): ready by the agent's word, desired RUNNING, on a READY host;
  in a rollout, a new revision's instance only once it has been ready for its `min_ready`
  (`controlplane.settling`: the agent counts a first start ready at once, and a revision that
  crashes a moment after it starts would otherwise roll through the whole workload before its
  first exit is reported).
  A daemon's unit is a host: a target host with at least one available instance.
- **May go down** = available - (target - max_unavailable), never below 0. Every instance
  already down counts, wherever it is: a drain on one host never takes a workload further down
  than its budget because of trouble on another.
- **May still run** (`may_still_run`): a live instance (desired RUNNING or STOPPED), or a
  removed one not yet STOPPED, wherever it is. A removed instance on a host that is not READY
  (fenced by liveness) counts too: its agent is out of sight, not known to have stopped it, so
  its replacement waits for room under the ceiling. It stops counting when its agent reports
  it STOPPED, or when liveness presumes it so because its workload's
  `on_disconnect.stop_after` (and stop grace) has passed since the host's last heartbeat
  (`liveness.self_fence_due`): the agent stops such instances by itself.
- **May start** = target + max_surge - may still run, never below 0. With max_surge 0 a
  replacement starts only after the instance it replaces has stopped (stop-before-start).
- **Canaries**: while a service's new revision awaits promotion, the `canary` instances it runs
  beside the old ones are wanted on top of the target: the ceiling holds them (target + canary
  + max_surge); the floor does not count on them (target - max_unavailable).

`target` is the replica count of a service, or the number of hosts a daemon should run on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Set
from dataclasses import dataclass

from controlplane.view import InstanceView, WorkloadView
from keel.model import Desired, Phase


def is_available(inst: InstanceView, ready_hosts: Set[str]) -> bool:
    """Serving now: ready by the agent's word (and, in a rollout, up for min_ready: not
    `settling`), wanted RUNNING, on a READY host."""
    return (
        inst.ready
        and not inst.settling
        and inst.desired is Desired.RUNNING
        and inst.host in ready_hosts
    )


def may_still_run(inst: InstanceView) -> bool:
    """Its process may be running now or soon: live, or removed but not yet STOPPED (by its
    agent's report, or presumed so by liveness once its self-fencing time has passed)."""
    return inst.live or inst.phase is not Phase.STOPPED


@dataclass(frozen=True)
class Budget:
    """A workload's disruption budget at one moment: counts, and what they allow."""

    target: int
    max_unavailable: int
    max_surge: int
    available: int  # instances (services) or hosts (daemons) serving now
    live: int  # live instances, whose processes may run
    stopping: int  # removed instances whose processes may still run
    canary: int = 0  # canaries wanted on top of the target (a service awaiting promotion)

    @property
    def floor(self) -> int:
        """The fewest available the budget allows."""
        return max(0, self.target - self.max_unavailable)

    @property
    def may_go_down(self) -> int:
        """How many more available instances (daemon: hosts) may be taken down now."""
        return max(0, self.available - self.floor)

    @property
    def ceiling(self) -> int:
        """The most instances whose processes may run at once."""
        return self.target + self.canary + self.max_surge

    @property
    def may_run(self) -> int:
        return self.live + self.stopping

    @property
    def may_start(self) -> int:
        """How many new instances may start now without passing the ceiling."""
        return max(0, self.ceiling - self.may_run)

    @property
    def frozen(self) -> bool:
        """Neither an instance may go down nor an extra one start: nothing can be replaced."""
        return self.max_unavailable == 0 and self.max_surge == 0

    def took_down(self, n: int = 1) -> Budget:
        """The budget after `n` more available instances (daemon: hosts) are taken down."""
        return dataclasses.replace(self, available=self.available - n)

    def started(self, n: int = 1) -> Budget:
        """The budget after `n` more instances are started (not available yet)."""
        return dataclasses.replace(self, live=self.live + n)

    def why_no_removal(self, unit: str) -> str:
        """What removals wait on: `unit` names what `available` counts (`ready`, `hosts
        available`)."""
        if self.frozen:
            return "max_unavailable and max_surge are both 0: no instance can be replaced"
        return (
            f"waiting on max_unavailable={self.max_unavailable}: {self.available} {unit}, "
            f"at least {self.floor} must stay so"
        )

    def why_no_start(self) -> str:
        """What creations wait on when removed instances still hold the surge."""
        noun = "instance" if self.stopping == 1 else "instances"
        return f"waiting for {self.stopping} removed {noun} to stop (max_surge={self.max_surge})"


def service_budget(
    workload: WorkloadView, instances: Iterable[InstanceView], ready_hosts: Set[str]
) -> Budget:
    """The budget of a service over its instances (any generation, any desired state)."""
    mine = [i for i in instances if i.workload == workload.name]
    return Budget(
        target=workload.replicas,
        max_unavailable=workload.max_unavailable,
        max_surge=workload.max_surge,
        available=sum(1 for i in mine if is_available(i, ready_hosts)),
        live=sum(1 for i in mine if i.live),
        stopping=sum(1 for i in mine if not i.live and may_still_run(i)),
        canary=workload.canary,
    )


def daemon_budget(
    workload: WorkloadView,
    instances: Iterable[InstanceView],
    targets: Set[str],
    ready_hosts: Set[str],
) -> Budget:
    """The budget of a daemon over its target hosts (`scheduler.daemon_hosts`): one available
    instance makes its host available, and only instances on target hosts count."""
    mine = [i for i in instances if i.workload == workload.name and i.host in targets]
    return Budget(
        target=len(targets),
        max_unavailable=workload.max_unavailable,
        max_surge=workload.max_surge,
        available=len({i.host for i in mine if is_available(i, ready_hosts)}),
        live=sum(1 for i in mine if i.live),
        stopping=sum(1 for i in mine if not i.live and may_still_run(i)),
    )
