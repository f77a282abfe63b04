"""keelctl rollout: its command lines, how history, status and failures read, and how
`status --wait` follows a rollout to its end (a stub answers; the clock and sleep are
injected)."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from keel.convert import ts
from keel.ctl import rollout, rollout_output
from keel.ctl.commands import Context
from keel.ctl.main import build_parser, main
from keel.v1 import fleet_pb2 as fpb
from keel.v1 import types_pb2

NOW = datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["rollout", "history", "web"], {"rollout_command": "history", "workload": "web"}),
        (["rollout", "history", "web", "--revision", "3"], {"revision": 3}),
        (
            ["rollout", "status", "web"],
            {"wait": False, "wait_timeout": 0.0, "interval": 2.0},
        ),
        (
            ["rollout", "status", "web", "--wait", "--wait-timeout", "5m", "--interval", "500ms"],
            {"wait": True, "wait_timeout": 300.0, "interval": 0.5},
        ),
        (["rollout", "pause", "web", "--reason", "look"], {"reason": "look"}),
        (["rollout", "resume", "web"], {"rollout_command": "resume", "reason": ""}),
        (["rollout", "undo", "web"], {"to_revision": 0, "reason": ""}),
        (["rollout", "undo", "web", "--to-revision", "3", "-o", "json"], {"to_revision": 3}),
    ],
)
def test_rollout_command_lines_parse(argv: list[str], expected: dict[str, Any]) -> None:
    """Every verb with its options."""
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout", "history"],
        ["rollout", "frob", "web"],
        ["rollout", "undo", "web", "--to-revision", "-1"],
        ["rollout", "status", "web", "--interval", "0"],
        ["rollout", "status", "web", "--wait-timeout", "soon"],
        ["rollout", "history", "web", "--reason", "x"],
    ],
)
def test_malformed_rollout_lines_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing workload, an unknown verb, a negative revision, a bad duration: usage."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def _rev(number: int, **kw: Any) -> fpb.Revision:
    values: dict[str, Any] = {
        "number": number,
        "actor": "alice",
        "state": "SUPERSEDED",
        "created_at": ts(NOW - timedelta(minutes=10 - number)),
        **kw,
    }
    return fpb.Revision(**values)


def test_history_marks_the_current_revision_and_names_rollbacks() -> None:
    """REVISION, STATE, CREATED, ACTOR, CAUSE; a rollback reads "rollback to N" with its cause
    (the default cause is not repeated)."""
    text = rollout_output.history_table(
        [
            _rev(4, state="PROGRESSING", current=True, same_as=1, reason="v3 drops requests"),
            _rev(3, state="ROLLED_BACK", actor="bob", reason="v3"),
            _rev(2, same_as=1, reason="roll back to revision 1"),
            _rev(1, state="COMPLETE", reason=""),
        ],
        now=NOW,
    )
    lines = text.splitlines()
    assert lines[0].split() == ["REVISION", "STATE", "CREATED", "ACTOR", "CAUSE"]
    assert lines[1].startswith("4 (current)") and "rollback to 1: v3 drops requests" in lines[1]
    assert "ROLLED_BACK" in lines[2] and "bob" in lines[2] and lines[2].endswith("v3")
    assert lines[3].endswith("rollback to 1")
    assert lines[4].endswith("-")


FAILURE = fpb.RolloutFailure(
    reason="CRASH_LOOP",
    message="revision 3's instances keep crashing",
    evidence=[
        fpb.RolloutEvidence(
            instance="web-3-abc",
            host="host-1",
            reason="CRASH_LOOP",
            last_exit="exit 1",
            message="exited 1\nTraceback: boom",
        )
    ],
    runbook="runbooks/rollout-failed.md",
    next_command="keelctl rollout undo web",
    at=ts(NOW - timedelta(minutes=1)),
    rolled_back_to=2,
)


def _status(state: str = "PROGRESSING", **kw: Any) -> fpb.RolloutStatus:
    values: dict[str, Any] = {
        "workload": "web",
        "revision": 3,
        "state": state,
        "desired": 3,
        "updated": 1,
        "ready": 1,
        "old_remaining": 2,
        "message": "revision 3: waiting for 2 more updated instances to start",
        "since": ts(NOW - timedelta(minutes=2)),
        **kw,
    }
    return fpb.RolloutStatus(**values)


def test_status_shows_counts_pause_and_the_failure_record() -> None:
    """Counts, who paused it and when, and a failure with its evidence (the stderr tail),
    runbook and next command."""
    text = rollout_output.status_text(
        _status(
            "FAILED",
            paused=True,
            paused_by="alice",
            paused_at=ts(NOW - timedelta(minutes=5)),
            failure=FAILURE,
        ),
        now=NOW,
    )
    assert "workload/web revision 3: FAILED" in text
    assert "updated 1/3, ready 1/3 (of the new revision), old remaining 2" in text
    assert "paused:   by alice 2026-12-02T00:55:00Z (5m ago)" in text
    assert "failure:  CRASH_LOOP" in text
    assert "web-3-abc on host-1: CRASH_LOOP, exit 1" in text
    assert "      Traceback: boom" in text
    assert "rolled back to revision 2" in text
    assert "runbook:  runbooks/rollout-failed.md" in text
    assert "next:     keelctl rollout undo web" in text


def _history(stub: Stub, argv: list[str]) -> str | int:
    return rollout.cmd_history(Context(stub, build_parser().parse_args(argv), now=NOW))


def test_history_of_one_revision_prints_its_record_and_spec_in_full() -> None:
    """`history --revision N`: its state, who applied it, the whole cause, the failure record
    with the evidence (the stderr tail), and its spec as YAML; -o json is that revision."""
    spec = types_pb2.WorkloadSpec(command=["web", "--port", "8080"], env={"V": "3"})
    revs = [
        _rev(4, state="PROGRESSING", current=True, same_as=2),
        _rev(
            3,
            state="ROLLED_BACK",
            actor="bob",
            reason="v3: " + "x" * 100,
            failure=FAILURE,
            spec=spec,
        ),
        _rev(2, state="COMPLETE", completed_at=ts(NOW - timedelta(minutes=9))),
    ]
    text = _history(Stub([], revs), ["rollout", "history", "web", "--revision", "3"])
    assert isinstance(text, str)
    assert text.splitlines()[0] == "workload/web revision 3: ROLLED_BACK"
    assert "applied:  2026-12-02T00:53:00Z (7m ago) by bob" in text
    assert "cause:    v3: " + "x" * 100 in text  # the table cuts it; this does not
    assert "failure:  CRASH_LOOP" in text and "      Traceback: boom" in text
    assert "next:     keelctl rollout undo web" in text
    assert "  spec:\n    command: [web, --port, '8080']" in text
    assert "    env: {V: '3'}" in text
    current = _history(Stub([], revs), ["rollout", "history", "web", "--revision", "4"])
    assert isinstance(current, str) and current.startswith("workload/web revision 4 (current)")
    data = json.loads(
        str(
            _history(Stub([], revs), ["rollout", "history", "web", "--revision", "3", "-o", "json"])
        )
    )
    assert data["number"] == 3
    assert data["failure"]["evidence"][0]["message"] == "exited 1\nTraceback: boom"


def test_history_of_a_revision_not_kept_exits_1_naming_those_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A revision pruned or never made: exit 1, saying which revisions are kept."""
    stub = Stub([], [_rev(2, current=True), _rev(1)])
    assert _history(stub, ["rollout", "history", "web", "--revision", "7"]) == 1
    assert "workload web has no revision 7 in its history (kept: 2, 1)" in capsys.readouterr().err


