"""keelctl rollout status --wait through a control plane that cannot answer for a while: every
read in the wait loop, the rollout history's as well as the status's, is tried again at the
next interval when it fails UNAVAILABLE or DEADLINE_EXCEEDED, and nothing is decided on what
could not be read.

A real gRPC server in this process stands in for the control plane (as in
test_ctl_watch_failover.py); keelctl runs through `main`, so the errors are gRPC's own."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from keel.ctl.main import main
from keel.v1 import fleet_pb2, fleet_pb2_grpc


def _status(revision: int, state: str = "PROGRESSING") -> fleet_pb2.RolloutStatus:
    done = state == "COMPLETE"
    return fleet_pb2.RolloutStatus(
        workload="web",
        revision=revision,
        state=state,
        desired=3,
        updated=3 if done else 1,
        ready=3 if done else 1,
        old_remaining=0 if done else 2,
        message=f"revision {revision}: {state.lower()}",
    )


class ControlPlane(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    """Answers GetRolloutStatus from `statuses` (the last one again once they run out) and
    GetRolloutHistory with `history`, each after failing with `code` its first `fails` times."""

    def __init__(
        self,
        statuses: list[fleet_pb2.RolloutStatus],
        history: list[fleet_pb2.Revision],
        *,
        status_fails: int = 0,
        history_fails: int = 0,
        first_fails: int = 0,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        self.statuses = statuses
        self.history = history
        self.status_fails = status_fails
        self.history_fails = history_fails
        self.first_fails = first_fails
        self.code = code
        self.status_reads = 0
        self.history_reads = 0
        self._answered = 0

    def GetRolloutStatus(
        self, request: Any, context: grpc.ServicerContext
    ) -> fleet_pb2.RolloutStatus:
        self.status_reads += 1
        if self.status_reads <= self.first_fails:  # the control plane is still starting
            context.abort(self.code, "the database is away; try again")
        # The first read answered is the wait's first; `status_fails` come after it.
        after = self.status_reads - self.first_fails
        if after > 1 and after <= 1 + self.status_fails:
            context.abort(self.code, "the database is away; try again")
        status = self.statuses[min(self._answered, len(self.statuses) - 1)]
        self._answered += 1
        return status

    def GetRolloutHistory(
        self, request: Any, context: grpc.ServicerContext
    ) -> fleet_pb2.GetRolloutHistoryResponse:
        self.history_reads += 1
        if self.history_reads <= self.history_fails:
            context.abort(self.code, "the database is away; try again")
        return fleet_pb2.GetRolloutHistoryResponse(revisions=self.history)


def _wait(address: str) -> int:
    return main(
        ["--controlplane", address, "rollout", "status", "web", "--wait", "--interval", "10ms"]
    )


ROLLBACK = [
    fleet_pb2.Revision(number=4, current=True, same_as=2, actor="keel", reason="auto rollback"),
    fleet_pb2.Revision(number=3, state="ROLLED_BACK"),
]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_history_read_that_fails_for_a_while_is_retried_and_the_rollback_still_seen(
    serve: Any, code: grpc.StatusCode, capsys: pytest.CaptureFixture[str]
) -> None:
    """Revision 3 is replaced by a complete rollback while the history cannot be read: keelctl
    neither gives up nor takes the rollback's completion for revision 3's; once the history
    answers it says revision 3 was rolled back and exits 1."""
    cp = ControlPlane([_status(3), _status(4, "COMPLETE")], ROLLBACK, history_fails=3, code=code)
    assert _wait(serve(cp)) == 1
    out, err = capsys.readouterr()
    assert cp.history_reads == 4
    assert out.count(f"cannot read the rollout now ({code.name}); trying again") == 3
    assert "revision 3 was rolled back: revision 4 returns to revision 2" in out
    assert "error:" not in err


def test_a_newer_revision_is_followed_once_its_history_can_be_read(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone applied again while the history could not be read: once it can, keelctl follows
    the new revision and exits 0 when it completes."""
    history = [fleet_pb2.Revision(number=5, current=True), fleet_pb2.Revision(number=3)]
    cp = ControlPlane([_status(3), _status(5), _status(5, "COMPLETE")], history, history_fails=2)
    assert _wait(serve(cp)) == 0
    out, _ = capsys.readouterr()
    assert cp.history_reads == 3
    assert "revision 3 was superseded by revision 5; following it" in out
    assert "revision 5 COMPLETE" in out


def test_status_and_history_reads_that_fail_in_turn_are_all_retried(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status reads fail first, then the history's: each is tried again at the next
    interval, and the wait ends as it would have without the failures."""
    cp = ControlPlane(
        [_status(3), _status(4, "COMPLETE")], ROLLBACK, status_fails=2, history_fails=2
    )
    assert _wait(serve(cp)) == 1
    out, _ = capsys.readouterr()
    assert out.count("cannot read the rollout now (UNAVAILABLE)") == 4
    assert "revision 3 was rolled back" in out


def test_a_first_read_that_fails_is_retried_too(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run just as the control plane restarts: the wait's very first read fails for a while,
    and keelctl waits for it instead of giving up, then follows the rollout to its end."""
    cp = ControlPlane([_status(3), _status(3, "COMPLETE")], [], first_fails=3)
    assert _wait(serve(cp)) == 0
    out, err = capsys.readouterr()
    assert out.count("cannot read the rollout now (UNAVAILABLE); trying again") == 3
    assert "revision 3 COMPLETE" in out and "error:" not in err


def test_a_first_read_that_never_answers_gives_up_at_the_wait_timeout(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = ControlPlane([_status(3)], [], first_fails=10**6)
    address = serve(cp)
    code = main(["--controlplane", address, "rollout", "status", "web", "--wait",
                 "--interval", "10ms", "--wait-timeout", "200ms"])  # fmt: skip
    assert code == 1
    _, err = capsys.readouterr()
    assert "could not read the rollout of web before --wait-timeout" in err


def test_a_history_read_refused_for_another_reason_ends_the_wait_with_the_error(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only passing failures are tried again: a refusal is printed and the wait exits 1."""
    cp = ControlPlane(
        [_status(3), _status(4)],
        ROLLBACK,
        history_fails=1,
        code=grpc.StatusCode.PERMISSION_DENIED,
    )
    assert _wait(serve(cp)) == 1
    _, err = capsys.readouterr()
    assert cp.history_reads == 1
    assert "(PERMISSION_DENIED)" in err
