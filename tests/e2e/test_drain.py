"""End-to-end: drains through keelctl against two control-plane replicas and four agents (real
processes, process driver); keelctl is given both replicas and reaches whichever answers.

A drain of a host running two workloads completes make-before-break, the budget checked while
it runs (sampled) and afterwards over the recorded history in order; a drain started without
`--wait` prints its id and how to watch it, a second drain returns the same operation,
`keelctl ops` lists it while it runs, `op watch` follows it through the replica that does not
lead, and `op cancel --uncordon` mid-drain leaves the moved instances where they are; a dry run
changes nothing.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import DatabaseFactory
from drains import (
    assert_budget_held_in_history,
    available,
    blockers,
    event_index,
    history,
    host,
    op,
    standby,
    two_replicas,
)
from harness import InstanceSampler, hold_for, wait_for
from replicas import TwoReplicas

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    """Two replicas and agents host-1..host-4; host-1 alone has disk=ssd (a workload pinned
    there has nowhere else to go)."""
    with two_replicas(tmp_path, database_factory, agent_args={1: ["--label", "disk=ssd"]}) as f:
        yield f


def _desired_state(url: str) -> list[Any]:
    """What a dry run must not change: operations, instances' desired state and placement,
    hosts' cordons, and the events (heartbeats move other columns all the time)."""

    async def read() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return [
                [tuple(r) for r in await conn.fetch(query)]
                for query in (
                    "SELECT * FROM operation ORDER BY id",
                    "SELECT id, host, desired, replaces FROM instance ORDER BY id",
                    "SELECT name, schedulable, cordon_reason, drained FROM host ORDER BY name",
                    "SELECT id, kind, object FROM event ORDER BY id",
                )
            ]
        finally:
            await conn.close()

    return asyncio.run(read())