class Stub:
    """Answers GetRolloutStatus from a script (a status, or an error to raise) and
    GetRolloutHistory with a fixed history."""

    def __init__(self, script: list[Any], history: list[fpb.Revision] | None = None) -> None:
        self._script: Iterator[Any] = iter(script)
        self.history = history or []
        self.reads = 0

    def GetRolloutStatus(self, request: Any, timeout: float) -> fpb.RolloutStatus:
        self.reads += 1
        item = next(self._script)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, fpb.RolloutStatus)
        return item

    def GetRolloutHistory(self, request: Any, timeout: float) -> fpb.GetRolloutHistoryResponse:
        return fpb.GetRolloutHistoryResponse(revisions=self.history)


class Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


def _run(stub: Stub, argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    ctx = Context(stub, args, now=NOW)
    clock = iter(range(0, 10_000, 2))
    first = stub.GetRolloutStatus(None, timeout=1)
    return rollout.wait(ctx, first, clock=lambda: float(next(clock)), sleep=lambda s: None)


WAIT = ["rollout", "status", "web", "--wait"]


def test_wait_prints_each_change_and_exits_0_when_complete(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Off a terminal: one line per change, none for a read that changed nothing; 0."""
    stub = Stub(
        [
            _status(),
            _status(),
            Unavailable(),
            _status(updated=2, ready=2, old_remaining=1),
            _status("COMPLETE", updated=3, ready=3, old_remaining=0, message="complete"),
        ]
    )
    assert _run(stub, WAIT) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "workload/web revision 3 PROGRESSING: updated 1/3, ready 1/3 (of the new revision), "
        "old remaining 2"
    )
    assert out[1].startswith("cannot read the rollout now (UNAVAILABLE)")
    assert out[2].endswith("updated 2/3, ready 2/3 (of the new revision), old remaining 1")
    assert out[3].endswith("updated 3/3, ready 3/3 (of the new revision), old remaining 0")
    assert out[4] == "workload/web revision 3 COMPLETE: complete"


def test_wait_exits_1_with_the_failure_record_when_the_rollout_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """FAILED: the record is printed (reason, evidence, runbook, next command); 1."""
    stub = Stub([_status(), _status("FAILED", failure=FAILURE, message="revision 3 failed")])
    assert _run(stub, WAIT) == 1
    out = capsys.readouterr().out
    assert "revision 3 FAILED: revision 3 failed" in out
    assert "Traceback: boom" in out and "next:     keelctl rollout undo web" in out


def test_wait_exits_1_when_a_newer_revision_rolls_back(capsys: pytest.CaptureFixture[str]) -> None:
    """The revision followed is replaced by a rollback (automatic or an undo): it will never
    complete; its failure record is shown."""
    history = [
        _rev(4, current=True, same_as=2, actor="keel", reason="auto rollback"),
        _rev(3, state="ROLLED_BACK", failure=FAILURE),
    ]
    stub = Stub([_status(), _status(revision=4, updated=3, ready=3, old_remaining=0)], history)
    assert _run(stub, WAIT) == 1
    out = capsys.readouterr().out
    assert "revision 3 was rolled back: revision 4 returns to revision 2" in out
    assert "keel: rollback to 2: auto rollback" in out
    assert "failure:  CRASH_LOOP" in out


def test_wait_follows_a_newer_revision_that_is_not_a_rollback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Someone applied again: keelctl says so and follows the new revision to its end."""
    stub = Stub(
        [_status(), _status(revision=5), _status("COMPLETE", revision=5, message="done")],
        [_rev(5, current=True), _rev(3)],
    )
    assert _run(stub, WAIT) == 0
    out = capsys.readouterr().out
    assert "revision 3 was superseded by revision 5; following it" in out


def test_wait_gives_up_at_the_wait_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """Still going at --wait-timeout: 1, and how to follow it again."""
    stub = Stub([_status()] * 10)
    assert _run(stub, [*WAIT, "--wait-timeout", "5s"]) == 1
    err = capsys.readouterr().err
    assert "still PROGRESSING after --wait-timeout" in err
    assert "keelctl rollout status web --wait" in err
    assert stub.reads == 3  # the first read, then one after each check before 5 s (2, 4)


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("AWAITING_PROMOTION", "its canaries wait to be promoted: `keelctl rollout promote web`"),
        ("PAUSED", "it holds until `keelctl rollout resume web`"),
    ],
)
def test_wait_timeout_on_a_rollout_waiting_for_an_operator_says_what_it_waits_for(
    state: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A canary awaiting promotion or a paused rollout does not "go on" by itself: the
    --wait-timeout message names the command it waits for."""
    stub = Stub([_status(state)] * 10)
    assert _run(stub, [*WAIT, "--wait-timeout", "5s"]) == 1
    err = capsys.readouterr().err
    assert f"still {state} after --wait-timeout; {says}" in err
    assert "it goes on" not in err


def test_wait_with_json_prints_one_object_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    """-o json: one JSON object per change of the status, the last one the outcome."""
    stub = Stub([_status(), _status(), _status("COMPLETE", updated=3, ready=3, old_remaining=0)])
    assert _run(stub, [*WAIT, "-o", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["state"] for line in lines] == ["PROGRESSING", "COMPLETE"]


def test_status_without_wait_exits_1_for_a_failed_rollout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A script can check a rollout's outcome without waiting."""
    for state, code in (("FAILED", 1), ("ROLLED_BACK", 1), ("PAUSED", 0), ("COMPLETE", 0)):
        args = build_parser().parse_args(["rollout", "status", "web"])
        ctx = Context(Stub([_status(state)]), args, now=NOW)
        assert rollout.cmd_status(ctx) == code
        assert f"revision 3: {state}" in capsys.readouterr().out


def test_undo_says_what_it_applied_and_what_is_kept() -> None:
    reply = fpb.UndoRolloutResponse(
        workload=types_pb2.Workload(
            name="web", status=types_pb2.WorkloadStatus(desired=3, updated=2)
        ),
        revision=4,
        to_revision=2,
    )
    text = rollout_output.undo_text(reply)
    assert text.startswith("workload/web rolled back to revision 2 as revision 4")
    assert "2 of 3 instance(s) already run its spec and are kept" in text
    assert "keelctl rollout status web --wait" in text
    assert "paused" not in text


def test_undo_under_an_operators_pause_says_it_waits_for_a_resume() -> None:
    """An operator's pause holds the rollback too; Keel's own hold is lifted by it."""
    workload = types_pb2.Workload(
        name="web", status=types_pb2.WorkloadStatus(desired=3, updated=2), paused=True
    )
    for by, held in (("alice", True), ("keel/rollout", False)):
        workload.paused_by = by
        reply = fpb.UndoRolloutResponse(workload=workload, revision=4, to_revision=2)
        text = rollout_output.undo_text(reply)
        assert ("keelctl rollout resume web" in text) is held


def test_the_progress_bar_shows_counts_messages_and_the_outcome_on_a_terminal() -> None:
    """--wait on a terminal: the bar with its counts, each new message as is (no markup read
    from it), and the outcome with the failure record."""
    from rich.console import Console

    from keel.ctl.rollout_progress import BarView

    out = io.StringIO()
    view = BarView(Console(file=out, force_terminal=True, width=160, color_system=None))
    with view:
        view.update(_status(message="waiting for [bold] things"))
        failed = _status("FAILED", failure=FAILURE, message="revision 3 failed")
        view.update(failed)
    view.finish(failed, now=NOW)
    text = out.getvalue()
    assert "waiting for [bold] things" in text
    assert "updated 1/3, ready 1/3 (of the new revision), old remaining 2" in text
    assert "workload/web revision 3 FAILED: revision 3 failed" in text
    assert "runbook:  runbooks/rollout-failed.md" in text


def test_describe_workload_says_who_paused_its_rollout_and_when() -> None:
    """A paused workload's describe names the pause; an unpaused one has no such line."""
    from keel.ctl import output

    spec = types_pb2.WorkloadSpec(command=["sleep", "1"])
    w = types_pb2.Workload(name="web", generation=2, spec=spec)
    assert "Rollout:" not in output.describe_workload(w, [], now=NOW)
    w.paused, w.paused_by = True, "alice"
    w.paused_at.CopyFrom(ts(NOW - timedelta(minutes=3)))
    lines = output.describe_workload(w, [], now=NOW).splitlines()
    assert "Rollout:          paused by alice 2026-12-02T00:57:00Z (3m ago)" in lines


def test_describe_workload_shows_the_rollout_policy_and_the_rollouts_state() -> None:
    """The manifest's `rollout:` (defaults when unset), and the current revision's rollout:
    its state, a failure's reason, and who holds it (Keel's hold of a failed rollout)."""
    from keel.ctl import output

    spec = types_pb2.WorkloadSpec(command=["sleep", "1"])
    w = types_pb2.Workload(name="web", generation=3, spec=spec)
    lines = output.describe_workload(w, [], now=NOW, rollout=_status("COMPLETE")).splitlines()
    policy = "progress_deadline 10m, auto_rollback no, canary 0, auto_promote no"
    assert f"Rollout policy:   {policy}" in lines
    assert "Rollout:          revision 3 COMPLETE" in lines
    w.rollout.CopyFrom(
        types_pb2.RolloutPolicy(progress_deadline_ms=90_000, canary=1, auto_promote=True)
    )
    w.paused, w.paused_by = True, "keel/rollout"
    w.paused_at.CopyFrom(ts(NOW - timedelta(minutes=3)))
    failed = _status("FAILED", failure=FAILURE, paused=True, paused_by="keel/rollout")
    lines = output.describe_workload(w, [], now=NOW, rollout=failed).splitlines()
    policy = "progress_deadline 1m30s, auto_rollback no, canary 1, auto_promote yes"
    assert f"Rollout policy:   {policy}" in lines
    assert (
        "Rollout:          revision 3 FAILED (CRASH_LOOP), paused by keel/rollout "
        "2026-12-02T00:57:00Z (3m ago)"
    ) in lines
