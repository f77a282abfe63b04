"""How big each scenario runs, by profile: `full` (the issue's sizes and windows: 5 minutes of
heartbeats, a minute of churn), `default` (`make bench`: the issue's sizes with shorter
measuring windows, so every scenario fits in under 15 minutes on a 2-core machine), `quick`
(`make bench QUICK=1`, under 2 minutes) and `tiny` (the test that keeps the harness working).

Each scenario with a size runs at every size listed (smallest first), so the growth table
shows how its cost per unit changes; its figures are judged at the last (largest) size, except
scenario 7, whose target is set at 50 instances. `ISSUE` holds the sizes the targets are set
for, so the table can say "at 2,000 agents (issue: 5,000)".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Burst:
    workloads: int
    replicas: int
    hosts: int

    @property
    def instances(self) -> int:
        return self.workloads * self.replicas


@dataclass(frozen=True)
class Churn:
    hosts: int
    workloads: int
    instances: int  # before the changes; spread evenly over the workloads


@dataclass(frozen=True)
class Profile:
    name: str
    # 1: idle agents connected with heartbeats, measured over the window at each size.
    idle_agents: tuple[int, ...]
    idle_window_s: float
    # 2: burst placement; a size that has not finished by the deadline reports what it reached.
    burst: tuple[Burst, ...]
    burst_deadline_s: float
    # 3 and 6: single changes at a steady rate on a fleet, operator calls meanwhile.
    churn: tuple[Churn, ...]
    churn_rate: float
    churn_duration_s: float
    # 5: kill -9 of the leading replica of two (agents, workloads x replicas).
    failover: tuple[Burst, ...]
    failover_watch_s: float  # after every agent resynced: how long restarts are looked for
    # 7: one real agent with the process driver and this many idle instances.
    agent_instances: tuple[int, ...]
    agent_window_s: float
    agents_per_process: int = 2500
    # 4: the drain of one host running this many instances (one size each), on this many hosts.
    drain: tuple[int, ...] = (20, 110)
    drain_hosts: int = 20
    drain_parallel: tuple[int, ...] = (0, 10, 5)  # max-parallel of each run (0: no limit)
    # The hollow agents' heartbeat interval (the agent's default: 10 s), and how long scenario 1
    # waits after a size has connected before it measures (one heartbeat interval).
    heartbeat_s: float = 10.0
    idle_settle_s: float = 10.0
    # How long one size may take to set up (fleet connected, instances placed) before it fails.
    setup_timeout_s: float = 600.0
    # 6: after the churn at the largest size, the fleet is topped up to this many instances (one
    # more workload) for a paged list of them all, the size the target is set at (0: not done).
    list_instances: int = 0


PROFILES = {
    "full": Profile(
        name="full",
        idle_agents=(500, 1500, 5000),
        idle_window_s=300,
        burst=(Burst(50, 100, 100), Burst(150, 100, 300), Burst(500, 100, 1000)),
        burst_deadline_s=900,
        churn=(Churn(100, 50, 2000), Churn(300, 150, 6000), Churn(1000, 500, 20000)),
        churn_rate=20,
        churn_duration_s=60,
        failover=(Burst(50, 100, 100), Burst(150, 100, 300), Burst(500, 100, 1000)),
        failover_watch_s=30,
        agent_instances=(50, 150, 500),
        agent_window_s=60,
        setup_timeout_s=1800,
        list_instances=20_000,
    ),
    "default": Profile(
        name="default",
        idle_agents=(500, 1500, 5000),
        idle_window_s=30,
        burst=(Burst(50, 100, 100), Burst(150, 100, 300), Burst(500, 100, 1000)),
        burst_deadline_s=300,
        churn=(Churn(100, 50, 2000), Churn(300, 150, 6000), Churn(1000, 500, 20000)),
        churn_rate=20,
        churn_duration_s=30,
        failover=(Burst(50, 100, 100), Burst(150, 100, 300), Burst(500, 100, 1000)),
        failover_watch_s=10,
        agent_instances=(50, 150, 500),
        agent_window_s=20,
        list_instances=20_000,
    ),
    "quick": Profile(
        name="quick",
        idle_agents=(50, 100, 200),
        idle_window_s=5,
        burst=(Burst(5, 20, 10), Burst(10, 20, 20), Burst(20, 25, 40)),
        burst_deadline_s=60,
        churn=(Churn(10, 20, 100), Churn(20, 40, 200), Churn(40, 80, 400)),
        churn_rate=20,
        churn_duration_s=6,
        failover=(Burst(2, 10, 10), Burst(4, 10, 20), Burst(8, 10, 40)),
        failover_watch_s=2,
        agent_instances=(5, 10, 20),
        agent_window_s=3,
        setup_timeout_s=120,
        heartbeat_s=2.0,
        idle_settle_s=2.0,
    ),
    "tiny": Profile(
        name="tiny",
        idle_agents=(3, 6),
        idle_window_s=1.5,
        burst=(Burst(2, 5, 3),),
        burst_deadline_s=20,
        churn=(Churn(3, 4, 8),),
        churn_rate=10,
        churn_duration_s=1.5,
        failover=(Burst(2, 3, 4),),
        failover_watch_s=0.5,
        agent_instances=(2,),
        agent_window_s=1,
        agents_per_process=4,
        drain=(5,),
        drain_hosts=3,
        drain_parallel=(0,),
        setup_timeout_s=30,
        heartbeat_s=0.5,
        idle_settle_s=0.5,
    ),
}

ISSUE = PROFILES["full"]


def size_text(run: float, issue: float, unit: str) -> str:
    """'2,000 agents', with the issue's size when it differs: '2,000 agents (issue: 5,000)'."""
    text = f"{run:,.0f} {unit}"
    return text if run == issue else f"{text} (issue: {issue:,.0f})"
