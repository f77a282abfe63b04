"""Table tests for controlplane.rollout_judge: complete, failed (stuck or no progress), rolled
back or held, promoted, or looked at again later; and the clock it keeps between passes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.rollout_judge import (
    EVIDENCE_LIMIT,
    PROGRESS_DEADLINE,
    Complete,
    Facts,
    Fail,
    Judgement,
    Member,
    Promote,
    Track,
    judge,
    next_command,
    rollout_state,
)
from keel.model import RolloutPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE_S = 60
POLICY = RolloutPolicy(progress_deadline_ms=DEADLINE_S * 1000)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ready(i: int) -> Member:
    return Member(f"web-2-{i:06x}", f"host-{i}", ready=True)


def waiting(i: int, message: str = "") -> Member:
    return Member(f"web-2-{i:06x}", f"host-{i}", ready=False, message=message)


def stuck(i: int, reason: str, message: str = "") -> Member:
    return Member(f"web-2-{i:06x}", f"host-{i}", ready=False, stuck=reason, message=message)


def facts(**kw: object) -> Facts:
    base = Facts(
        revision=2,
        state="PROGRESSING",
        since=T0,
        now=T0,
        converged=False,
        members=(),
        old_live=3,
        desired=3,
        paused=False,
        canary_pending=False,
        policy=POLICY,
        min_ready_s=10.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def track(**kw: object) -> Track:
    base = Track(revision=2, best_ready=0, fewest_old=3, progress_at=T0)
    return replace(base, **kw)  # type: ignore[arg-type]


CRASH = "last exit: exit 1; restarts: 2\nstderr (last lines):\nboom: cannot open config"

CASES: list[tuple[str, Facts, Track | None, type | None, float | None]] = [
    # (case, facts, track, action, recheck_s)
    ("converged: complete", facts(converged=True, members=(ready(1),)), None, Complete, None),
    (
        "a held revision that converged after all (resumed): complete",
        facts(state="FAILED", converged=True),
        None,
        Complete,
        None,
    ),
    ("a held revision not converged: nothing", facts(state="FAILED"), None, None, None),
    ("a settled revision: nothing", facts(state="COMPLETE"), None, None, None),
    ("a superseded revision: nothing", facts(state="SUPERSEDED", now=at(999)), None, None, None),
    (
        "a crash loop fails it at once",
        facts(members=(ready(1), stuck(2, "CRASH_LOOP", CRASH))),
        None,
        Fail,
        None,
    ),
    (
        "a start failure fails it at once",
        facts(members=(stuck(1, "START_FAILED", "exec: no such file"),)),
        None,
        Fail,
        None,
    ),
    (
        "a failing health check fails it",
        facts(members=(stuck(1, "HEALTH_CHECK_FAILING", "connection refused"),)),
        None,
        Fail,
        None,
    ),
    (
        "a stuck reason that is not the revision's fault does not",
        facts(members=(stuck(1, "HOST_UNREACHABLE"), ready(2)), now=at(10)),
        track(best_ready=1),
        None,
        50.0,
    ),
    (
        "waiting within the deadline: look again at it",
        facts(members=(waiting(1),), now=at(20)),
        track(),
        None,
        40.0,
    ),
    (
        "no progress for the deadline: failed",
        facts(members=(waiting(1, "health check: connection refused"),), now=at(61)),
        track(),
        Fail,
        None,
    ),
    (
        "a new instance ready is progress: the clock restarts",
        facts(members=(ready(1), waiting(2)), now=at(61)),
        track(best_ready=0),
        None,
        60.0,
    ),
    (
        "an old instance gone is progress",
        facts(members=(waiting(1),), old_live=2, now=at(61)),
        track(),
        None,
        60.0,
    ),
    (
        "ready again after a flap is no progress",
        facts(members=(ready(1),), now=at(61)),
        track(best_ready=1),
        Fail,
        None,
    ),
    (
        "paused: never failed for no progress",
        facts(members=(waiting(1),), paused=True, now=at(999)),
        track(paused=True),
        None,
        None,
    ),
    (
        "resumed: the clock restarts",
        facts(members=(waiting(1),), now=at(999)),
        track(paused=True),
        None,
        60.0,
    ),
    (
        "paused, yet crashing: failed",
        facts(members=(stuck(1, "CRASH_LOOP", CRASH),), paused=True),
        track(paused=True),
        Fail,
        None,
    ),
    (
        "promoted later than the clock: counted from the promotion",
        facts(members=(ready(1),), since=at(100), now=at(130)),
        track(best_ready=1),
        None,
        30.0,
    ),
    (
        "a first look (a new leader) starts the clock now, never early",
        facts(members=(waiting(1),), now=at(500)),
        None,
        None,
        60.0,
    ),
    (
        "a canary awaiting promotion is not failed for waiting",
        facts(state="AWAITING_PROMOTION", canary_pending=True, members=(ready(1),), now=at(999)),
        track(best_ready=1),
        None,
        None,
    ),
    (
        "a stuck canary fails the rollout",
        facts(
            state="AWAITING_PROMOTION",
            canary_pending=True,
            members=(stuck(1, "CRASH_LOOP", CRASH),),
        ),
        None,
        Fail,
        None,
    ),
]


@pytest.mark.parametrize(("case", "f", "t", "action", "recheck"), CASES, ids=[c[0] for c in CASES])
def test_judge(
    case: str, f: Facts, t: Track | None, action: type | None, recheck: float | None
) -> None:
    """What the judge decides, and when it looks again with nothing changed."""
    got = judge(f, t)
    assert (type(got.action) if got.action is not None else None) is action, got
    assert got.recheck_s == recheck, got


def test_a_crash_loop_failure_names_the_reason_and_carries_the_stderr() -> None:
    """The failure's reason is the stuck reason; its message names the instance and the last
    exit; its evidence carries each stuck instance's message, stderr tail included."""
    got = judge(facts(members=(ready(1), stuck(2, "CRASH_LOOP", CRASH))), None)
    assert isinstance(got.action, Fail)
    fail = got.action
    assert fail.reason == "CRASH_LOOP"
    assert "revision 2: 1 of its 2 instances CRASH_LOOP" in fail.message
    assert "web-2-000002 on host-2: last exit: exit 1; restarts: 2" in fail.message
    assert [m.id for m in fail.evidence] == ["web-2-000002"]
    assert "boom: cannot open config" in fail.evidence[0].message
    assert not fail.roll_back


