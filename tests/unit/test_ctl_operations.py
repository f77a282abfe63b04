"""keelctl drain, ops and op: their command lines, and how operations, plans and progress
read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keel.convert import ts
from keel.ctl import operation_output as out
from keel.ctl.main import build_parser, main
from keel.v1 import fleet_pb2 as fpb

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["drain", "h1"],
            {"hosts": ["h1"], "deadline_ms": 0, "on_deadline": "fail", "max_parallel": 0},
        ),
        (
            ["drain", "h1", "h2", "--deadline", "10m", "--on-deadline", "force"],
            {"deadline_ms": 600_000, "on_deadline": "force"},
        ),
        (["drain", "-l", "rack=a", "--max-parallel", "5", "--wait"], {"max_parallel": 5}),
        (
            ["drain", "h1", "--dry-run", "--ignore-daemons"],
            {"dry_run": True, "ignore_daemons": True},
        ),
        (["ops"], {"command": "ops", "all": False}),
        (["ops", "--all", "-o", "json"], {"all": True, "output": "json"}),
        (["op", "get", "op-000001"], {"op_command": "get", "id": "op-000001"}),
        (["op", "watch", "op-000001"], {"op_command": "watch"}),
        (["op", "cancel", "op-000001", "--uncordon"], {"op_command": "cancel", "uncordon": True}),
    ],
)
def test_operation_command_lines_parse(argv: list[str], expected: dict[str, Any]) -> None:
    """Drain with its options, ops, and op get/watch/cancel."""
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["drain", "h1", "--deadline", "500ms"],
        ["drain", "h1", "--deadline", "soon"],
        ["drain", "h1", "--on-deadline", "kill"],
        ["drain", "h1", "--max-parallel", "-1"],
        ["op", "get"],
        ["op", "frob", "op-1"],
        ["op", "get", "op-1", "--uncordon"],
    ],
)
def test_malformed_operation_lines_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A deadline under a second or not a duration, an unknown verb: usage errors."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def _blocker(**kw: Any) -> fpb.Blocker:
    values: dict[str, Any] = {
        "instance": "web-1-00000a",
        "workload": "web",
        "host": "host-1",
        "reason": "BUDGET_EXHAUSTED",
        "message": "web allows max_unavailable=1 of 3: 2 ready, at least 2 must stay",
        "since": ts(NOW - timedelta(seconds=90)),
        "runbook": "runbooks/drain/budget-exhausted.md",
        "next_command": "keelctl describe workload web",
        **kw,
    }
    return fpb.Blocker(**values)


def _op(state: str = "RUNNING", **kw: Any) -> fpb.Operation:
    values: dict[str, Any] = {
        "id": "op-000001",
        "kind": "drain",
        "state": state,
        "hosts": ["host-1"],
        "params": fpb.DrainParams(deadline_ms=3_600_000, on_deadline="fail"),
        "actor": "keelctl@ipv4:127.0.0.1:5000",
        "runbook": "runbooks/cordon-and-drain.md",
        "progress": fpb.OperationProgress(
            moved=3, remaining=2, blocked=1, in_flight=1, eta_s=42.0, blockers=[_blocker()]
        ),
        "created_at": ts(NOW - timedelta(minutes=2)),
        "deadline_at": ts(NOW + timedelta(minutes=58)),
        **kw,
    }
    return fpb.Operation(**values)


def test_ops_table_shows_progress_and_eta() -> None:
    """One row per operation: state, hosts, moved of total, blocked, ETA, age."""
    assert out.operations_table([_op()], now=NOW) == (
        "ID         KIND   STATE    HOSTS   MOVED  BLOCKED  ETA  AGE\n"
        "op-000001  drain  RUNNING  host-1  3/5    1        42s  2m"
    )


def test_op_get_shows_every_blocker_with_its_runbook_and_next_command() -> None:
    """op get: the progress, each blocker since when, its runbook and next command."""
    text = out.describe_operation(_op(), now=NOW)
    assert "Progress:       moved 3/5, 2 remaining, 1 under way, 1 blocked" in text
    assert "Reason:    BUDGET_EXHAUSTED for 90s" in text
    assert "Runbook:   runbooks/drain/budget-exhausted.md" in text
    assert "Next:      keelctl describe workload web" in text
    assert "Runbook:        runbooks/cordon-and-drain.md" in text


def test_a_progress_line_names_the_current_blocker() -> None:
    """--wait off a terminal: one line with the counts, the ETA and the first blocker."""
    assert out.progress_line(_op()) == (
        "op-000001 RUNNING: moved 3/5, 2 remaining, 1 under way, 1 blocked, eta 42s; blocked: "
        "web-1-00000a BUDGET_EXHAUSTED: web allows max_unavailable=1 of 3: 2 ready, at least 2 "
        "must stay"
    )


def test_a_failed_result_lists_its_blockers_and_the_runbook() -> None:
    """The result names the runbook, and a failure each blocker's next command."""
    text = out.result_text(_op("FAILED", message="the deadline (1h) passed"))
    assert text.splitlines()[:2] == [
        "op-000001 FAILED: the deadline (1h) passed",
        "runbook: runbooks/cordon-and-drain.md",
    ]
    assert "(next: keelctl describe workload web)" in text


def test_a_dry_run_lists_moves_by_wave_and_the_estimate() -> None:
    """Each move: wave, instance, from, to, how, when; then the estimate."""
    plan = fpb.PlanDrainResponse(
        hosts=["host-1"],
        moves=[
            fpb.PlannedMove(
                instance="web-1-a", workload="web", source="host-1", target="host-2",
                kind="make-before-break", wave=1, starts_at_s=0, done_at_s=7,
            ),
        ],
        waves=1,
        eta_s=7,
    )  # fmt: skip
    text = out.drain_plan_text(plan)
    assert text.splitlines()[0] == "Dry run: drain of host-1 (nothing was changed)"
    assert "1     web-1-a   web       host-1  host-2  make-before-break  0.0s    7s" in text
    assert text.splitlines()[-1] == "Estimate: 7s in 1 wave."


def test_a_dry_run_that_would_not_finish_says_so() -> None:
    """A plan that blocks says what would block and that it would not finish."""
    plan = fpb.PlanDrainResponse(hosts=["host-1"], blockers=[_blocker()], remaining=1, eta_s=-1)
    text = out.drain_plan_text(plan)
    assert "Nothing would move." in text and "BUDGET_EXHAUSTED" in text
    assert "Would not finish: 1 instance(s) would stay on the hosts" in text


def test_the_progress_bar_shows_the_blocker_and_the_result_on_a_terminal() -> None:
    """--wait on a terminal: the bar, the current blocker printed as is (no markup read from
    it), and the result with its runbook."""
    import io

    from rich.console import Console

    from keel.ctl.progress import BarView

    out = io.StringIO()
    view = BarView(Console(file=out, force_terminal=True, width=160, color_system=None))
    blocked = fpb.OperationProgress(
        moved=1, remaining=1, blocked=1, blockers=[_blocker(message="no [bold]room")]
    )
    op = _op(progress=blocked)
    with view:
        view.update(op, now=NOW)
        done = _op("SUCCEEDED", message="2 instance(s) moved off host-1")
        done.progress.moved = 2
        view.update(done, now=NOW)
    view.finish(done)
    text = out.getvalue()
    assert "blocked: web-1-00000a BUDGET_EXHAUSTED: no [bold]room" in text
    assert "op-000001 SUCCEEDED: 2 instance(s) moved off host-1" in text
    assert "runbook: runbooks/cordon-and-drain.md" in text
