"""The stuck verdict of a workload whose canaries await promotion (pure, table-driven): never
ROLLOUT_BLOCKED for waiting; CANARY_AWAITING_PROMOTION past --canary-waiting-after, with how
many canaries are ready and since when; UNSCHEDULABLE still when they cannot be placed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from test_stuck_verdicts import INSTANCE, NO_HOST, NOW, WORKLOAD, ago

from controlplane.rollout import WorkloadPlan
from controlplane.store import InstanceRow, WorkloadRow
from controlplane.verdicts import judge_workload, may_be_stuck
from keel.model import Desired, Phase, RolloutPolicy
from keel.stuck import GUIDES, Reason, next_command

HOUR = 3600.0
# Revision 2 waits with one canary beside two instances of revision 1.
WAITING = replace(
    WORKLOAD,
    workload=replace(WORKLOAD.workload, replicas=2, rollout=RolloutPolicy(canary=1)),
    generation=2,
    spec_generations=frozenset({2}),
    canary_pending=True,
    unconverged_since=ago(2 * HOUR),
)
OLD = [replace(INSTANCE, id="web-1-a"), replace(INSTANCE, id="web-1-b")]
CANARY = replace(INSTANCE, id="web-2-c", generation=2)
STARTING = replace(CANARY, phase=Phase.STARTING, ready=False)
QUIET = WorkloadPlan((), (), None, None)


@pytest.mark.parametrize(
    ("row", "plan", "own", "since", "expected"),
    [
        pytest.param(WAITING, QUIET, [*OLD, CANARY], ago(600), None, id="waiting-briefly"),
        pytest.param(
            WAITING,
            QUIET,
            [*OLD, CANARY],
            ago(2 * HOUR),
            Reason.CANARY_AWAITING_PROMOTION,
            id="waiting-past-the-setting",
        ),
        pytest.param(
            replace(WAITING, unconverged_since=None),
            QUIET,
            [*OLD, CANARY],
            ago(2 * HOUR),
            Reason.CANARY_AWAITING_PROMOTION,
            id="waiting-past-the-setting-before-the-detector-marked-it",
        ),
        pytest.param(
            WAITING,
            WorkloadPlan(("host-1",), (), NO_HOST, None),
            OLD,
            ago(600),
            Reason.UNSCHEDULABLE,
            id="canary-that-cannot-be-placed",
        ),
        pytest.param(
            WAITING,
            WorkloadPlan((), (), None, "waiting for 1 removed instance to stop"),
            [*OLD, STARTING],
            ago(600),
            None,
            id="never-rollout-blocked-for-waiting",
        ),
        pytest.param(
            replace(WAITING, canary_pending=False),
            WorkloadPlan((), ("web-1-a",), None, "1 old instance to replace"),
            [*OLD, CANARY],
            ago(2 * HOUR),
            Reason.ROLLOUT_BLOCKED,
            id="promoted-rollout-is-judged-as-any",
        ),
        pytest.param(
            replace(WAITING, workload=replace(WAITING.workload, rollout=RolloutPolicy())),
            WorkloadPlan((), (), None, "1 old instance to replace"),
            [*OLD, CANARY],
            ago(2 * HOUR),
            Reason.ROLLOUT_BLOCKED,
            id="canary-policy-removed-rolls-as-any",
        ),
    ],
)
def test_canary_verdicts(
    row: WorkloadRow,
    plan: WorkloadPlan,
    own: list[InstanceRow],
    since: datetime,
    expected: Reason | None,
) -> None:
    """Waiting for promotion is by design until the setting; then it is shown, not before."""
    verdict = judge_workload(
        row, plan, own, set(), now=NOW, canary_since=since, canary_waiting_after_s=HOUR
    )
    assert (verdict.reason if verdict else None) == expected
    assert verdict is None or may_be_stuck(row, now=NOW, failure=None)


def test_the_message_says_how_many_canaries_are_ready_and_since_when() -> None:
    """It names the revision, the canaries ready or not, the old instances, and the commands;
    it holds no age, so it does not change (and is not recorded again) every pass."""
    tombstone = replace(CANARY, id="web-2-x", desired=Desired.REMOVED)
    own = [*OLD, STARTING, tombstone]
    verdict = judge_workload(
        WAITING, QUIET, own, set(), now=NOW, canary_since=ago(2 * HOUR), canary_waiting_after_s=HOUR
    )
    assert verdict is not None
    assert verdict.message == (
        "revision 2 has awaited promotion since 2026-11-22 10:00:00 UTC (longer than "
        "--canary-waiting-after 60m): 1 of 1 canaries live, 0 ready and 1 not, beside 2 old "
        "instance(s); `keelctl rollout promote web` lets the rollout continue, "
        "`keelctl rollout abort web` removes the canaries"
    )
    later = judge_workload(
        WAITING, QUIET, own, set(), now=NOW, canary_since=ago(3 * HOUR), canary_waiting_after_s=HOUR
    )
    assert later is not None and "09:00:00" in later.message


def test_the_guide_points_at_the_runbook_and_promote() -> None:
    """Its runbook, and the next command: promote the workload."""
    guide = GUIDES[Reason.CANARY_AWAITING_PROMOTION]
    assert guide.runbook == "runbooks/stuck/canary-awaiting-promotion.md"
    assert next_command(Reason.CANARY_AWAITING_PROMOTION, workload="web") == (
        "keelctl rollout promote web"
    )
    # After the reasons there were before it: a closed set that only grows at its end.
    assert list(Reason).index(Reason.CANARY_AWAITING_PROMOTION) > list(Reason).index(
        Reason.DRAIN_BLOCKED
    )
