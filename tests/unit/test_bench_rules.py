"""The benchmark harness's own rules: how a hollow agent answers, how changes pair with
instances, how figures are judged. (tests/e2e/test_bench_harness.py runs the whole harness.)"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from agent.convert import DesiredUpdate
from agent.state import Assignment
from bench.changes import pair_changes
from bench.churn import _histogram, _same_bucket, _zeros
from bench.hollow import CRASH_ENV, Config, HollowAgent, Tally
from bench.measure import percentile
from bench.report import FAILED, MET, MISSED, NO_TARGET, NOT_BUILT, Figure, Outcome, Target
from bench.slis import quantile
from keel.model import Desired, Phase, WorkloadSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _assign(iid: str, desired: Desired) -> Assignment:
    return Assignment(
        instance_id=iid, workload="w", generation=1, desired=desired, spec=WorkloadSpec(("sleep",))
    )


def _agent() -> tuple[HollowAgent, Tally]:
    tally = Tally()
    return HollowAgent("h-1", config=Config(("x:1",)), first_address=0, tally=tally), tally


def test_a_new_instance_is_reported_starting_then_running_and_ready() -> None:
    """Desired RUNNING: one STARTING report, then RUNNING and ready, at once."""
    agent, tally = _agent()
    starting, done = agent.apply(DesiredUpdate(False, 7, (_assign("a", Desired.RUNNING),)))
    assert [(r.instance_id, r.phase) for r in starting] == [("a", Phase.STARTING)]
    assert [(r.instance_id, r.phase, r.ready) for r in done] == [("a", Phase.RUNNING, True)]
    assert agent.revision == 7 and agent.running == 1 and tally.counts["starts"] == 1


def test_an_instance_whose_spec_says_crash_is_reported_in_a_crash_loop() -> None:
    """HOLLOW_CRASH: FAILED, the agent's own CRASH_LOOP verdict, the value as its stderr."""
    agent, _ = _agent()
    spec = WorkloadSpec(("sleep",), env={CRASH_ENV: "boom"})
    crashing = Assignment("a", "w", 2, Desired.RUNNING, spec)
    _, [report] = agent.apply(DesiredUpdate(False, 7, (crashing,)))
    assert (report.phase, report.ready, report.reason) == (Phase.FAILED, False, "CRASH_LOOP")
    assert report.stuck is not None and report.stuck.reason == "CRASH_LOOP"
    assert report.message.endswith("stderr (last lines):\nboom")


def test_an_instance_already_running_is_not_started_again() -> None:
    """The same assignment twice (a resync) changes nothing and reports nothing."""
    agent, tally = _agent()
    agent.apply(DesiredUpdate(False, 1, (_assign("a", Desired.RUNNING),)))
    assert agent.apply(DesiredUpdate(False, 2, (_assign("a", Desired.RUNNING),))) == ([], [])
    assert tally.counts["starts"] == 1 and tally.counts["restarts"] == 0


@pytest.mark.parametrize(
    ("desired", "phase", "removed", "kept"),
    [(Desired.STOPPED, Phase.STOPPED, False, True), (Desired.REMOVED, Phase.STOPPED, True, False)],
    ids=["stopped", "tombstone"],
)
def test_a_stop_or_a_tombstone_is_answered(
    desired: Desired, phase: Phase, removed: bool, kept: bool
) -> None:
    """STOPPED is reported stopped; a tombstone is confirmed removed and forgotten."""
    agent, tally = _agent()
    agent.apply(DesiredUpdate(False, 1, (_assign("a", Desired.RUNNING),)))
    starting, done = agent.apply(DesiredUpdate(False, 2, (_assign("a", desired),)))
    assert starting == []
    assert [(r.phase, r.removed) for r in done] == [(phase, removed)]
    assert ("a" in agent.instances) is kept and agent.running == 0
    assert tally.counts["stops"] == 1


def test_a_tombstone_of_an_unknown_instance_is_still_confirmed() -> None:
    """Tombstones are resent until confirmed: one the agent never ran is confirmed too."""
    agent, _ = _agent()
    _, done = agent.apply(DesiredUpdate(False, 3, (_assign("gone", Desired.REMOVED),)))
    assert [(r.instance_id, r.removed) for r in done] == [("gone", True)]