def test_a_drain_of_two_workloads_moves_everything_make_before_break(fleet4: TwoReplicas) -> None:
    """Both workloads' instances leave host-1, each replacement ready before its instance
    stops. The budget (at least 3 of 4 ready) holds in every listing sampled while it runs and
    at every point of the recorded history, rebuilt from the instances' own ready/not-ready
    events in order. The operation SUCCEEDED, the host is left cordoned and empty."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("web", replicas=4, min_ready="500ms"))
    fleet.apply_ok(fleet.manifest("api", replicas=4, min_ready="500ms", max_surge=2))
    before = fleet.wait_running("web", 4) + fleet.wait_running("api", 4)
    moving = sorted(i.id for i in before if i.host == "host-1")
    on_host = Counter(i.workload for i in before if i.host == "host-1")
    assert on_host["web"] >= 1 and on_host["api"] >= 1, on_host

    with InstanceSampler(standby(fleet)) as sampler:
        sampler.start()
        result = fleet.keelctl(
            "drain", "host-1", "--reason", "kernel upgrade", "--wait", timeout=180
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout and "runbooks/cordon-and-drain.md" in result.stdout
    assert not sampler.errors and len(sampler.samples) > 10
    for sample in sampler.samples:
        # max_unavailable 1 of 4: at least 3 of each ready at every moment seen.
        assert available(sample, "web") >= 3, sample
        assert available(sample, "api") >= 3, sample
    final = fleet.wait_running("web", 4) + fleet.wait_running("api", 4)
    assert not [i for i in final if i.host == "host-1"]
    assert not host(fleet, "host-1").schedulable
    [done] = fleet.keelctl_json("ops", "--all")["operations"]
    assert done["state"] == "SUCCEEDED" and done["progress"]["remaining"] == 0
    assert done["progress"]["moved"] == len(moving)

    # The history, in order: at every point at least 3 of each ready; each instance that left
    # had exactly one replacement, which became ready before the instance stopped being so.
    events = history(fleet)
    assert_budget_held_in_history(events, done["id"], {"web": (4, 3), "api": (4, 3)})
    replacement = {i.raw["replaces"]: i.id for i in final if i.raw.get("replaces")}
    assert sorted(replacement) == moving
    for old, new in replacement.items():
        assert event_index(events, new, "InstanceReady") < event_index(
            events, old, "InstanceNotReady"
        ), f"{old} stopped serving before its replacement {new} was ready"

    # The leader's drain metrics: one drain finished on time, its moves, nothing left.
    leader = wait_for(fleet.leader, timeout=30, message="a leading replica")
    m = wait_for(
        lambda: (
            (got := fleet.replica_metrics(leader))
            and got.get('keel_operations{kind="drain",state="SUCCEEDED"}') == 1
            and got
        ),
        timeout=15,
        message="keel_operations to count the drain",
    )
    assert m['keel_drain_duration_seconds_count{result="succeeded"}'] == 1
    assert m['keel_drain_moves_total{result="replaced"}'] == len(moving)
    assert m["keel_drain_remaining_instances"] == 0


def test_cancel_mid_drain_with_uncordon_leaves_the_moved_instances_where_they_are(
    fleet4: TwoReplicas,
) -> None:
    """Started without --wait, the drain prints its id and how to watch it; a second drain
    returns it; `keelctl ops` lists it while it runs; `op watch` through the replica that does
    not lead follows it, as through the leader. Cancelled with --uncordon once web has moved
    and the pinned instance blocks: CANCELLED, host-1 schedulable again, the moved instances
    stay where they are and the pinned one keeps running; each watch ends with exit 1; `ops`
    lists nothing running."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("web", replicas=8, min_ready="500ms"))
    # Pinned to host-1 by its selector: no host can take a replacement, the drain stays open.
    fleet.apply_ok(fleet.manifest("pinned", replicas=1, selector={"disk": "ssd"}))
    fleet.wait_running("web", 8)
    [pinned] = fleet.wait_running("pinned", 1)
    web_moving = {i.id for i in fleet.instances("web") if i.host == "host-1"}
    assert web_moving

    text = fleet.keelctl_ok("drain", "host-1").stdout
    m = re.search(r"^drain (\S+) started: host-1 cordoned", text, re.M)
    assert m is not None, text
    op_id = m.group(1)
    assert f"watch it:  keelctl op watch {op_id}" in text
    assert f"cancel it: keelctl op cancel {op_id}" in text
    # Watched through each replica: the one that leads and the one that relays.
    leader = wait_for(fleet.leader, timeout=30, message="a leading replica")
    watched: dict[str, subprocess.CompletedProcess[str]] = {}

    def watch(address: str) -> None:
        watched[address] = fleet.keelctl("op", "watch", op_id, address=address, timeout=180)

    watchers = [threading.Thread(target=watch, args=(a,), name=a) for a in fleet.replicas]
    for w in watchers:
        w.start()
    try:
        again = fleet.keelctl_json("drain", "host-1")
        assert again["operation"]["id"] == op_id and not again.get("created", False)
        running = fleet.keelctl_json("ops")["operations"]
        assert [(o["id"], o["state"]) for o in running] == [(op_id, "RUNNING")]
        # Mid-drain: every web instance moved, the pinned one blocked.
        wait_for(
            lambda: op(fleet, op_id)["progress"].get("moved") == len(web_moving),
            timeout=90,
            message="every web instance moved",
        )
        [blocker] = blockers(fleet, op_id).values()
        assert (blocker["instance"], blocker["reason"]) == (pinned.id, "NO_CAPACITY")
        assert "disk=ssd" in blocker["message"]
        web = {i.id: (i.host, i.pid) for i in fleet.wait_running("web", 8)}
        assert "host-1" not in {h for h, _ in web.values()}

        cancelled = fleet.keelctl_ok("op", "cancel", op_id, "--uncordon")
        assert f"{op_id} CANCELLED" in cancelled.stdout
    finally:
        for w in watchers:
            w.join(timeout=180)
    assert host(fleet, "host-1").schedulable
    assert sorted(watched) == sorted(fleet.replicas) and leader in watched
    for address, seen in watched.items():
        assert seen.returncode == 1, f"through {address}: {seen.stdout}{seen.stderr}"
        # A line per change while it ran, up to every web instance moved, then how it ended.
        assert f"{op_id} RUNNING: moved {len(web_moving)}/" in seen.stdout, seen.stdout
        assert f"{op_id} CANCELLED" in seen.stdout, seen.stdout
    # Cancelling again changes nothing; only running operations are listed without --all.
    fleet.keelctl_ok("op", "cancel", op_id)
    assert fleet.keelctl_json("ops").get("operations", []) == []
    [listed] = fleet.keelctl_json("ops", "--all")["operations"]
    assert (listed["id"], listed["state"]) == (op_id, "CANCELLED")

    # Nothing moves back: the same web instances on the same hosts with the same processes,
    # and the pinned instance still runs on host-1.
    def unchanged() -> bool:
        now = {i.id: (i.host, i.pid) for i in fleet.instances("web") if i.serving}
        [still] = fleet.instances("pinned")
        return now == web and (still.id, still.pid, still.serving) == (pinned.id, pinned.pid, True)

    hold_for(unchanged, duration=3, interval=0.5, message="the instances as the cancel left them")


def test_a_dry_run_changes_nothing_and_says_where_each_instance_would_go(
    fleet4: TwoReplicas,
) -> None:
    """--dry-run: the database compared before and after; every instance on host-1 has a move
    to another host, and an estimate."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("web", replicas=4))
    fleet.wait_running("web", 4)
    assert fleet.database_url is not None
    before = _desired_state(fleet.database_url)
    plan = fleet.keelctl_json("drain", "host-1", "--dry-run")
    text = fleet.keelctl_ok("drain", "host-1", "--dry-run").stdout
    assert _desired_state(fleet.database_url) == before
    on_host = {i.id for i in fleet.instances("web") if i.host == "host-1"}
    moves = plan.get("moves", [])
    assert {m["instance"] for m in moves} == on_host
    assert all(m["target"] not in ("", "host-1") for m in moves)
    assert plan["eta_s"] > 0
    assert "nothing was changed" in text and "Estimate:" in text