def test_the_first_reason_by_order_is_named_and_the_others_follow_in_the_evidence() -> None:
    got = judge(
        facts(
            members=(
                stuck(1, "HEALTH_CHECK_FAILING"),
                stuck(2, "CRASH_LOOP"),
                stuck(3, "CRASH_LOOP"),
            )
        ),
        None,
    )
    assert isinstance(got.action, Fail)
    assert got.action.reason == "CRASH_LOOP"
    assert [m.stuck for m in got.action.evidence] == [
        "CRASH_LOOP",
        "CRASH_LOOP",
        "HEALTH_CHECK_FAILING",
    ]
    assert "(and 1 more stuck otherwise)" in got.action.message


def test_evidence_is_bounded() -> None:
    members = tuple(stuck(i, "CRASH_LOOP") for i in range(1, 20))
    got = judge(facts(members=members, desired=19), None)
    assert isinstance(got.action, Fail)
    assert len(got.action.evidence) == EVIDENCE_LIMIT
    assert "19 of its 19 instances CRASH_LOOP" in got.action.message


def test_no_progress_names_the_deadline_the_counts_and_the_waiting_instance() -> None:
    f = facts(members=(ready(1), waiting(2, "health check: connection refused")), now=at(61))
    got = judge(f, track(best_ready=1))
    assert isinstance(got.action, Fail)
    assert got.action.reason == PROGRESS_DEADLINE
    assert got.action.message == (
        "revision 2 made no progress for 60s (rollout.progress_deadline): 1 of 3 wanted "
        "instances of it ready, 3 of other revisions left; web-2-000002 on host-2: health "
        "check: connection refused"
    )
    assert [m.id for m in got.action.evidence] == ["web-2-000002"]