def test_a_full_set_drops_what_it_omits_and_a_return_is_a_restart() -> None:
    """A full set replaces the desired set; an instance started a second time is a restart."""
    agent, tally = _agent()
    agent.apply(
        DesiredUpdate(True, 1, (_assign("a", Desired.RUNNING), _assign("b", Desired.RUNNING)))
    )
    agent.apply(DesiredUpdate(True, 2, (_assign("b", Desired.RUNNING),)))
    assert set(agent.instances) == {"b"} and tally.counts["stops"] == 1
    agent.apply(DesiredUpdate(False, 3, (_assign("a", Desired.RUNNING),)))
    assert tally.counts["restarts"] == 1


def test_changes_pair_with_the_instances_made_after_them_in_order() -> None:
    """The k-th instance a workload made after its first change carried out its k-th change."""
    s = timedelta(seconds=1)
    written = {"w": [T0, T0 + s]}
    instances = [
        ("w", T0 - s, T0 - s),  # made before the changes: not theirs
        ("w", T0 + 2 * s, T0 + 4 * s),
        ("w", T0 + s / 2, T0 + s),
    ]
    assert pair_changes(written, instances) == [1.0, 3.0]


def test_an_unfinished_change_counts_as_never_only_when_asked() -> None:
    """complete=False: a change without its instance is infinitely slow; by default an error."""
    written = {"w": [T0, T0]}
    instances = [("w", T0, T0 + timedelta(milliseconds=5)), ("w", T0, None)]
    got = pair_changes(written, instances, complete=False)
    assert got[0] == pytest.approx(0.005) and math.isinf(got[1])
    with pytest.raises(Exception, match="never got there"):
        pair_changes(written, instances)


def test_percentile_is_the_nearest_rank() -> None:
    """Exact samples: the value at rank ceil(q * n), NaN for none."""
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3 and math.isnan(percentile([], 0.5))


@pytest.mark.parametrize(
    ("figure", "result"),
    [
        (Figure("cpu", 20.0, "%", "", Target("< 25", 25.0)), MET),
        (Figure("cpu", 30.0, "%", "", Target("< 25", 25.0)), MISSED),
        (Figure("rate", 2500.0, "/s", "", Target(">= 2,000", 2000.0, below=False)), MET),
        (Figure("rate", math.nan, "/s", "", Target(">= 2,000", 2000.0, below=False)), MISSED),
        (Figure("info", 3.0, "%", ""), NO_TARGET),
        (Figure("sli", 48.0, "ms", "", Target("agrees"), holds=False), MISSED),
        (Figure("drain", None, "s", "", status=NOT_BUILT), NOT_BUILT),
    ],
    ids=["below", "above", "at-least", "not-measured", "no-target", "rule", "not-built"],
)
def test_a_figure_is_judged_against_its_target(figure: Figure, result: str) -> None:
    """Below or at least a limit, a rule of its own, no target, or not built."""
    assert figure.result == result


@pytest.mark.parametrize(
    ("measured", "sli", "agrees"),
    [(0.03, 0.04, True), (12.8, 0.048, False), (0.3, 0.26, True), (math.inf, 0.1, False)],
)
def test_the_sli_agrees_when_the_measured_figure_is_in_its_bucket(
    measured: float, sli: float, agrees: bool
) -> None:
    """Agreement is as fine as the histogram's buckets allow, and no finer."""
    assert _same_bucket(measured, sli) is agrees


def test_a_scenario_that_stops_keeps_its_figures_and_says_where() -> None:
    """A size that fails ends the series: the figures already measured stand, one row says why."""
    outcome = Outcome(
        5, "failover", [Figure("leading", 0.5, "s", "100 agents", Target("< 5", 5.0))]
    )
    outcome.fail("at 1,000 agents: timed out")
    outcome.close()
    outcome.close()
    assert [f.result for f in outcome.figures] == [MET, FAILED]
    assert outcome.as_json()["status"] == FAILED
    assert outcome.figures[-1].note == "at 1,000 agents: timed out"


def test_exact_figures_through_the_sli_buckets_give_what_the_sli_would() -> None:
    """The measured samples, bucketed and interpolated as the SLI is, compare like with like."""
    waits = [0.03] * 98 + [0.2, math.inf]
    assert _histogram(waits)[-1] == (math.inf, 100.0)
    assert _histogram(waits)[2] == (0.05, 98.0)
    p99 = quantile(0.99, _zeros(), _histogram(waits))
    assert 0.1 < p99 <= 0.25 and _same_bucket(p99, 0.2)
