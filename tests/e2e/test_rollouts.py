"""End-to-end: rollouts as an operator drives them, down to the real processes.

`rollout undo`, and applying an earlier revision's file again, keep the instances already
running the spec they return to (same pids) and replace only the others; a paused rollout
holds mid-way (sampled: no old instance removed while paused), is shown by `keelctl stuck`
as ROLLOUT_PAUSED (never ROLLOUT_BLOCKED) past --rollout-paused-after, and finishes once
resumed, `rollout status --wait` exiting 0; `rollout history` shows the actor and the
--reason of every revision.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from harness import Fleet, InstanceSampler, hold_for, pids_of, wait_for
from views import InstanceView

pytestmark = pytest.mark.e2e

# A revision that never becomes ready: its process exits at once, with a line on stderr.
CRASH = "import sys; print('keel-e2e: bad config', file=sys.stderr); sys.exit(3)"
# The test server, started only after this many seconds: a revision slow to become ready.
SLOW = (
    "import runpy, sys, time; time.sleep(float(sys.argv[2])); "
    "sys.argv = [sys.argv[1], sys.argv[3]]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _good(fleet: Fleet, greeting: str, **kw: Any) -> dict[str, Any]:
    return fleet.manifest("web", replicas=3, env={"GREETING": greeting}, **kw)


def _crashing(fleet: Fleet) -> dict[str, Any]:
    return fleet.manifest("web", replicas=3, command=[sys.executable, "-c", CRASH])


def _live(instances: list[InstanceView]) -> list[InstanceView]:
    return [i for i in instances if i.desired != "REMOVED"]


def _held_at_the_budget(fleet: Fleet, good: int, bad: int) -> dict[str, int]:
    """Waits until the crashing revision `bad` is held by the budget (max_unavailable 1): two
    instances of revision `good` still serve, and returns them (id -> pid)."""

    def held() -> dict[str, int] | None:
        live = _live(fleet.instances_rpc("web"))
        kept = [i for i in live if i.generation == good]
        if len(kept) != 2 or not all(i.serving for i in kept):
            return None
        if not any(i.generation == bad for i in live):
            return None
        return pids_of(kept)

    kept = wait_for(held, timeout=60, interval=0.2, message="the bad revision held at the budget")
    # Long enough for a wrongly continued rollout to take another one down.
    hold_for(lambda: held() == kept, duration=2, message="the budget holding two good instances")
    return kept


def _back_on(fleet: Fleet, kept: dict[str, int], *, generation: int) -> list[InstanceView]:
    """Waits until three instances serve: the ones kept, with their pids, and one new one of
    `generation`; asserts the kept ones were never removed meanwhile (sampled)."""
    with InstanceSampler(fleet.address, "web") as sampler:
        sampler.start()

        def back() -> list[InstanceView] | None:
            live = _live(sampler.latest() or [])
            if len(live) != 3 or not all(i.serving for i in live):
                return None
            return live

        live = wait_for(back, timeout=60, interval=0.1, message="three serving instances")
    for sample in sampler.samples:
        seen = {i.id: i for i in sample}
        for inst_id, pid in kept.items():
            inst = seen.get(inst_id)
            assert inst is not None and inst.desired == "RUNNING", f"{inst_id} was removed"
            assert inst.pid in (0, pid), f"{inst_id} restarted: pid {inst.pid}, was {pid}"
    assert {i.id: i.pid for i in live if i.id in kept} == kept, "a kept instance changed"
    [new] = [i for i in live if i.id not in kept]
    assert new.generation == generation
    return live


def test_rollout_undo_keeps_the_instances_already_running_the_spec_it_returns_to(
    fleet: Fleet,
) -> None:
    """Revision 1 good, revision 2 crashing (held by the budget with two revision-1 instances
    still serving); undo: revision 3 is revision 1's spec, the two keep their pids, only the
    third is replaced."""
    fleet.keelctl_ok("apply", "-f", str(fleet.write_manifest(_good(fleet, "a"))))
    fleet.wait_running("web", 3, generation=1)
    fleet.apply_ok(_crashing(fleet))
    kept = _held_at_the_budget(fleet, good=1, bad=2)

    undo = fleet.keelctl_json("rollout", "undo", "web", "--reason", "v2 crashes")
    assert (int(undo["revision"]), int(undo["to_revision"])) == (3, 1)
    _back_on(fleet, kept, generation=3)

    done = fleet.keelctl("rollout", "status", "web", "--wait", "--interval", "200ms",
                         "--wait-timeout", "60s", timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    history = fleet.keelctl_json("rollout", "history", "web")["revisions"]
    assert [(int(r["number"]), int(r["same_as"]), r["current"]) for r in history] == [
        (3, 1, True), (2, 0, False), (1, 0, False),
    ]  # fmt: skip
    assert history[0]["reason"] == "v2 crashes" and history[0]["actor"]


def test_reapplying_an_earlier_file_keeps_the_healthy_instances_of_that_spec(
    fleet: Fleet,
) -> None:
    """Generation 2 good, generation 3 crashing, generation 2's file applied again: the
    healthy generation-2 instances keep their pids; only the one taken down is replaced."""
    fleet.apply_ok(_good(fleet, "a"))
    fleet.wait_running("web", 3, generation=1)
    second = _good(fleet, "b")
    fleet.apply_ok(second)
    fleet.wait_running("web", 3, generation=2)
    fleet.apply_ok(_crashing(fleet))
    kept = _held_at_the_budget(fleet, good=2, bad=3)

    fleet.apply_ok(second)
    assert fleet.workload("web").generation == 4
    _back_on(fleet, kept, generation=4)
    [newest, *_] = fleet.keelctl_json("rollout", "history", "web")["revisions"]
    assert (int(newest["number"]), int(newest["same_as"])) == (4, 2)


@pytest.fixture
def paused_fleet(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> Iterator[Fleet]:
    """A fleet whose control plane shows a pause in `keelctl stuck` after 2 s."""
    with (
        database_factory() as url,
        Fleet(
            tmp_path, database_url=url, agents=3,
            controlplane_args=["--rollout-paused-after", "2s"],
        ) as f,
    ):  # fmt: skip
        yield f


def _stuck(fleet: Fleet) -> dict[str, dict[str, Any]]:
    objects = fleet.keelctl_json("stuck").get("objects", [])
    return {o["object"]: o["stuck"] for o in objects}


def test_pause_holds_a_rollout_mid_way_and_resume_finishes_it(paused_fleet: Fleet) -> None:
    """Paused after its first step, a rollout removes no old instance and starts nothing new
    for as long as it is paused (sampled); `keelctl stuck` shows it paused (who, since when),
    never blocked; resumed, `rollout status --wait` follows it to the end and exits 0."""
    fleet = paused_fleet
    fleet.keelctl_ok("apply", "-f", str(fleet.write_manifest(_good(fleet, "a"))),
                     "--reason", "first")  # fmt: skip
    fleet.wait_running("web", 3, generation=1)
    slow = [sys.executable, "-c", SLOW, str(fleet.server_script), "3", "${KEEL_PORT_HTTP}"]
    second = fleet.manifest("web", replicas=3, command=slow, deadline="10s")
    fleet.keelctl_ok("apply", "-f", str(fleet.write_manifest(second)), "--reason", "slow start")

    def started() -> bool:
        return any(i.generation == 2 for i in fleet.instances_rpc("web"))

    wait_for(started, timeout=30, interval=0.05, message="the rollout's first step")
    paused = fleet.keelctl_json("rollout", "pause", "web", "--reason", "watching v2")
    assert paused["paused"] and paused["state"] == "PAUSED"
    at_pause = fleet.instances_rpc("web")
    old = {i.id: i.pid for i in _live(at_pause) if i.generation == 1}
    new = {i.id for i in at_pause if i.generation == 2}
    assert old, "the rollout was over before it could be paused"

    with InstanceSampler(fleet.address, "web", interval=0.1) as sampler:
        sampler.start()

        def holding() -> bool:
            live = _live(sampler.latest() or [])
            ids = {i.id: i.pid for i in live if i.generation == 1}
            return set(old) <= set(ids) and {i.id for i in live if i.generation == 2} <= new

        wait_for(sampler.latest, timeout=10, message="a first sample")
        # Past the new instances' 3 s start: unpaused, the rollout would have moved on.
        hold_for(holding, duration=5, interval=0.1, message="the paused rollout holding")

        stuck = wait_for(lambda: _stuck(fleet).get("workload/web"), timeout=15,
                         message="workload/web listed by keelctl stuck")  # fmt: skip
        assert stuck["reason"] == "ROLLOUT_PAUSED", stuck
        assert "paused by" in stuck["message"] and stuck["next_command"] == (
            "keelctl rollout resume web"
        )
        status = fleet.keelctl("rollout", "status", "web")
        assert status.returncode == 0 and "PAUSED" in status.stdout, status.stdout
    for sample in sampler.samples:
        live = {i.id for i in _live(sample)}
        assert set(old) <= live, f"an old instance was removed while paused: {sample}"
        assert {i.id for i in sample if i.generation == 2} <= new, "a new instance started"

    fleet.keelctl_ok("rollout", "resume", "web", "--reason", "v2 looks fine")
    done = fleet.keelctl("rollout", "status", "web", "--wait", "--interval", "200ms",
                         "--wait-timeout", "90s", timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMPLETE" in done.stdout
    fleet.wait_running("web", 3, generation=2)
    assert "workload/web" not in _stuck(fleet)

    history = fleet.keelctl("rollout", "history", "web")
    assert history.returncode == 0
    lines = history.stdout.splitlines()
    assert lines[1].startswith("2 (current)") and "slow start" in lines[1], history.stdout
    assert "first" in lines[2]
    events = fleet.keelctl_json("events", "--for", "workload/web")["events"]
    kinds = {e["kind"]: e for e in events}
    assert "watching v2" in kinds["RolloutPaused"]["message"] and kinds["RolloutPaused"]["actor"]
    assert "v2 looks fine" in kinds["RolloutResumed"]["message"]
    assert (
        json.loads(fleet.keelctl_ok("rollout", "status", "web", "-o", "json").stdout)["state"]
        == "COMPLETE"
    )