@pytest.mark.parametrize(
    ("auto_rollback", "keel_rollback", "rolls_back"),
    [(True, False, True), (False, False, False), (True, True, False)],
)
def test_auto_rollback_rolls_back_unless_the_revision_is_keels_own_rollback(
    auto_rollback: bool, keel_rollback: bool, rolls_back: bool
) -> None:
    """A rollback that fails too is held: a second automatic step would ping-pong."""
    f = facts(
        members=(stuck(1, "CRASH_LOOP"),),
        policy=replace(POLICY, auto_rollback=auto_rollback),
        keel_rollback=keel_rollback,
    )
    got = judge(f, None)
    assert isinstance(got.action, Fail)
    assert got.action.roll_back is rolls_back


def _canary(now: float, *members: Member, auto: bool = True, canary: int = 1) -> Facts:
    return facts(
        state="AWAITING_PROMOTION",
        canary_pending=True,
        members=members,
        now=at(now),
        policy=replace(POLICY, canary=canary, auto_promote=auto),
    )


def test_auto_promote_once_the_canaries_stayed_ready_for_min_ready() -> None:
    """Ready at 5 s: promoted at 15 s (min_ready 10 s), not before; not without auto_promote."""
    first = judge(_canary(5, ready(1)), track())
    assert first.action is None and first.recheck_s == 10.0
    assert first.track.canaries_ready_since == at(5)
    early = judge(_canary(14, ready(1)), first.track)
    assert early.action is None and early.recheck_s == pytest.approx(1.0)
    due = judge(_canary(15, ready(1)), early.track)
    assert isinstance(due.action, Promote)
    manual = judge(_canary(100, ready(1), auto=False), first.track)
    assert manual.action is None and manual.recheck_s is None


def test_a_canary_not_ready_restarts_its_min_ready() -> None:
    first = judge(_canary(5, ready(1)), track())
    flap = judge(_canary(12, waiting(1)), first.track)
    assert flap.action is None and flap.track.canaries_ready_since is None
    again = judge(_canary(13, ready(1)), flap.track)
    assert again.track.canaries_ready_since == at(13)
    assert judge(_canary(20, ready(1)), again.track).action is None
    assert isinstance(judge(_canary(23, ready(1)), again.track).action, Promote)


def test_auto_promote_waits_for_every_canary_wanted() -> None:
    got = judge(_canary(100, ready(1), canary=2), track(canaries_ready_since=at(0)))
    assert got.action is None and got.track.canaries_ready_since is None


def test_the_track_follows_the_revision() -> None:
    """A new revision starts a new track at its first look; the same one keeps its marks."""
    old = track(revision=1, best_ready=3, fewest_old=0)
    got: Judgement = judge(facts(members=(ready(1),), now=at(30)), old)
    assert got.track == Track(revision=2, best_ready=1, fewest_old=3, progress_at=at(30))


@pytest.mark.parametrize(
    ("state", "paused", "keel_rollback", "counted"),
    [
        ("PROGRESSING", False, False, "PROGRESSING"),
        ("PROGRESSING", True, False, "PAUSED"),
        ("AWAITING_PROMOTION", True, False, "PAUSED"),
        ("AWAITING_PROMOTION", False, False, "AWAITING_PROMOTION"),
        ("COMPLETE", True, False, "COMPLETE"),
        ("FAILED", True, False, "FAILED"),
        ("PROGRESSING", False, True, "ROLLED_BACK"),
        ("COMPLETE", False, True, "ROLLED_BACK"),
        ("FAILED", False, True, "FAILED"),
        ("ABORTED", False, False, None),
    ],
)
def test_rollout_state_as_the_gauge_counts_it(
    state: str, paused: bool, keel_rollback: bool, counted: str | None
) -> None:
    assert rollout_state(state, paused=paused, keel_rollback=keel_rollback) == counted


def test_next_command_reads_the_logs_after_a_rollback_and_undoes_a_hold() -> None:
    fail = Fail("CRASH_LOOP", "m", (stuck(2, "CRASH_LOOP"),), roll_back=True)
    assert next_command("web", fail, rolled_back=True) == "keelctl logs web-2-000002 --tail 50"
    assert next_command("web", fail, rolled_back=False) == "keelctl rollout undo web"
