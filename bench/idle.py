"""Scenario 1: many agents connected and heartbeating, nothing else happening.

One control plane with default settings; the hollow fleet grows through the profile's sizes
(each agent heartbeats every 10 s, the agent's default, in every profile but `quick` and
`tiny`). At each size, once every host is connected and READY and one heartbeat interval has
passed, a window measures the control plane's CPU and RSS, Postgres' CPU and transactions, and
the fleet's own CPU. Throughout, the hosts not READY are counted every second, and at the end
the NOT_READY / UNKNOWN transitions recorded as events: the target is that no host ever leaves
READY. The control plane's own metrics say whether it judged Postgres unavailable meanwhile (its
probe waits for a pooled connection too) and how many heartbeats it dropped for that. "Commits
per heartbeat" says whether heartbeats are written in batches (one statement per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.fleet import HollowFleet, Run, Stage
from bench.procs import STEP_FAILURES, first_line
from bench.profiles import ISSUE, Profile, size_text
from bench.report import Figure, Outcome, Step, Target
from bench.slis import scrape

TITLE = "idle agents with heartbeats"
ANCHOR = "Kubernetes: 5,000 nodes per cluster; kubemark ~10 hollow nodes per core"
SAMPLE_S = 1.0
DROPPED = "keel_heartbeats_dropped_total"


async def run(run: Run, profile: Profile) -> Outcome:
    outcome = Outcome(1, TITLE)
    issue = ISSUE.idle_agents[-1]
    worst_not_ready, transitions = 0, 0
    async with Stage(run, "idle") as stage:
        fleet = stage.hollow(0, heartbeat_s=profile.heartbeat_s)
        for agents in profile.idle_agents:
            try:
                step, worst = await _size(stage, fleet, agents, profile)
            except STEP_FAILURES as exc:
                outcome.fail(f"at {agents:,} agents: {first_line(exc)}")
                break
            outcome.steps.append(step)
            worst_not_ready = max(worst_not_ready, worst)
        with contextlib.suppress(*STEP_FAILURES):
            transitions = await stage.db.fetchval(
                "SELECT count(*) FROM event WHERE kind IN ('HostNotReady', 'HostUnknown')"
            )
    if not outcome.steps:
        return outcome
    last = outcome.steps[-1]
    assert last.cost is not None
    size = size_text(last.units, issue, "agents")
    outcome.figures = [
        Figure(
            "control plane CPU",
            last.cost.cpu("controlplane"),
            "% of a core",
            size,
            Target("< 25% of one core at 5,000", 25.0),
            ANCHOR,
        ),
        Figure(
            "control plane RSS",
            last.cost.groups["controlplane"].rss_max_mib,
            "MiB",
            size,
            Target("< 1 GiB at 5,000", 1024.0),
            ANCHOR,
        ),
        Figure(
            "hosts ever not READY",
            float(max(worst_not_ready, int(transitions))),
            "",
            f"whole run, up to {size}",
            Target("0", 1.0),
            ANCHOR,
            note=f"{int(transitions)} NOT_READY/UNKNOWN events",
        ),
        Figure(
            "Postgres commits per heartbeat",
            last.per_unit["commits/heartbeat"],
            "",
            size,
            Target("< 1 (heartbeats written in batches)", 1.0),
            ANCHOR,
        ),
        Figure(
            "heartbeats dropped (database unavailable to the control plane)",
            last.extra["heartbeats_dropped"],
            "",
            size,
            note=f"keel_database_up 0 in {last.extra['database_down_samples']:.0f} of "
            f"{last.extra['samples']:.0f} samples",
        ),
        Figure("Postgres CPU", last.cost.cpu("postgres"), "% of a core", size),
        Figure("hollow fleet CPU", last.cost.cpu("hollow"), "% of a core", size),
    ]
    return outcome


async def _size(
    stage: Stage, fleet: HollowFleet, agents: int, profile: Profile
) -> tuple[Step, int]:
    """Grows the fleet to `agents` and measures a window; the step and the most hosts seen not
    READY meanwhile."""
    fleet.grow(agents)
    await stage.hosts_ready(agents, within_s=profile.setup_timeout_s)
    # One heartbeat interval: every agent has heartbeated since it connected, and the
    # connection storm (registrations, first assignments) is over.
    await asyncio.sleep(profile.idle_settle_s)
    metrics = stage.controlplanes[0].metrics
    beats, commits = fleet.stats().counts["heartbeats"], await stage.commits()
    dropped = (await asyncio.to_thread(scrape, metrics)).get(DROPPED, 0.0)
    window = stage.window()
    worst, samples, down = 0, 0, 0
    end = time.monotonic() + profile.idle_window_s
    while time.monotonic() < end:
        await asyncio.sleep(min(SAMPLE_S, max(0.0, end - time.monotonic())))
        window.sample()
        stage.children.check_alive()
        worst = max(worst, await _not_ready(stage))
        # The control plane's own verdict on Postgres: 0 while its probe (a pooled connection
        # and SELECT 1 within --db-probe-timeout) fails, FleetService NOT_SERVING meanwhile.
        samples += 1
        down += (await asyncio.to_thread(scrape, metrics)).get("keel_database_up", 1.0) == 0
    cost = window.close()
    beats = fleet.stats().counts["heartbeats"] - beats
    commits = await stage.commits() - commits
    dropped = (await asyncio.to_thread(scrape, metrics)).get(DROPPED, 0.0) - dropped
    per_k = 1000 / agents
    step = Step(
        size_text(agents, agents, "agents"),
        agents,
        "agent",
        cost,
        per_unit={
            "control plane %/1k agents": cost.cpu("controlplane") * per_k,
            "Postgres %/1k agents": cost.cpu("postgres") * per_k,
            "hollow %/1k agents": cost.cpu("hollow") * per_k,
            "commits/heartbeat": commits / max(1, beats),
        },
        extra={
            "heartbeats_per_s": beats / cost.seconds,
            "commits_per_s": commits / cost.seconds,
            "controlplane_rss_mib": cost.groups["controlplane"].rss_max_mib,
            "heartbeats_dropped": dropped,
            "database_down_samples": float(down),
            "samples": float(samples),
        },
    )
    print(
        f"  {agents:,} agents: control plane {cost.cpu('controlplane'):.1f}% of a core", flush=True
    )
    return step, worst


async def _not_ready(stage: Stage) -> int:
    got = await stage.db.fetchval("SELECT count(*) FROM host WHERE state <> 'READY'")
    return int(got)
