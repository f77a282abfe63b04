"""Canaries end to end, with the real control plane, agents, processes and keelctl: a revision
with `rollout: {canary: 1}` starts one instance beside the three old ones and waits; `keelctl
rollout promote` completes the rollout; `keelctl rollout abort` removes the canary and returns
to the old spec with the old processes untouched; a canary left waiting is shown by `keelctl
stuck` past --canary-waiting-after, and never as a blocked rollout before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import DatabaseFactory
from harness import Fleet, InstanceSampler, hold_for, pids_of, wait_for
from views import InstanceView

pytestmark = pytest.mark.e2e

# Seconds the canary is watched after it is ready: several workload and stuck passes (the
# harness's resync period is 2 s, its stuck interval 300 ms).
QUIET_S = 6.0


def _manifest(fleet: Fleet, version: str, **kwargs: Any) -> dict[str, Any]:
    return fleet.manifest("web", replicas=3, env={"VERSION": version}, **kwargs)


def _live(fleet: Fleet) -> list[InstanceView]:
    return [i for i in fleet.instances("web") if i.desired != "REMOVED"]


def _start_canary(fleet: Fleet) -> tuple[dict[str, int], InstanceView]:
    """Revision 1 on three processes, then revision 2 with one canary: waits until the canary
    serves beside them; returns revision 1's pids and the canary."""
    fleet.apply_ok(_manifest(fleet, "1"))
    old = pids_of(fleet.wait_running("web", 3, generation=1))
    applied = fleet.keelctl_ok(
        "apply", "-f", str(fleet.write_manifest(_manifest(fleet, "2", rollout={"canary": 1})))
    )
    assert "generation 2" in applied.stdout

    def canary_serving() -> InstanceView | None:
        live = _live(fleet)
        new = [i for i in live if i.generation == 2]
        if len(live) == 4 and len(new) == 1 and new[0].serving:
            return new[0]
        return None

    canary = wait_for(canary_serving, timeout=45, message="one revision-2 canary serving")
    assert pids_of(i for i in _live(fleet) if i.generation == 1) == old
    return old, canary


def _holds(fleet: Fleet, old: dict[str, int], canary: InstanceView) -> bool:
    """The three old processes and the one canary, as they were: nothing more rolled."""
    live = _live(fleet)
    return pids_of(i for i in live if i.generation == 1) == old and [
        (i.id, i.pid) for i in live if i.generation != 1
    ] == [(canary.id, canary.pid)]


def _events(fleet: Fleet, kind: str) -> list[dict[str, Any]]:
    events = fleet.keelctl_json("events", "--for", "workload/web")["events"]
    return [e for e in events if e["kind"] == kind]


def test_a_canary_waits_beside_the_old_instances_until_promoted(fleet: Fleet) -> None:
    """Exactly one revision-2 instance starts beside the three revision-1 processes (same pids)
    and nothing more rolls while it waits; promoted, the rollout completes within the budget,
    the canary among the revision-2 replicas."""
    old, canary = _start_canary(fleet)
    hold_for(lambda: _holds(fleet, old, canary), duration=QUIET_S, interval=0.5,
             message="three old instances and one canary, nothing more")  # fmt: skip

    with InstanceSampler(fleet.address, "web", interval=0.1) as sampler:
        sampler.start()
        promoted = fleet.keelctl_ok("rollout", "promote", "web", "--reason", "canary ok")
        assert promoted.stdout.startswith("workload/web promoted: revision 2 PROGRESSING")
        done = fleet.wait_running("web", 3, generation=2, timeout=60)
        samples = list(sampler.samples)
    assert canary.id in {i.id for i in done}
    # The budget (max_unavailable 1): at least two serving at every moment sampled.
    serving = [sum(i.serving for i in s if i.desired != "REMOVED") for s in samples]
    assert serving and min(serving) >= 2
    wait_for(lambda: not any(psutil.pid_exists(p) for p in old.values()), timeout=20,
             message="revision 1's processes to end")  # fmt: skip
    (event,) = _events(fleet, "RolloutPromoted")
    assert "canary ok" in event["message"] and event["actor"]


