"""End-to-end: `keelctl logs` works whichever replica it reaches.

Two control-plane replicas on one Postgres; host-1's agent is given replica A alone, so its
stream is there. keelctl asking replica B gets the logs through Postgres (controlplane.logbus),
the same bytes as from A; a follow through B prints new output as the workload writes it,
and when keelctl is killed, replica A stops following for it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from harness import wait_for
from replicas import TwoReplicas

pytestmark = pytest.mark.e2e

TICKER = """
import itertools, time
for i in itertools.count():
    print(f"tick {i}", flush=True)
    time.sleep(0.2)
"""


@pytest.fixture
def replicas(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[TwoReplicas]:
    with (
        database_factory() as url,
        TwoReplicas(
            tmp_path, database_url=url, agents=2, agent_args={1: ["--label", "logs=here"]}
        ) as f,
    ):
        yield f


def _ticks(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick ")]


def test_logs_and_follow_through_the_replica_that_does_not_hold_the_stream(
    replicas: TwoReplicas,
) -> None:
    fleet = replicas
    holder, other = list(fleet.replicas)
    fleet.pin_agent(1, holder)
    fleet.wait_hosts_ready()
    # A script under the test dir, so that teardown's sweep (by that path) finds the process.
    ticker = fleet.root / "ticker.py"
    ticker.write_text(TICKER)
    doc = fleet.manifest(
        "ticker",
        command=[sys.executable, str(ticker)],
        replicas=1,
        health=False,
        selector={"logs": "here"},
    )
    doc["spec"].pop("ports")
    fleet.apply_ok(doc)
    (instance,) = fleet.wait_running("ticker", 1)
    assert instance.host == "host-1"
    wait_for(
        lambda: len(_ticks(fleet.keelctl_ok("logs", instance.id).stdout)) >= 3,
        timeout=20,
        message="three ticks in the instance's log",
    )

    # The same tail, whichever replica answers.
    here = fleet.keelctl("logs", instance.id, "--tail", "2", address=holder)
    there = fleet.keelctl("logs", instance.id, "--tail", "2", address=other)
    assert here.returncode == 0 and there.returncode == 0, there.stderr
    assert len(_ticks(there.stdout)) == 2
    assert _ticks(there.stdout)[0] >= _ticks(here.stdout)[0]

    # A follow through the other replica prints what is written after it began.
    started = _ticks(fleet.keelctl_ok("logs", instance.id, "--tail", "1").stdout)[-1]
    with pytest.raises(subprocess.TimeoutExpired) as followed:
        fleet.keelctl("logs", "-f", instance.id, "--tail", "1", address=other, timeout=4)
    out = followed.value.stdout
    text = out.decode() if isinstance(out, bytes) else (out or "")
    assert max(_ticks(text)) >= started + 5, text

    # keelctl was killed: the holding replica stops following for it.
    holder_log = fleet.replicas[holder][0].log
    wait_for(
        lambda: "stopped relaying logs" in holder_log.read_text(),
        timeout=30,
        message="the holding replica to stop relaying the follow",
    )
