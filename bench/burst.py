"""Scenario 2: a burst of placements, end to end.

At each size, a fresh stage with the hollow hosts connected and READY, then every workload
(`replicas` each) applied at once (a few applies in flight at a time, as a deploy script
would). The clock starts at the first apply's commit (database time) and stops at the report
that made the last instance RUNNING and ready (`observed_at`, database time), so the rate is
instances placed, pushed, started and reported, per second. A size that has not finished by
the profile's deadline reports the rate of what did finish, and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from bench.changes import manifest
from bench.fleet import Run, Stage
from bench.procs import STEP_FAILURES, first_line
from bench.profiles import ISSUE, Burst, Profile, size_text
from bench.report import Figure, Outcome, Step, Target
from keel.v1 import fleet_pb2

TITLE = "burst placement"
ANCHOR = "Kubernetes scheduler test 400 pods/s; GKE 1,000 pods/s; Nomad C1M ~750/s per server"
APPLIES_IN_FLIGHT = 16
SAMPLE_S = 1.0


async def apply_all(stage: Stage, names: Sequence[str], replicas: int) -> datetime:
    """Applies every workload, APPLIES_IN_FLIGHT at a time; the first commit's time."""
    gate = asyncio.Semaphore(APPLIES_IN_FLIGHT)
    written: list[datetime] = []

    async def one(name: str) -> None:
        async with gate:
            reply = await stage.api.ApplyWorkload(
                fleet_pb2.ApplyWorkloadRequest(manifest_json=manifest(name, replicas)), timeout=60
            )
            written.append(reply.workload.updated_at.ToDatetime(tzinfo=UTC))

    await asyncio.gather(*(one(name) for name in names))
    return min(written)


async def run(run: Run, profile: Profile) -> Outcome:
    outcome = Outcome(2, TITLE)
    notes: list[str] = []
    for size in profile.burst:
        try:
            step, note = await _size(run, profile, size)
        except STEP_FAILURES as exc:
            outcome.fail(f"at {size.instances:,} instances: {first_line(exc)}")
            break
        outcome.steps.append(step)
        notes.append(note)
    if not outcome.steps:
        return outcome
    last, size = outcome.steps[-1], profile.burst[len(outcome.steps) - 1]
    issue = ISSUE.burst[-1]
    shown = (
        f"{size_text(size.instances, issue.instances, 'instances')} on "
        f"{size_text(size.hosts, issue.hosts, 'hosts')}"
    )
    outcome.figures = [
        Figure(
            "placed and RUNNING, end to end",
            last.extra["running_per_s"],
            "instances/s",
            shown,
            Target(">= 2,000/s", 2000.0, below=False),
            ANCHOR,
            note=notes[-1],
        ),
        Figure("placed (instances written)", last.extra["placed_per_s"], "instances/s", shown),
        Figure(
            "control plane CPU per instance",
            last.per_unit["control plane CPU ms/instance"],
            "ms",
            shown,
        ),
    ]
    return outcome


async def _size(run: Run, profile: Profile, size: Burst) -> tuple[Step, str]:
    names = [f"burst-{n:04d}" for n in range(size.workloads)]
    async with Stage(run, f"burst-{size.instances}") as stage:
        stage.hollow(size.hosts, heartbeat_s=profile.heartbeat_s)
        await stage.hosts_ready(size.hosts, within_s=profile.setup_timeout_s)
        window = stage.window()
        deadline = time.monotonic() + profile.burst_deadline_s
        first = await apply_all(stage, names, size.replicas)
        row = await stage.instances()
        while row["running"] < size.instances and time.monotonic() < deadline:
            await asyncio.sleep(SAMPLE_S)
            window.sample()
            stage.children.check_alive()
            row = await stage.instances()
        cost = window.close()
    running, done = int(row["running"]), row["running"] >= size.instances
    if done:
        running_s = (row["observed"] - first).total_seconds()
        note = ""
    else:
        running_s = profile.burst_deadline_s
        note = f"only {running:,} of {size.instances:,} RUNNING after {running_s:.0f} s"
    placed_s = (row["created"] - first).total_seconds() if row["created"] else running_s
    cpu_s = {g: cost.cpu(g) / 100 * cost.seconds for g in cost.groups}
    step = Step(
        f"{size.instances:,} instances ({size.workloads} x {size.replicas}) "
        f"on {size.hosts:,} hosts",
        size.instances,
        "instance",
        cost,
        per_unit={
            "control plane CPU ms/instance": 1000 * cpu_s["controlplane"] / size.instances,
            "Postgres CPU ms/instance": 1000 * cpu_s["postgres"] / size.instances,
            "RUNNING/s": running / max(1e-3, running_s),
        },
        extra={
            "running_per_s": running / max(1e-3, running_s),
            "placed_per_s": int(row["total"]) / max(1e-3, placed_s),
            "running": running,
            "seconds_to_running": running_s,
        },
    )
    print(f"  {step.size}: {step.extra['running_per_s']:,.0f}/s {note}", flush=True)
    return step, note
