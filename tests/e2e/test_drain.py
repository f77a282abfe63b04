"""End-to-end: drains through keelctl against a live fleet of real agents (process driver).

A drain of a host running two workloads completes make-before-break, the budget sampled while
it runs; a drain blocked by the budget says so while blocked and fails at its deadline with the
host still cordoned and the instance still running, and `--on-deadline force` stops it; a
second drain returns the same operation; cancel; a dry run changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import DatabaseFactory
from harness import Fleet, InstanceSampler, wait_for

pytestmark = pytest.mark.e2e

# Short waits, so blocked drains are judged within a test's time.
FAST = ["--drain-interval", "300ms", "--drain-blocked-after", "2s"]


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """A control plane and agents host-1..host-4, all hosts READY."""
    # host-1 alone has disk=ssd: a workload pinned there has nowhere else to go.
    args = {1: ["--label", "disk=ssd"]}
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=4, agent_args=args, controlplane_args=FAST) as f,
    ):
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


def _op(fleet: Fleet, op_id: str) -> dict[str, Any]:
    data: dict[str, Any] = fleet.keelctl_json("op", "get", op_id)
    return data


def _started(fleet: Fleet, *args: str) -> str:
    """Runs `keelctl drain ARGS -o json` and returns the operation's id."""
    data = fleet.keelctl_json("drain", *args)
    op_id: str = data["operation"]["id"]
    return op_id


def _available(instances: list[Any], workload: str) -> int:
    return sum(
        1 for i in instances if i.workload == workload and i.desired == "RUNNING" and i.serving
    )


