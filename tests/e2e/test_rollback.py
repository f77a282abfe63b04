"""End-to-end: automatic rollback and progress deadlines, with real processes (process driver).

Revision 1 good (3 replicas, max_unavailable 1, max_surge 1), then revision 2 crashing at start
(it writes a line to stderr and exits 1) with `rollout: {auto_rollback: true}`: the fleet
returns to revision 1's spec, the revision-1 instances that still run keep their pids
throughout, the budget holds in every listing sampled, and the rollback record names CRASH_LOOP
with the stderr line (in `keelctl events` and in the revision's row). Then a revision that never
gets ready fails with PROGRESS_DEADLINE and, without auto_rollback, holds.

The first test prints the figures of the resolving note: from the crashing revision's first exit
(the command stamps it into a file) to the rollback decision and to the fleet being back on the
good spec, and the pids kept versus restarted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from harness import Fleet, InstanceSampler, hold_for, wait_for
from views import InstanceView

pytestmark = pytest.mark.e2e

STDERR_LINE = "boom: cannot read /etc/web/config.yaml"
# Exits 1 at once, after stamping the time of its exit into the test directory (the figures'
# start) and writing a line to stderr.
CRASH = (
    "import sys, time\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(f'{time.time()}\\n')\n"
    f"sys.stderr.write({STDERR_LINE!r} + '\\n')\n"
    "sys.exit(1)\n"
)


def _db(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(read())


def _workload_stuck(fleet: Fleet) -> dict[str, Any] | None:
    objects = fleet.keelctl_json("stuck").get("objects", [])
    found: dict[str, Any] | None = next(
        (o["stuck"] for o in objects if o["object"] == "workload/web"), None
    )
    return found


def _revisions(fleet: Fleet) -> dict[int, asyncpg.Record]:
    assert fleet.database_url
    rows = _db(fleet.database_url, "SELECT * FROM workload_revision WHERE workload = 'web'")
    return {r["revision"]: r for r in rows}


def _record(revision: asyncpg.Record) -> dict[str, Any]:
    """The revision's failure record (jsonb, as text: a bare connection decodes no JSON)."""
    record: dict[str, Any] = json.loads(revision["failure"])
    return record


class TimedSampler(InstanceSampler):
    """The harness's sampler, each listing kept with the wall-clock time it was taken."""

    def __init__(self, address: str, workload: str) -> None:
        super().__init__(address, workload)
        self.timed: list[tuple[float, list[InstanceView]]] = []
        self._lock = threading.Lock()

    def sample(self) -> list[InstanceView]:
        got = super().sample()
        with self._lock:
            self.timed.append((time.time(), got))
        return got


@pytest.fixture
def sampled(fleet: Fleet) -> Iterator[TimedSampler]:
    sampler = TimedSampler(fleet.address, "web")
    try:
        yield sampler
    finally:
        sampler.close()


def _ready(sample: list[InstanceView]) -> int:
    return sum(1 for i in sample if i.desired == "RUNNING" and i.serving)


@pytest.mark.parametrize("health", [True, False], ids=["health-check", "no-health-check"])
def test_a_crashing_revision_is_rolled_back_keeping_the_good_instances(
    fleet: Fleet, sampled: TimedSampler, health: bool
) -> None:
    """Revision 2 crash-loops: Keel returns to revision 1's spec; the revision-1 instances still
    running keep their pids in every listing; at least 2 of 3 ready in every listing; the
    record and the event name CRASH_LOOP with the stderr line. With a health check (a tcp
    check on its port that never passes) or without one: then the agent counts each first
    start ready at once, and only settling (a new instance lets an old one go once it has
    stayed ready for min_ready) keeps the rollout from running through the fleet in the
    moment before the first exit is reported."""
    fleet.apply_ok(fleet.manifest("web", replicas=3, max_unavailable=1, max_surge=1, health=health))
    good = {i.id: i.pid for i in fleet.wait_running("web", 3, generation=1)}
    exits = fleet.root / "crash-exits"
    crashing = fleet.manifest(
        "web",
        replicas=3,
        max_unavailable=1,
        max_surge=1,
        health=health,
        command=[sys.executable, "-c", CRASH, str(exits)],
        rollout={"auto_rollback": True},
    )

    sampled.start()
    fleet.apply_ok(crashing)

    def back() -> list[InstanceView] | None:
        revs = _revisions(fleet)
        if revs.get(2) is None or revs[2]["state"] != "ROLLED_BACK":
            return None
        insts = fleet.instances("web")
        live = [i for i in insts if i.desired != "REMOVED"]
        if len(live) != 3 or any(i.generation == 2 for i in insts):
            return None
        return live if all(i.serving and i.generation in (1, 3) for i in live) else None

    final = wait_for(back, timeout=90, interval=0.2, message="web back on revision 1's spec")
    back_at = _first_back(sampled)
    sampled.close()

    # The budget: never fewer than replicas - max_unavailable ready, in any listing.
    assert not sampled.errors and len(sampled.timed) > 20
    low = min(_ready(s) for _, s in sampled.timed)
    assert low >= 2, f"only {low} of 3 ready at some point"
    # The good instances that were not replaced kept their pids in every listing and at the end.
    for _, sample in sampled.timed:
        for i in sample:
            if i.id in good and i.pid:
                assert i.pid == good[i.id], f"{i.id} restarted: pid {good[i.id]} -> {i.pid}"
    kept = {i.id for i in final if i.id in good and i.pid == good[i.id]}
    restarted = [i for i in final if i.id not in good]
    assert len(kept) >= 2 and len(kept) + len(restarted) == 3
    assert all(i.generation == 3 for i in restarted)

    # The record: CRASH_LOOP with the stderr line, in the revision's row and in the events.
    revs = _revisions(fleet)
    record = _record(revs[2])
    assert record["reason"] == "CRASH_LOOP" and record["rolled_back_to"] == 1
    assert record["runbook"] == "runbooks/rollout-failed.md"
    assert any(STDERR_LINE in e["message"] for e in record["evidence"]), record
    assert all(e["last_exit"] for e in record["evidence"]), record
    assert (revs[3]["same_as"], revs[3]["actor"]) == (1, "keel/rollout")
    events = fleet.keelctl_json("events", "--for", "workload/web")["events"]
    [rolled] = [e for e in events if e["kind"] == "RolloutRolledBack"]
    assert "CRASH_LOOP" in rolled["message"] and STDERR_LINE in rolled["message"], rolled
    assert rolled["actor"] == "keel/rollout"
    metrics = fleet.metrics()
    assert metrics['keel_rollbacks_total{reason="CRASH_LOOP"}'] == 1
    wait_for(
        lambda: fleet.metrics().get('keel_rollouts{state="ROLLED_BACK"}') == 1,
        timeout=15,
        message="keel_rollouts to count the rollback",
    )

    first_exit = float(exits.read_text().split()[0])
    decided_at = datetime.fromisoformat(record["at"]).timestamp()
    print(
        f"\nFIGURES process driver: first exit -> rollback decided {decided_at - first_exit:.2f}s; "
        f"first exit -> fleet back on revision 1's spec (3 ready, none of revision 2) "
        f"{back_at - first_exit:.2f}s; pids kept {len(kept)}, restarted {len(restarted)} "
        f"(the one max_unavailable let go before the failure)"
    )