def test_an_aborted_canary_is_removed_and_the_old_processes_keep_running(fleet: Fleet) -> None:
    """Abort removes the canary and applies revision 1's spec again (revision 3): the three
    revision-1 processes keep their pids throughout and nothing else starts."""
    old, canary = _start_canary(fleet)
    with InstanceSampler(fleet.address, "web", interval=0.1) as sampler:
        sampler.start()
        aborted = fleet.keelctl_ok("rollout", "abort", "web", "--reason", "p99 up")
        assert aborted.stdout.startswith("workload/web canaries aborted: revision 3")
        assert "the spec of revision 1 runs again as revision 3" in aborted.stdout
        wait_for(lambda: pids_of(fleet.instances("web")) == old, timeout=45,
                 message="only revision 1's three processes left")  # fmt: skip
        hold_for(lambda: pids_of(fleet.instances("web")) == old, duration=3.0, interval=0.5,
                 message="revision 1's processes, and nothing else")  # fmt: skip
        samples = list(sampler.samples)
    for sample in samples:
        kept = {i.id: i.pid for i in sample if i.generation == 1}
        assert kept == old, sample
        assert {i.id for i in sample if i.generation != 1} <= {canary.id}, sample
    wait_for(lambda: not psutil.pid_exists(canary.pid), timeout=20, message="the canary to end")
    described = fleet.keelctl_json("describe", "workload", "web")
    assert described["generation"] == 3
    assert described["spec"]["env"] == {"VERSION": "1"}
    (event,) = _events(fleet, "RolloutAborted")
    assert "revision 2" in event["message"] and "p99 up" in event["message"]


def test_a_revision_applied_over_a_waiting_canary_replaces_only_the_canary(
    fleet: Fleet,
) -> None:
    """Revision 3 applied while revision 2's canary waits, unpromoted: revision 2's canary goes
    and one revision-3 canary starts beside the three revision-1 processes; aborting it returns
    to revision 1, never to revision 2's spec. Revision 1's pids never change (sampled)."""
    old, canary = _start_canary(fleet)
    with InstanceSampler(fleet.address, "web", interval=0.1) as sampler:
        sampler.start()
        third = _manifest(fleet, "3", rollout={"canary": 1})
        fleet.keelctl_ok("apply", "-f", str(fleet.write_manifest(third)))

        def third_canary_alone() -> InstanceView | None:
            live = _live(fleet)
            new = [i for i in live if i.generation == 3]
            gone = not any(i.generation == 2 for i in live)
            return new[0] if len(live) == 4 and len(new) == 1 and new[0].serving and gone else None

        wait_for(third_canary_alone, timeout=45, message="revision 2's canary replaced by 3's")
        aborted = fleet.keelctl_ok("rollout", "abort", "web", "--reason", "not this either")
        assert "the spec of revision 1 runs again as revision 4" in aborted.stdout
        wait_for(lambda: pids_of(fleet.instances("web")) == old, timeout=45,
                 message="only revision 1's three processes left")  # fmt: skip
        samples = list(sampler.samples)
    for sample in samples:
        assert {i.id: i.pid for i in sample if i.generation == 1} == old, sample
    wait_for(lambda: not psutil.pid_exists(canary.pid), timeout=20,
             message="revision 2's canary to end")  # fmt: skip
    described = fleet.keelctl_json("describe", "workload", "web")
    assert (described["generation"], described["spec"]["env"]) == (4, {"VERSION": "1"})


@pytest.fixture
def soon_fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """A fleet whose control plane reports canaries waiting past 10 s."""
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, controlplane_args=["--canary-waiting-after", "10s"]) as f,
    ):
        yield f


def _stuck(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {o["object"]: o["stuck"] for o in fleet.keelctl_json("stuck").get("objects", [])}


def test_a_forgotten_canary_is_shown_by_stuck_and_cleared_by_promote(soon_fleet: Fleet) -> None:
    """With a 2 s workload deadline a waiting canary is still never ROLLOUT_BLOCKED; past
    --canary-waiting-after it is CANARY_AWAITING_PROMOTION with its runbook and next command;
    promote clears it."""
    fleet = soon_fleet
    fleet.apply_ok(_manifest(fleet, "1", deadline="2s"))
    fleet.wait_running("web", 3, generation=1)
    fleet.apply_ok(_manifest(fleet, "2", deadline="2s", rollout={"canary": 1}))
    started = time.monotonic()
    wait_for(lambda: len(_live(fleet)) == 4, timeout=45, message="the canary placed")
    # Past the workload's deadline, before the setting: nothing about web.
    hold_for(lambda: "workload/web" not in _stuck(fleet), interval=0.5,
             duration=max(0.0, 6.0 - (time.monotonic() - started)),
             message="workload/web not stuck while its canary waits")  # fmt: skip
    stuck = wait_for(lambda: _stuck(fleet).get("workload/web"), timeout=30,
                     message="workload/web stuck")  # fmt: skip
    assert stuck["reason"] == "CANARY_AWAITING_PROMOTION"
    assert "revision 2 has awaited promotion since" in stuck["message"]
    assert "1 of 1 canaries live" in stuck["message"]
    assert stuck["runbook"] == "runbooks/stuck/canary-awaiting-promotion.md"
    assert stuck["next_command"] == "keelctl rollout promote web"
    fleet.keelctl_ok(*stuck["next_command"].split()[1:])
    wait_for(lambda: "workload/web" not in _stuck(fleet), timeout=30,
             message="workload/web no longer stuck")  # fmt: skip
    fleet.wait_running("web", 3, generation=2, timeout=60)
