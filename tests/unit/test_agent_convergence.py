"""The agent's convergence tracker: which desired changes are not yet matched, since when."""

from __future__ import annotations

import pytest

from agent.convergence import Converged, ConvergenceTracker
from keel.model import Desired


def test_create_converges_when_matching_with_its_latency() -> None:
    """A create is measured from receipt to the pass that finds it matching."""
    t = ConvergenceTracker()
    t.changed("a", Desired.RUNNING, at=10.0)
    assert t.observe({"a": False}, now=11.0) == []
    assert (t.unconverged, t.oldest_age(12.0)) == (1, 2.0)
    assert t.observe({"a": True}, now=12.5) == [Converged("a", "create", 2.5)]
    assert (t.unconverged, t.oldest_age(13.0)) == (0, 0.0)


def test_remove_converges_once_gone_from_the_desired_set() -> None:
    """A remove is converged when the instance has left the desired set (confirmed)."""
    t = ConvergenceTracker()
    t.changed("a", Desired.REMOVED, at=10.0)
    assert t.observe({"a": False}, now=11.0) == []
    assert t.observe({}, now=12.0) == [Converged("a", "remove", 2.0)]
    assert t.unconverged == 0


@pytest.mark.parametrize(
    ("desired", "change"),
    [(Desired.RUNNING, "create"), (Desired.STOPPED, "stop"), (Desired.REMOVED, "remove")],
)
def test_change_kind_follows_the_desired_state(desired: Desired, change: str) -> None:
    """create, stop and remove are named after the desired state received."""
    t = ConvergenceTracker()
    t.changed("a", desired, at=0.0)
    assert t.observe({"a": True}, now=1.0) == [Converged("a", change, 1.0)]


def test_a_crash_counts_in_the_backlog_but_not_the_histogram() -> None:
    """An instance that stops matching without a change is unconverged, with no latency."""
    t = ConvergenceTracker()
    assert t.observe({"a": True}, now=1.0) == []
    assert t.observe({"a": False}, now=2.0) == []
    assert (t.unconverged, t.oldest_age(5.0)) == (1, 3.0)
    assert t.observe({"a": True}, now=6.0) == []
    assert t.unconverged == 0
