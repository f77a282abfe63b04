"""End-to-end: daemons and drains, against two control-plane replicas and four agents.

A daemon's instance on a drained host stops last, after every service instance there has
moved (in the recorded history, in order), and stays stopped while the host is cordoned; once
the host is uncordoned the daemon runs there again. With `--ignore-daemons` it keeps running,
the same process, through the drain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from drains import event_index, history, two_replicas
from harness import hold_for, wait_for
from procs import process_alive
from replicas import TwoReplicas
from views import InstanceView

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet4(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    with two_replicas(tmp_path, database_factory) as f:
        yield f


def _daemon_on_host_1(fleet: TwoReplicas) -> list[InstanceView]:
    """agentd's instances on host-1 that are wanted running."""
    return [i for i in fleet.instances("agentd") if i.host == "host-1" and i.desired == "RUNNING"]


def test_a_daemon_stops_last_stays_stopped_while_cordoned_and_ignore_daemons_keeps_it(
    fleet4: TwoReplicas,
) -> None:
    """Drained: host-1's daemon stops after every web instance there stopped serving, and no
    daemon runs on host-1 while it is cordoned; uncordoned, the daemon runs there again. A
    second drain with --ignore-daemons moves web off and leaves the daemon's process alone."""
    fleet = fleet4
    fleet.apply_ok(fleet.manifest("agentd", kind="daemon", min_ready="500ms"))
    fleet.apply_ok(fleet.manifest("web", replicas=4, min_ready="500ms"))
    daemons = fleet.wait_running("agentd", 4)
    fleet.wait_running("web", 4)
    web_moving = [i.id for i in fleet.instances("web") if i.host == "host-1"]
    assert web_moving
    [daemon] = [d for d in daemons if d.host == "host-1"]

    result = fleet.keelctl("drain", "host-1", "--wait", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout
    wait_for(lambda: not process_alive(daemon.pid), timeout=30, message="the daemon stopped")
    events = history(fleet)
    daemon_stopped = event_index(events, daemon.id, "InstanceNotReady")
    for web in web_moving:
        assert event_index(events, web, "InstanceNotReady") < daemon_stopped, (
            f"the daemon stopped before {web} had moved"
        )
    # Cordoned, host-1 runs no daemon; the other hosts' daemons run on.
    hold_for(
        lambda: (
            not _daemon_on_host_1(fleet)
            and len([i for i in fleet.instances("agentd") if i.serving]) == 3
        ),
        duration=4,
        interval=0.5,
        message="no daemon on the cordoned host-1",
    )

    fleet.keelctl_ok("uncordon", "host-1")
    [again] = wait_for(
        lambda: [i for i in _daemon_on_host_1(fleet) if i.serving],
        timeout=60,
        message="the daemon running on host-1 again",
    )
    assert again.id != daemon.id and process_alive(again.pid)

    # Web back on host-1 (it has the fewest), then a drain that leaves daemons running.
    fleet.apply_ok(fleet.manifest("web", replicas=8, min_ready="500ms"))
    fleet.wait_running("web", 8)
    assert [i for i in fleet.instances("web") if i.host == "host-1"]
    result = fleet.keelctl("drain", "host-1", "--ignore-daemons", "--wait", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [i for i in fleet.wait_running("web", 8) if i.host == "host-1"]
    [kept] = _daemon_on_host_1(fleet)
    assert (kept.id, kept.pid, kept.serving) == (again.id, again.pid, True)
    assert process_alive(again.pid)
    not_ready = [
        e for e in history(fleet) if e["object"] == f"instance/{again.id}" and "Not" in e["kind"]
    ]
    assert not_ready == [], not_ready
