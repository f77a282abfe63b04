"""End-to-end: an agent frozen with SIGSTOP (its stream open, nothing answered).

An instance placed on it is never reported: it is NOT_STARTED while the host still looks alive,
then HOST_UNREACHABLE, never START_FAILED (whose runbook is about exec errors); and
`keelctl logs` for it names the silent agent within the caller's deadline instead of blaming
the control plane.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from harness import Fleet, wait_for

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
