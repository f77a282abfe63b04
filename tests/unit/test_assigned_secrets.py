"""controlplane.report_secrets: a report's message loses the secret values of the instance it
is about, opened from the sealed spec its stream assigned; other reports pass untouched."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from controlplane.report_secrets import AssignedSecrets
from controlplane.secrets import load_or_create
from controlplane.store import InstanceRow, Report
from keel.model import Desired, Phase, SecretValue, WorkloadSpec

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
SECRET = "correct-horse-battery"
SPEC = WorkloadSpec(command=("/bin/false",), secret_env={"DB_PASS": SecretValue(value=SECRET)})
ROW = InstanceRow(
    id="db-1-000001",
    workload="db",
    generation=1,
    host="host-1",
    spec=SPEC,
    desired=Desired.RUNNING,
    desired_changed_at=NOW,
    revision=1,
    created_at=NOW,
    phase=Phase.RUNNING,
    pid=0,
    restart_count=0,
    last_exit="",
    reason="",
    message="",
    ports={},
    ready=False,
    started_at=None,
    observed_at=None,
)
REPORT = Report(
    host="host-1",
    instance_id=ROW.id,
    phase=Phase.FAILED,
    pid=0,
    restart_count=2,
    last_exit="exit code 1",
    reason="CRASH_LOOP",
    message=f"last exit: exit code 1\nstderr (last lines):\nlogin with {SECRET} refused\n",
    ports={},
    ready=False,
    removed=False,
    started_at=None,
    agent_stuck=True,
)


def test_a_message_loses_the_values_of_its_instance_and_nothing_else(tmp_path: Path) -> None:
    """The sealed value the stream assigned is opened and replaced by its marker; a report
    of an instance without secrets, or after its removal, is left as it came."""
    box = load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)
    row = replace(ROW, spec=box.seal("db", SPEC))
    assert SECRET not in str(row.spec.secret_env)
    assigned = AssignedSecrets()
    assigned.remember([row], full=True)

    got = assigned.redacted(REPORT, secrets=box)
    assert SECRET not in got.message
    assert "login with [redacted secret_env DB_PASS] refused" in got.message
    other = replace(REPORT, instance_id="web-1-000002")
    assert assigned.redacted(other, secrets=box) is other

    assigned.remember([replace(row, desired=Desired.REMOVED)], full=False)
    assert assigned.redacted(REPORT, secrets=box) is REPORT
    assigned.remember([row], full=False)
    assigned.remember([], full=True)
    assert assigned.redacted(REPORT, secrets=box) is REPORT


def test_a_value_this_replica_cannot_open_leaves_the_message_as_the_agent_sent_it(
    tmp_path: Path,
) -> None:
    """Sealed with another key: nothing to open (counted by SecretBox), no crash."""
    other = load_or_create(tmp_path / "other.key", on_open_failure=lambda: None)
    failures: list[int] = []
    box = load_or_create(tmp_path / "secret.key", on_open_failure=lambda: failures.append(1))
    assigned = AssignedSecrets()
    assigned.remember([replace(ROW, spec=other.seal("db", SPEC))], full=True)
    assert assigned.redacted(REPORT, secrets=box) is REPORT
    assert failures == [1]


def test_a_resumed_stream_asks_for_the_whole_set_once_a_message_names_an_unseen_instance(
    tmp_path: Path,
) -> None:
    """Sent only what changed since the agent's revision, a stream does not know an older
    instance: its report with a message asks for the host's whole set; once that is
    remembered, it never asks again."""
    box = load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)
    assigned = AssignedSecrets()
    assigned.remember([replace(ROW, id="db-1-000009", spec=box.seal("db", SPEC))], full=False)
    assert not assigned.incomplete([replace(REPORT, message="")])
    assert assigned.incomplete([REPORT])
    assigned.remember_all([replace(ROW, spec=box.seal("db", SPEC))])
    assert not assigned.incomplete([REPORT, replace(REPORT, instance_id="unknown-1-000001")])
    assert SECRET not in assigned.redacted(REPORT, secrets=box).message
    older = replace(REPORT, instance_id="db-1-000009")  # remembered before: merged, not lost
    assert SECRET not in assigned.redacted(older, secrets=box).message
