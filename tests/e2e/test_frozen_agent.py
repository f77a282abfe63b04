"""End-to-end: an agent frozen with SIGSTOP (its stream open, nothing answered).

An instance placed on it is never reported: it is NOT_STARTED while the host still looks alive,
then HOST_UNREACHABLE, never START_FAILED (whose runbook is about exec errors); and
`keelctl logs` for it names the silent agent within the caller's deadline instead of blaming
the control plane.

Frozen past the reschedule time (fault 3 of the reliability issue): its instances are fenced
and replaced within replicas + max_surge, and on resume it stops them before it is READY.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from harness import Fleet, hold_for, wait_for
from partition import LIVENESS_ARGS, ProcessWatch, event_time, events, place_on
from procs import process_alive
from views import InstanceView

pytestmark = pytest.mark.e2e


@pytest.fixture
def labelled_fleet(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> Iterator[Fleet]:
    """Two agents; host-1 alone carries role=frozen. A longer liveness grace leaves a window
    in which the frozen host still counts as READY."""
    with (
        database_factory() as url,
        Fleet(
            tmp_path,
            database_url=url,
            agents=2,
            agent_args={1: ["--label", "role=frozen"]},
            controlplane_args=["--liveness-grace", "8s"],
        ) as f,
    ):
        yield f


def _reason_of(fleet: Fleet, workload: str) -> tuple[str, dict[str, str]] | None:
    for o in fleet.keelctl_json("stuck").get("objects", []):
        if o["object"].startswith(f"instance/{workload}-"):
            return o["object"].removeprefix("instance/"), o["stuck"]
    return None


def test_an_instance_on_a_frozen_agent_is_never_start_failed_and_logs_name_the_agent(
    labelled_fleet: Fleet,
) -> None:
    """Frozen agent: NOT_STARTED, then HOST_UNREACHABLE; keelctl logs names host-1's agent."""
    fleet = labelled_fleet
    seen: list[str] = []
    with fleet.freeze_agent(1):
        doc = fleet.manifest("pinned", replicas=1, selector={"role": "frozen"}, deadline="1s")
        fleet.apply_ok(doc)

        def unreachable() -> tuple[str, dict[str, str]] | None:
            found = _reason_of(fleet, "pinned")
            if found is not None:
                seen.append(found[1]["reason"])
                if found[1]["reason"] == "HOST_UNREACHABLE":
                    return found
            return None

        instance, stuck = wait_for(unreachable, timeout=40, message="pinned HOST_UNREACHABLE")
        assert "START_FAILED" not in seen, seen
        assert "NOT_STARTED" in seen, seen
        assert "host-1" in stuck["message"] and "heartbeat" in stuck["message"]
        assert stuck["runbook"] == "runbooks/stuck/host-unreachable.md"

        result = fleet.keelctl("--timeout", "3s", "logs", instance, timeout=20)
        assert result.returncode == 1, result
        line = result.stderr.strip()
        assert 'the agent of host "host-1"' in line, line
        assert "did not answer" in line and "DEADLINE_EXCEEDED" not in line, line


@pytest.fixture
def liveness_fleet(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> Iterator[Fleet]:
    """Three agents; a host is fenced 4 s after it goes NOT_READY (3 s of silence)."""
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=3, controlplane_args=LIVENESS_ARGS) as f,
    ):
        yield f


def _on(fleet: Fleet, workload: str, host: str) -> InstanceView:
    [inst] = [i for i in fleet.instances(workload) if i.host == host]
    return inst


def test_a_frozen_agent_is_replaced_within_the_surge_and_stops_its_fenced_instances_first(
    liveness_fleet: Fleet,
) -> None:
    """Fault 3: an agent frozen past the reschedule time, then resumed. Its service instances
    are fenced and replaced elsewhere, never with more than replicas + max_surge processes of a
    workload running (a singleton with max_surge 0 waits for its agent); on resume the agent
    stops the fenced instances before its host is READY again."""
    fleet = liveness_fleet
    fleet.apply_ok(fleet.manifest("web", replicas=3, max_surge=1))
    fleet.wait_running("web", 3)
    place_on(fleet, "host-1", fleet.manifest("single", replicas=1, max_surge=0), 1)
    old_web, old_single = _on(fleet, "web", "host-1"), _on(fleet, "single", "host-1")

    with ProcessWatch(fleet) as watch:
        frozen_at = time.time()
        with fleet.freeze_agent(1):

            def replaced() -> list[InstanceView] | None:
                web = [i for i in fleet.instances("web") if i.desired == "RUNNING"]
                moved = len(web) == 3 and all(i.host != "host-1" and i.serving for i in web)
                return web if moved else None

            wait_for(replaced, timeout=40, message="web replaced off the frozen host-1")
            single = fleet.instances("single")
            assert [(i.id, i.desired) for i in single] == [(old_single.id, "REMOVED")], single
            # The singleton's replacement waits: its fenced instance may still run (it does).
            hold_for(
                lambda: [i.id for i in fleet.instances("single")] == [old_single.id],
                duration=2,
                message="no second singleton while the first may run",
            )
            assert process_alive(old_single.pid) and process_alive(old_web.pid)
            fenced = [e for e in events(fleet, "host/host-1") if e["kind"] == "InstancesFenced"]
            assert fenced and "replaced elsewhere" not in fenced[-1]["message"], fenced
            recovered_after_s = time.time() - frozen_at
            resumed_at = time.time()  # just before the SIGCONT

        def ready_again() -> dict[str, str] | None:
            back = [
                e
                for e in events(fleet, "host/host-1")
                if e["kind"] == "HostReady" and event_time(e).timestamp() > resumed_at
            ]
            return back[0] if back else None

        ready = wait_for(ready_again, timeout=30, message="host-1 READY after the resume")
        fleet.wait_running("single", 1)
        watch.sample()
        for old in (old_web, old_single):
            gone = watch.gone_at.get(old.pid)
            assert gone is not None, f"{old.id} (pid {old.pid}) still runs"
            # Polled every 50 ms: gone at the latest by the sample that saw it gone.
            assert gone - 0.1 <= event_time(ready).timestamp(), (old.id, gone, ready)
        assert watch.most["web"] <= 3 + 1, watch.most
        assert watch.most["single"] <= 1, watch.most
    print(
        f"fault 3: frozen agent; web replaced {recovered_after_s:.1f}s after the freeze; "
        f"host READY {event_time(ready).timestamp() - resumed_at:.1f}s after the resume; "
        f"most processes at once: {dict(watch.most)}"
    )
