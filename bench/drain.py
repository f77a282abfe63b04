"""Scenario 4: the drain of one host running N instances (stop grace 0), with unlimited
parallelism and with max-parallel 10, beside the dry run's estimate.

At each size and parallelism, a fresh stage: the hollow hosts connected and READY; every host
but the first cordoned in one call, N single-replica workloads applied (`min_ready` and
`stop_grace` 0, the default budget) so they all land on the first host, the others
uncordoned; then the dry run (`PlanDrain`: its estimate), then `Drain` and a wait for the
operation to end. The time is the operation's own, from `started_at` to `finished_at`
(database time): every replacement started and reported ready elsewhere, every old instance
stopped and its removal confirmed by the (hollow) agent. One replica per workload, so each
instance's budget lets it move at once and what is measured is the drain's own pace (ten
replicas of one workload on the host would move one at a time, as max_surge 1 says).
"""

from __future__ import annotations

import asyncio
import json
import time

from bench.changes import SPEC
from bench.fleet import Run, Stage
from bench.procs import STEP_FAILURES, BenchError, first_line
from bench.profiles import ISSUE, Profile, size_text
from bench.report import Figure, Outcome, Step, Target
from keel.v1 import fleet_pb2

TITLE = "drain of a host with 110 instances"
ANCHOR = "Nomad's default migrate takes ~12 s per allocation"
POLL_S = 0.1
APPLIES_IN_FLIGHT = 16


def _manifest(name: str, replicas: int) -> str:
    spec = {**SPEC, "stop_grace": "0s", "min_ready": "0s"}
    return json.dumps({"name": name, "replicas": replicas, "spec": spec})


async def run(run: Run, profile: Profile) -> Outcome:
    outcome = Outcome(4, TITLE)
    results: dict[tuple[int, int], tuple[float, float]] = {}
    for instances in profile.drain:
        for parallel in profile.drain_parallel:
            try:
                step, seconds, estimate = await _size(run, profile, instances, parallel)
            except STEP_FAILURES as exc:
                outcome.fail(f"at {instances} instances: {first_line(exc)}")
                return outcome
            outcome.steps.append(step)
            results[(instances, parallel)] = (seconds, estimate)
    largest = profile.drain[-1]
    shown = size_text(largest, ISSUE.drain[-1], "instances")
    targets = {0: Target("< 2 s", 2.0), 10: Target("< 5 s", 5.0)}
    for parallel in profile.drain_parallel:
        seconds, _ = results[(largest, parallel)]
        name = f"max-parallel {parallel}" if parallel else "unlimited parallelism"
        outcome.figures.append(
            Figure(
                f"drain, {name}", seconds, "s", shown, targets.get(parallel),
                ANCHOR if not parallel else "",
            )
        )  # fmt: skip
    for parallel in profile.drain_parallel:
        _, estimate = results[(largest, parallel)]
        name = f"max-parallel {parallel}" if parallel else "unlimited"
        outcome.figures.append(Figure(f"dry-run estimate, {name}", estimate, "s", shown))
    outcome.notes.append(
        "times: " + "; ".join(
            f"{n} instances, {'max-parallel ' + str(p) if p else 'unlimited'}: {s:.2f} s "
            f"(dry run said {e:.1f} s)"
            for (n, p), (s, e) in sorted(results.items())
        )
    )  # fmt: skip
    return outcome


async def _size(
    run: Run, profile: Profile, instances: int, parallel: int
) -> tuple[Step, float, float]:
    hosts = max(2, profile.drain_hosts)
    label = f"{instances} instances, {'max-parallel ' + str(parallel) if parallel else 'unlimited'}"
    async with Stage(run, f"drain-{instances}-{parallel or 'all'}") as stage:
        fleet = stage.hollow(hosts, heartbeat_s=profile.heartbeat_s)
        await stage.hosts_ready(hosts, within_s=profile.setup_timeout_s)
        target, others = fleet.hosts[0], fleet.hosts[1:]
        await stage.api.Cordon(fleet_pb2.CordonRequest(hosts=others), timeout=30)
        gate = asyncio.Semaphore(APPLIES_IN_FLIGHT)

        async def apply(n: int) -> None:
            async with gate:
                body = _manifest(f"drain-{n:04d}", 1)
                request = fleet_pb2.ApplyWorkloadRequest(manifest_json=body)
                await stage.api.ApplyWorkload(request, timeout=60)

        await asyncio.gather(*(apply(n) for n in range(instances)))
        await stage.running(instances, within_s=profile.setup_timeout_s, what="instances placed")
        await stage.api.Uncordon(fleet_pb2.UncordonRequest(hosts=others), timeout=30)
        plan = await stage.api.PlanDrain(
            fleet_pb2.PlanDrainRequest(hosts=[target], max_parallel=parallel), timeout=60
        )
        window = stage.window()
        reply = await stage.api.Drain(
            fleet_pb2.DrainRequest(hosts=[target], max_parallel=parallel, reason="bench"),
            timeout=60,
        )
        op_id = reply.operation.id
        deadline = time.monotonic() + profile.setup_timeout_s
        op = reply.operation
        while op.state in ("PENDING", "RUNNING"):
            if time.monotonic() > deadline:
                raise BenchError(f"the drain of {label} did not end within the setup timeout")
            await asyncio.sleep(POLL_S)
            window.sample()
            stage.children.check_alive()
            op = await stage.api.GetOperation(fleet_pb2.GetOperationRequest(id=op_id), timeout=30)
        cost = window.close()
    if op.state != "SUCCEEDED":
        raise BenchError(f"the drain of {label} ended {op.state}: {op.message}")
    seconds = (op.finished_at.ToDatetime() - op.started_at.ToDatetime()).total_seconds()
    step = Step(
        label,
        instances,
        "instance",
        cost,
        per_unit={"drain ms/instance": 1000 * seconds / instances},
        extra={"seconds": seconds, "estimate_s": plan.eta_s, "parallel": parallel},
    )
    print(f"  {label}: {seconds:.2f} s (dry run: {plan.eta_s:.1f} s)", flush=True)
    return step, seconds, plan.eta_s
