"""Scenario 7: what one real agent costs its host, with the process driver and idle instances.

One stage: a control plane and one real `keel-agent` (process driver, default settings), and a
workload of idle `sleep` processes scaled through the profile's sizes. At each size, once every
instance is RUNNING and the starts are over, a window measures the agent process alone (not its
workloads): CPU in % of one core, and RSS. The target is set at 50 instances. The workloads
carry the stage's directory in their environment, so the stage's teardown finds and ends them
(they outlive their agent by design).
"""

from __future__ import annotations

import asyncio
import time

from bench import auth
from bench.changes import manifest
from bench.fleet import Run, Stage
from bench.procs import BIN, STEP_FAILURES, first_line
from bench.profiles import Profile
from bench.report import Figure, Outcome, Step, Target
from keel.v1 import fleet_pb2

TITLE = "one real agent, idle instances"
ANCHOR = "kubelet ~100 MB"
TARGET_AT = 50  # instances: the size the issue sets the target for
HOST = "real-1"
SETTLE_S = 5.0  # after the last start: one heartbeat interval, the starts' reports sent
SAMPLE_S = 1.0


async def run(run: Run, profile: Profile) -> Outcome:
    outcome = Outcome(7, TITLE)
    async with Stage(run, "agent") as stage:
        cp = stage.controlplanes[0]
        argv = [str(BIN / "keel-agent"), "--controlplane", cp.grpc, "--host", HOST,
                "--state-dir", str(stage.dir / "agent"), "--driver", "process",
                "--metrics", "off", "--log-format", "json", *auth.join_args(cp.grpc)]  # fmt: skip
        stage.extra["agent"] = stage.children.start("agent", argv)
        await stage.hosts_ready(1, within_s=profile.setup_timeout_s)
        for n in profile.agent_instances:
            try:
                outcome.steps.append(await _size(stage, n, profile))
            except STEP_FAILURES as exc:
                outcome.fail(f"at {n} instances: {first_line(exc)}")
                break
    if not outcome.steps:
        return outcome
    at = next((s for s in outcome.steps if s.units == TARGET_AT), outcome.steps[-1])
    biggest = outcome.steps[-1]
    size = f"{at.units:.0f} instances" + ("" if at.units == TARGET_AT else f" (issue: {TARGET_AT})")
    assert at.cost is not None and biggest.cost is not None
    outcome.figures = [
        Figure("agent CPU", at.cost.cpu("agent"), "% of a core", size,
               Target("< 1% of one core at 50", 1.0), ANCHOR),
        Figure("agent RSS", at.cost.groups["agent"].rss_max_mib, "MiB", size,
               Target("< 64 MiB at 50", 64.0), ANCHOR),
    ]  # fmt: skip
    if biggest is not at:
        big = f"{biggest.units:.0f} instances"
        outcome.figures += [
            Figure("agent CPU", biggest.cost.cpu("agent"), "% of a core", big),
            Figure("agent RSS", biggest.cost.groups["agent"].rss_max_mib, "MiB", big),
        ]
    return outcome


async def _size(stage: Stage, n: int, profile: Profile) -> Step:
    """Scales the idle workload to `n` and measures the agent over a window."""
    body = manifest("idle", n, env={"BENCH_STAGE": str(stage.dir)}, resources=False)
    await stage.api.ApplyWorkload(fleet_pb2.ApplyWorkloadRequest(manifest_json=body), timeout=60)
    await stage.running(n, within_s=profile.setup_timeout_s, what=f"{n} sleeps running")
    await asyncio.sleep(min(SETTLE_S, profile.agent_window_s))
    window = stage.window()
    end = time.monotonic() + profile.agent_window_s
    while time.monotonic() < end:
        await asyncio.sleep(min(SAMPLE_S, max(0.0, end - time.monotonic())))
        window.sample()
        stage.children.check_alive()
    cost = window.close()
    agent = cost.groups["agent"]
    print(f"  {n} instances: {agent.cpu_pct:.2f}% of a core, {agent.rss_max_mib:.0f} MiB")
    return Step(
        f"{n} instances",
        n,
        "instance",
        cost,
        per_unit={
            "agent %": agent.cpu_pct,
            "agent MiB": agent.rss_max_mib,
            "agent %/instance": agent.cpu_pct / n,
        },
    )
