"""A rollout's status from its workload, current revision and tallies (pure, table-driven):
the counts by the leader's rules, the state, and what it waits for in words."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controlplane.listing import Tally
from controlplane.revision_store import RevisionRow
from controlplane.rollout_status import rollout_status
from controlplane.store import WorkloadRow
from keel.model import Desired, Kind, Phase, RolloutPolicy, Workload, WorkloadSpec

AT = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
ROW = WorkloadRow(
    workload=Workload(name="web", spec=WorkloadSpec(command=("sleep", "1")), replicas=3),
    generation=3,
    deleting=False,
    created_at=AT,
    updated_at=AT,
    spec_generations=frozenset({1, 3}),  # revision 3 is revision 1's spec again
)
REV = RevisionRow("web", 3, ROW.workload.spec, "alice", "", AT, 1, "PROGRESSING", AT, None,
                  None, "", None)  # fmt: skip
RUN, GONE = Desired.RUNNING, Desired.REMOVED


def t(gen: int, n: int, *, ready: bool = True, desired: Desired = RUN) -> Tally:
    phase = Phase.RUNNING if ready else Phase.STARTING
    return Tally(gen, desired, phase, ready, None, n)


@pytest.mark.parametrize(
    ("row", "revision", "tallies", "expected", "message"),
    [
        pytest.param(
            ROW, REV, [t(1, 2), t(2, 1)], ("PROGRESSING", 3, 2, 2, 1),
            "waiting for 1 more updated instance to start, 1 old instance to be replaced",
            id="generation-1-instances-are-current-after-a-rollback",
        ),
        pytest.param(
            ROW, REV, [t(1, 2), t(3, 1, ready=False), t(2, 1, desired=GONE)],
            ("PROGRESSING", 3, 3, 2, 0), "1 updated instance to become ready",
            id="tombstones-are-not-counted",
        ),
        pytest.param(
            ROW, REV, [t(1, 2), t(3, 1)], ("COMPLETE", 3, 3, 3, 0),
            "revision 3 is complete: 3 of 3 updated, 3 ready",
            id="complete-by-the-counts-before-the-controller-marks-it",
        ),
        pytest.param(
            replace(ROW, paused=True, paused_by="bob"), REV, [t(1, 1), t(2, 2)],
            ("PAUSED", 3, 1, 1, 2), "paused by bob: 2 old instances held",
            id="paused",
        ),
        pytest.param(
            replace(ROW, paused=True), REV, [t(3, 3)], ("COMPLETE", 3, 3, 3, 0), "complete",
            id="paused-with-nothing-left-is-complete",
        ),
        pytest.param(
            replace(ROW, paused=True, paused_by="keel/rollout"),
            replace(REV, state="FAILED", failure={"message": "crash loop"}),
            [t(1, 1), t(2, 2, ready=False)], ("FAILED", 3, 1, 1, 2),
            "revision 3 failed: crash loop", id="failed-stays-failed",
        ),
        pytest.param(
            ROW, replace(REV, state="ROLLED_BACK"), [t(3, 3)], ("ROLLED_BACK", 3, 3, 3, 0),
            "revision 3 rolled back", id="an-outcome-is-kept-whatever-the-counts",
        ),
        pytest.param(
            replace(ROW, canary_pending=True,
                    workload=replace(ROW.workload, rollout=RolloutPolicy(canary=1))),
            replace(REV, state="AWAITING_PROMOTION"), [t(2, 3), t(3, 1)],
            ("AWAITING_PROMOTION", 3, 1, 1, 3),
            "1 canary of revision 3 (1 ready) beside 3 old instances, awaiting promotion",
            id="canary",
        ),
        pytest.param(
            replace(ROW, workload=replace(ROW.workload, replicas=1)), REV, [t(3, 2)],
            ("PROGRESSING", 1, 2, 2, 0), "1 surplus instance to be removed", id="scale-down",
        ),
        pytest.param(
            replace(ROW, deleting=True), REV, [], ("COMPLETE", 0, 0, 0, 0), "complete",
            id="deleting-wants-nothing",
        ),
    ],
)  # fmt: skip
def test_rollout_status(
    row: WorkloadRow,
    revision: RevisionRow,
    tallies: list[Tally],
    expected: tuple[str, int, int, int, int],
    message: str,
) -> None:
    """(state, desired, updated, ready, old remaining) and the words of the message."""
    s = rollout_status(row, revision, tallies, daemon_hosts=0)
    assert (s.state, s.desired, s.updated, s.ready, s.old_remaining) == expected
    assert message in s.message
    assert s.canaries == (s.updated if row.canary_pending else 0)


def test_a_daemon_wants_its_hosts() -> None:
    """A daemon's desired count is the hosts it should run on, whatever its replicas say."""
    daemon = replace(ROW, workload=replace(ROW.workload, kind=Kind.DAEMON))
    s = rollout_status(daemon, REV, [t(3, 2)], daemon_hosts=4)
    assert (s.desired, s.state) == (4, "PROGRESSING")
    assert "2 more updated instances to start" in s.message


def test_keels_own_rollback_reports_the_rollout_rolled_back_with_its_record() -> None:
    """Revision 3 is Keel's rollback of a failed revision 2: the status (as the gauge) says
    ROLLED_BACK, with revision 2's record, even once revision 3 is complete."""
    failure = {"reason": "CRASH_LOOP", "message": "web-2-000001 crash loop: boom"}
    failed = replace(REV, number=2, same_as=None, state="ROLLED_BACK", failure=failure)
    mine = replace(REV, actor="keel/rollout")
    status = rollout_status(ROW, mine, [t(1, 3)], daemon_hosts=0, rolled_back=failed)
    assert status.state == "ROLLED_BACK"
    assert status.failure == failure
    assert "revision 2 failed" in status.message and "boom" in status.message
    # An operator's undo is no automatic rollback: complete once it converges.
    assert rollout_status(ROW, REV, [t(1, 3)], daemon_hosts=0).state == "COMPLETE"
    # Returned to revision 3, itself a rollback to revision 1's spec: named as the record does.
    again = replace(failed, failure={**failure, "rolled_back_to": 3})
    status = rollout_status(ROW, mine, [t(1, 3)], daemon_hosts=0, rolled_back=again)
    assert "rolled back to the spec of revision 3" in status.message


def test_a_failed_rollout_resumed_by_an_operator_is_progressing_again() -> None:
    failure = {"reason": "PROGRESS_DEADLINE", "message": "no progress for 10m"}
    failed = replace(REV, state="FAILED", failure=failure)
    held = replace(ROW, paused=True, paused_by="keel/rollout")
    assert rollout_status(held, failed, [t(1, 2), t(2, 1)], daemon_hosts=0).state == "FAILED"
    # The resume set the revision back to PROGRESSING (`rollout_pause`): its record stays.
    again = replace(failed, state="PROGRESSING")
    resumed = rollout_status(ROW, again, [t(2, 2), t(3, 1)], daemon_hosts=0)
    assert resumed.state == "PROGRESSING" and resumed.failure == failure
