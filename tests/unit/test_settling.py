"""Settling: in a rollout, a new revision's instance counts as available only once it has been
ready for its min_ready, so a revision that crashes a moment after it starts cannot roll
through the whole workload before its first exit is reported."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from test_rollout import H3, OLD3, inst, plan_for, web

from controlplane.fleet_index import InstanceRecord
from controlplane.settling import may_settle, settled_views
from controlplane.view import InstanceView

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
V2 = web(generation=2)


def record(view: InstanceView, *, ready_for_s: float | None) -> InstanceRecord:
    at = None if ready_for_s is None else NOW - timedelta(seconds=ready_for_s)
    return InstanceRecord(
        view=view,
        desired_changed_at=NOW - timedelta(minutes=1),
        unconverged_since=None,
        observed=True,
        reason="",
        message="",
        agent_stuck=False,
        stop_grace_ms=0,
        converged_at=at,
    )


def test_nothing_settles_without_a_rollout_or_a_min_ready() -> None:
    new = [inst("a", "host-1", gen=2), inst("b", "host-2", gen=2)]
    assert not may_settle(V2, new, min_ready_ms=1000)  # no old instance: not a rollout
    assert not may_settle(V2, [*OLD3, *new], min_ready_ms=0)
    assert may_settle(V2, [*OLD3, *new], min_ready_ms=1000)


def test_a_new_instance_ready_for_less_than_min_ready_is_settling() -> None:
    records = [
        *(record(o, ready_for_s=3600) for o in OLD3),
        record(inst("n1", "host-1", gen=2), ready_for_s=0.25),  # just started
        record(inst("n2", "host-2", gen=2), ready_for_s=0.5),
        record(inst("n3", "host-3", gen=2, ready=False), ready_for_s=None),
    ]
    views, settle_in = settled_views(V2, records, min_ready_ms=1000, now=NOW)
    settling = {v.id for v in views if v.settling}
    assert settling == {"n1", "n2"}
    assert settle_in is not None and abs(settle_in - 0.5) < 1e-6


def test_once_one_instance_of_the_revision_stayed_up_nothing_settles() -> None:
    """The revision has shown it does not crash at start: one min_ready wait per rollout, not
    one per wave (a large rollout stays within the convergence SLO)."""
    records = [
        *(record(o, ready_for_s=3600) for o in OLD3),
        record(inst("n1", "host-1", gen=2), ready_for_s=0.25),
        record(inst("n2", "host-2", gen=2), ready_for_s=5),  # stayed up
    ]
    views, settle_in = settled_views(V2, records, min_ready_ms=1000, now=NOW)
    assert not any(v.settling for v in views) and settle_in is None


def test_a_clock_behind_the_database_never_waits_longer_than_min_ready() -> None:
    ahead = record(inst("n1", "host-1", gen=2), ready_for_s=-3600)  # stamped in the future
    _, settle_in = settled_views(V2, [*map(lambda o: record(o, ready_for_s=1), OLD3), ahead],
                                 min_ready_ms=1000, now=NOW)  # fmt: skip
    assert settle_in == 1.0


def test_the_rollout_takes_no_old_instance_down_for_a_settling_replacement() -> None:
    """Three old, one new just started (its surge): the budget already took one old down for
    it; while the new one settles, no other old one goes, however ready the agent says it is."""
    fleet = [*OLD3[:2], inst("n1", "host-3", gen=2)]
    ready_now = plan_for(V2, fleet, H3)
    assert ready_now.remove  # taken for available: another old one would go
    settling = [*OLD3[:2], dataclasses.replace(fleet[2], settling=True)]
    held = plan_for(V2, settling, H3)
    assert not held.remove
    assert held.blocked and "not ready yet" in held.blocked