def _first_back(sampler: TimedSampler) -> float:
    """When a listing first showed 3 ready instances of the good spec and none of revision 2,
    after one had shown revision 2."""
    seen_two = False
    for at, sample in sampler.timed:
        if any(i.generation == 2 for i in sample):
            seen_two = True
            continue
        live = [i for i in sample if i.desired != "REMOVED"]
        if seen_two and len(live) == 3 and all(i.serving and i.generation in (1, 3) for i in live):
            return at
    raise AssertionError("no listing showed the fleet back on the good spec")


def test_a_revision_that_never_gets_ready_fails_its_progress_deadline_and_holds(
    fleet: Fleet, sampled: TimedSampler
) -> None:
    """Its health check never passes: FAILED with PROGRESS_DEADLINE after 6 s without
    progress, the evidence naming its instances; without auto_rollback the rollout holds
    (paused as keel/rollout): the good instances left keep serving, their pids unchanged, never
    fewer than replicas - max_unavailable ready."""
    fleet.apply_ok(fleet.manifest("web", replicas=3, max_unavailable=1, max_surge=1))
    good = {i.id: i.pid for i in fleet.wait_running("web", 3, generation=1)}
    never = fleet.manifest(
        "web",
        replicas=3,
        max_unavailable=1,
        max_surge=1,
        env={"V": "2"},
        rollout={"progress_deadline": "6s"},
        deadline="300s",  # the stuck verdict comes later: the deadline fails it first
    )
    never["spec"]["health"] = {"exec": ["false"]}
    sampled.start()
    fleet.apply_ok(never)

    def failed() -> asyncpg.Record | None:
        rev = _revisions(fleet).get(2)
        return rev if rev is not None and rev["state"] == "FAILED" else None

    rev = wait_for(failed, timeout=60, interval=0.3, message="revision 2 FAILED")
    record = _record(rev)
    assert record["reason"] == "PROGRESS_DEADLINE", record
    assert "made no progress for 6s" in record["message"]
    assert record["evidence"] and all(
        e["instance"].startswith("web-2-") for e in record["evidence"]
    )
    assert record["next_command"] == "keelctl rollout undo web"
    [workload] = _db(
        fleet.database_url or "", "SELECT paused, paused_by FROM workload WHERE name = 'web'"
    )
    assert (workload["paused"], workload["paused_by"]) == (True, "keel/rollout")
    events = fleet.keelctl_json("events", "--for", "workload/web")["events"]
    assert any(e["kind"] == "RolloutFailed" and "PROGRESS_DEADLINE" in e["message"] for e in events)
    # `keelctl stuck` shows the hold at once as the workload's own line, with the reason and
    # the next command (not ROLLOUT_PAUSED an hour later).
    held = wait_for(lambda: _workload_stuck(fleet), timeout=15, message="workload/web stuck")
    assert held["reason"] == "ROLLOUT_FAILED", held
    assert "failed (PROGRESS_DEADLINE)" in held["message"], held
    assert held["next_command"] == "keelctl rollout undo web"

    # It holds: the good instances left stay as they are for a while.
    left = {i.id: i.pid for i in fleet.instances("web") if i.id in good and i.desired == "RUNNING"}
    assert len(left) >= 2

    def unchanged() -> bool:
        now = {i.id: i.pid for i in fleet.instances("web") if i.id in good}
        return all(now.get(k) == pid for k, pid in left.items())

    hold_for(unchanged, duration=4, interval=0.5, message="the good instances left unchanged")
    sampled.close()
    assert not sampled.errors
    low = min(_ready(s) for _, s in sampled.timed)
    assert low >= 2, f"only {low} of 3 ready at some point"
    wait_for(
        lambda: fleet.metrics().get('keel_rollouts{state="FAILED"}') == 1,
        timeout=15,
        message="keel_rollouts to count the failure",
    )
