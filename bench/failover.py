"""Scenario 5: `kill -9` of the leading replica of two, under a placed fleet.

At each size, a stage with two replicas on one database; the hollow agents spread over both
(each starts at a different address of the two and moves round-robin on reconnect, as the
agent does), every workload placed and RUNNING. Then the leader's whole process group gets
SIGKILL, and:
- standby leading: from the kill to the survivor's commit of the leader row (its
  `acquired_at`, database time; the survivor campaigns every --leader-retry, 2 s by default);
- every agent resynced: from the kill to the last first-assignments message that an agent
  whose stream broke got on its new stream (the hollow agents record both);
- a new workload of up to 50 replicas applied to the survivor, to all of it RUNNING;
- workload restarts: after a watch period, every instance that is gone, new (besides the new
  workload's), not RUNNING, or that a hollow agent stopped or started again. Target zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bench.burst import apply_all
from bench.changes import manifest
from bench.fleet import FleetStats, Run, Stage
from bench.procs import STEP_FAILURES, BenchError, await_for, first_line
from bench.profiles import ISSUE, Burst, Profile, size_text
from bench.report import Figure, Outcome, Step, Target
from keel.v1 import fleet_pb2

TITLE = "kill -9 of the leader, two replicas"
ANCHOR = "Borg master failover ~10 s; Nomad's failover heartbeat TTL is minutes"
NEW_REPLICAS = 50
RESYNC_TIMEOUT_S = 120.0


async def run(run: Run, profile: Profile) -> Outcome:
    outcome = Outcome(5, TITLE)
    for size in profile.failover:
        try:
            outcome.steps.append(await _size(run, profile, size))
        except STEP_FAILURES as exc:
            outcome.fail(f"at {size.hosts:,} agents: {first_line(exc)}")
            break
    if not outcome.steps:
        return outcome
    last, issue = outcome.steps[-1], ISSUE.failover[-1]
    size = profile.failover[len(outcome.steps) - 1]
    shown = (
        f"{size_text(size.hosts, issue.hosts, 'agents')}, "
        f"{size_text(size.instances, issue.instances, 'instances')}"
    )
    e = last.extra
    outcome.figures = [
        Figure("standby leading", e["leading_s"], "s", shown, Target("< 5 s", 5.0), ANCHOR),
        Figure("every agent resynced", e["resynced_s"], "s", shown, Target("< 15 s", 15.0),
               ANCHOR, note=f"{int(e['moved'])} agents moved"),
        Figure("workload restarts", e["restarts"], "", shown, Target("0", 1.0), ANCHOR),
        Figure(f"new {int(e['new_replicas'])}-replica workload RUNNING after the kill",
               e["new_running_s"], "s", shown),
    ]  # fmt: skip
    return outcome


async def _size(run: Run, profile: Profile, size: Burst) -> Step:
    names = [f"failover-{n:04d}" for n in range(size.workloads)]
    async with Stage(run, f"failover-{size.hosts}", replicas=2) as stage:
        pids = [cp.child.pid for cp in stage.controlplanes]

        async def leading() -> tuple[int, int, datetime | None] | None:
            got = await stage.leader()
            return got if got[0] in pids else None

        leader_pid, epoch, _ = await await_for(leading, within_s=60, what="a replica to lead")
        leader = pids.index(leader_pid)
        survivor = stage.controlplanes[1 - leader]
        fleet = stage.hollow(size.hosts, heartbeat_s=profile.heartbeat_s)
        await stage.hosts_ready(size.hosts, within_s=profile.setup_timeout_s)
        await apply_all(stage, names, size.replicas)
        await stage.running(size.instances, within_s=profile.setup_timeout_s, what="the fleet")
        before_ids = await _ids(stage)
        before = await await_for(_settled(fleet.stats, size.hosts), within_s=30, what="stats")
        on_leader = sum(1 for h in before.hosts if h[1] == leader)

        window = stage.window()
        killed_at = time.time()
        stage.controlplanes[leader].child.kill()

        async def new_leader() -> datetime | None:
            pid, now_epoch, acquired = await stage.leader()
            return acquired if pid == survivor.child.pid and now_epoch > epoch else None

        acquired = await await_for(
            new_leader, within_s=120, what="the standby to lead", interval=0.1
        )
        leading_s = acquired.timestamp() - killed_at

        async def resynced() -> FleetStats | None:
            s = fleet.stats()
            moved = [h for h in s.hosts if h[4] >= killed_at]
            ok = s.connected == size.hosts and len(moved) >= on_leader
            return s if ok and all(h[3] > h[4] for h in moved) else None

        try:
            after = await await_for(resynced, within_s=RESYNC_TIMEOUT_S, what="", interval=0.1)
        except BenchError:
            s = fleet.stats()
            moved = [h for h in s.hosts if h[4] >= killed_at]
            behind = [h[0] for h in moved if h[3] <= h[4]]
            raise BenchError(
                f"not every agent resynced {RESYNC_TIMEOUT_S:.0f} s after the kill: "
                f"{s.connected} of {size.hosts} connected, {len(moved)} of {on_leader} on the "
                f"killed replica reconnected, {len(behind)} of them without assignments yet "
                f"(e.g. {', '.join(behind[:3])}); hollow errors: {s.errors[-2:]}"
            ) from None
        moved = [h for h in after.hosts if h[4] >= killed_at]
        resynced_s = max((h[3] for h in moved), default=killed_at) - killed_at

        new = min(NEW_REPLICAS, size.hosts * 10)
        api = stage.client(survivor)
        reply = await api.ApplyWorkload(
            fleet_pb2.ApplyWorkloadRequest(manifest_json=manifest("failover-new", new)), timeout=60
        )
        applied = reply.workload.updated_at.ToDatetime(tzinfo=UTC)
        row = await stage.running(size.instances + new, within_s=120, what="the new workload")
        new_running_s = (row["observed"] - applied).total_seconds()

        # The watch: time for the new leader to look at every workload and judge every host.
        await asyncio.sleep(profile.failover_watch_s)
        cost = window.close()
        after_ids = await _ids(stage, without="failover-new")
        last = fleet.stats()
    gone = before_ids.keys() - after_ids.keys()
    added = after_ids.keys() - before_ids.keys()
    not_running = [i for i, ok in after_ids.items() if not ok]
    stopped = last.counts["stops"] - before.counts["stops"]
    again = last.counts["restarts"] - before.counts["restarts"]
    restarts = len(gone) + len(added) + len(not_running) + stopped + again
    step = Step(
        f"{size.hosts:,} agents, {size.instances:,} instances",
        size.hosts,
        "agent",
        cost,
        per_unit={"resync ms/agent moved": 1000 * resynced_s / max(1, len(moved))},
        extra={
            "leading_s": leading_s,
            "resynced_s": resynced_s,
            "moved": float(len(moved)),
            "restarts": float(restarts),
            "new_replicas": float(new),
            "new_running_s": new_running_s,
        },
    )
    print(
        f"  {step.size}: leading {leading_s:.2f} s, resynced {resynced_s:.2f} s "
        f"({len(moved)} moved), restarts {restarts}",
        flush=True,
    )
    return step


def _settled(
    stats: Callable[[], FleetStats], hosts: int
) -> Callable[[], Awaitable[FleetStats | None]]:
    """A check: every hollow agent connected, as the stats files say."""

    async def check() -> FleetStats | None:
        s = stats()
        return s if s.connected == hosts and len(s.hosts) == hosts else None

    return check


async def _ids(stage: Stage, *, without: str = "") -> dict[str, bool]:
    """Every instance's id, and whether it is RUNNING and ready."""
    rows = await stage.db.fetch(
        "SELECT id, phase = 'RUNNING' AND ready AS ok FROM instance WHERE workload <> $1", without
    )
    return {r["id"]: bool(r["ok"]) for r in rows}