def test_a_drain_of_two_workloads_moves_everything_make_before_break(fleet4: Fleet) -> None:
    """Both workloads' instances leave host-1, each replacement ready before its instance
    stops: no sample while it runs has fewer ready than the budget's floor; the operation
    SUCCEEDED, the host is left cordoned and empty."""
    fleet = fleet4
    # Spread over four hosts: host-1 holds one or two of each.
    fleet.apply_ok(fleet.manifest("web", replicas=4, min_ready="500ms"))
    fleet.apply_ok(fleet.manifest("api", replicas=4, min_ready="500ms", max_surge=2))
    fleet.wait_running("web", 4)
    fleet.wait_running("api", 4)
    on_host = Counter(i.workload for i in fleet.instances() if i.host == "host-1")
    assert on_host["web"] >= 1 and on_host["api"] >= 1, on_host

    with InstanceSampler(fleet.address) as sampler:
        sampler.start()
        result = fleet.keelctl("drain", "host-1", "--reason", "kernel upgrade", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout and "runbooks/cordon-and-drain.md" in result.stdout
    assert not sampler.errors
    for sample in sampler.samples:
        # max_unavailable 1 of 4: at least 3 of each ready at every moment seen.
        assert _available(sample, "web") >= 3, sample
        assert _available(sample, "api") >= 3, sample
    final = fleet.wait_running("web", 4) + fleet.wait_running("api", 4)
    assert not [i for i in final if i.host == "host-1"]
    host = next(h for h in fleet.hosts_status() if h.name == "host-1")
    assert not host.schedulable
    [op] = fleet.keelctl_json("ops", "--all")["operations"]
    assert op["state"] == "SUCCEEDED" and op["progress"]["remaining"] == 0
    assert op["progress"]["moved"] == on_host["web"] + on_host["api"]
    # The drain's metrics: one finished on time, its moves, nothing left running.
    m = wait_for(
        lambda: (
            (got := fleet.metrics())
            and got.get('keel_operations{kind="drain",state="SUCCEEDED"}') == 1
            and got
        ),
        timeout=10,
        message="keel_operations to count the drain",
    )
    assert m['keel_drain_duration_seconds_count{result="succeeded"}'] == 1
    assert m['keel_drain_moves_total{result="replaced"}'] == on_host["web"] + on_host["api"]
    assert m["keel_drain_remaining_instances"] == 0
    assert m["keel_leader"] == 1


def test_a_second_drain_returns_the_running_operation_and_cancel_stops_it(fleet4: Fleet) -> None:
    """Drain twice: one operation. Cancel: CANCELLED, the host still cordoned; uncordon makes
    it schedulable again."""
    fleet = fleet4
    # Pinned to host-1 by its selector: no host can take a replacement, the drain keeps running.
    fleet.apply_ok(fleet.manifest("pinned", replicas=1, selector={"disk": "ssd"}))
    fleet.wait_running("pinned", 1)
    first = _started(fleet, "host-1")
    second = fleet.keelctl_json("drain", "host-1")
    assert second["operation"]["id"] == first and not second.get("created", False)
    op = wait_for(
        lambda: (o := _op(fleet, first))["progress"].get("blockers") and o,
        message="the drain to report its blocker",
    )
    assert op["progress"]["blockers"][0]["reason"] == "NO_CAPACITY"
    assert "disk=ssd" in op["progress"]["blockers"][0]["message"]
    cancelled = fleet.keelctl_ok("op", "cancel", first)
    assert f"{first} CANCELLED" in cancelled.stdout
    assert not next(h for h in fleet.hosts_status() if h.name == "host-1").schedulable
    # Cancelling again changes nothing; uncordon through keelctl.
    fleet.keelctl_ok("op", "cancel", first)
    fleet.keelctl_ok("uncordon", "host-1")
    assert next(h for h in fleet.hosts_status() if h.name == "host-1").schedulable


def test_a_dry_run_changes_nothing_and_says_where_each_instance_would_go(fleet4: Fleet) -> None:
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


def test_a_drain_blocked_by_the_budget_fails_at_its_deadline_then_force_stops_it(
    fleet4: Fleet,
) -> None:
    """max_surge 0, max_unavailable 1, a replica elsewhere down (its host silent):
    BUDGET_EXHAUSTED while blocked (keelctl op get -o json), DRAIN_BLOCKED in keelctl stuck;
    FAILED at the deadline with the host cordoned and the instance running; a drain with
    --on-deadline force stops it."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("web", replicas=4, max_surge=0, max_unavailable=1))
    fleet.wait_running("web", 4)
    victim = next(i for i in fleet.instances("web") if i.host == "host-1")
    broken_host = next(i.host for i in fleet.instances("web") if i.host != "host-1")
    # One replica elsewhere down: its agent frozen, its host goes NOT_READY and the instance
    # there counts as unavailable.
    with fleet.freeze_agent(int(broken_host.split("-")[1])):
        wait_for(
            lambda: next(h for h in fleet.hosts_status() if h.name == broken_host).state != "READY",
            timeout=30,
            message=f"{broken_host} NOT_READY",
        )
        op_id = _started(fleet, "host-1", "--deadline", "8s")
        blocked = wait_for(
            lambda: (o := _op(fleet, op_id))["progress"].get("blockers") and o,
            message="the blocker",
        )
        blocker = blocked["progress"]["blockers"][0]
        assert (blocker["instance"], blocker["reason"]) == (victim.id, "BUDGET_EXHAUSTED")
        assert blocker["runbook"] == "runbooks/drain/budget-exhausted.md"
        assert blocker["next_command"] == "keelctl describe workload web"
        assert "down now:" in blocker["message"] and broken_host in blocker["message"]
        # Blocked past --drain-blocked-after (2s here): a stuck object with its next command.
        stuck = wait_for(
            lambda: [
                o
                for o in fleet.keelctl_json("stuck").get("objects", [])
                if o["object"] == f"operation/{op_id}"
            ],
            timeout=20,
            message="DRAIN_BLOCKED in keelctl stuck",
        )
        assert stuck[0]["stuck"]["reason"] == "DRAIN_BLOCKED"
        assert stuck[0]["stuck"]["next_command"] == f"keelctl op get {op_id}"
        failed = wait_for(
            lambda: (o := _op(fleet, op_id))["state"] == "FAILED" and o,
            timeout=30,
            message="FAILED at the deadline",
        )
        assert "deadline" in failed["message"]
        assert not next(h for h in fleet.hosts_status() if h.name == "host-1").schedulable
        still = {i.id: i for i in fleet.instances("web")}
        assert still[victim.id].desired == "RUNNING" and still[victim.id].serving
        # Force: the remaining instance is stopped at the deadline.
        forced = fleet.keelctl(
            "drain", "host-1", "--deadline", "2s", "--on-deadline", "force", "--wait"
        )
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert victim.id not in {i.id for i in fleet.instances("web")}
        events = fleet.keelctl_json("events")["events"]
        assert any(e["kind"] == "DrainForced" for e in events), events
        assert json.dumps(events)  # the history is readable


def test_a_drain_blocked_for_capacity_fails_at_its_deadline_leaving_the_host_cordoned(
    fleet4: Fleet,
) -> None:
    """A workload pinned to host-1 by its selector: NO_CAPACITY naming the selector while
    blocked; FAILED at the deadline (exit 1 with --wait), the host cordoned, the instance
    running; the result names the runbook and the blocker."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("pinned", replicas=1, selector={"disk": "ssd"}))
    [pinned] = fleet.wait_running("pinned", 1)
    result = fleet.keelctl("drain", "host-1", "--deadline", "4s", "--wait", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout and "runbooks/cordon-and-drain.md" in result.stdout
    assert f"{pinned.id} NO_CAPACITY" in result.stdout
    assert "(next: keelctl get hosts)" in result.stdout
    [op] = fleet.keelctl_json("ops", "--all")["operations"]
    assert op["state"] == "FAILED"
    assert op["progress"]["blockers"][0]["reason"] == "NO_CAPACITY"
    [still] = fleet.instances("pinned")
    assert (still.id, still.desired, still.serving) == (pinned.id, "RUNNING", True)
    assert not next(h for h in fleet.hosts_status() if h.name == "host-1").schedulable
