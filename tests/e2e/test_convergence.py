"""Convergence SLIs, traces and log hygiene end to end, scraped from the real processes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from harness import Fleet, wait_for

pytestmark = pytest.mark.e2e

DatabaseFactory = Callable[[], AbstractContextManager[str]]


def _count(samples: dict[str, float], change: str) -> float:
    return samples.get(f'keel_convergence_seconds_count{{change="{change}"}}', 0.0)


def test_histogram_counts_a_create_and_an_update_once_converged(fleet: Fleet) -> None:
    """Every create, and the creates and removes of a rolling update, are observed in
    keel_convergence_seconds once they converge, and counted in keel_changes_total."""
    before = fleet.metrics()
    fleet.apply_ok(fleet.manifest("conv", replicas=2))
    fleet.wait_running("conv", 2)

    def created() -> dict[str, float] | None:
        m = fleet.metrics()
        return m if _count(m, "create") >= _count(before, "create") + 2 else None

    after_create = wait_for(created, message="2 creates observed")
    assert after_create['keel_changes_total{change="create"}'] >= 2

    fleet.apply_ok(fleet.manifest("conv", replicas=2, env={"VERSION": "2"}))
    fleet.wait_running("conv", 2, generation=2)

    def rolled() -> dict[str, float] | None:
        m = fleet.metrics()
        ok = (
            _count(m, "create") >= _count(after_create, "create") + 2
            and _count(m, "remove") >= _count(after_create, "remove") + 2
        )
        return m if ok else None

    final = wait_for(rolled, message="the update's creates and removes observed")
    assert final['keel_changes_total{change="remove"}'] >= 2
    # Nothing was slow: every change converged well within 60 s.
    assert final.get('keel_changes_slow_total{change="create"}', 0.0) == 0.0


@pytest.fixture
def gated_fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[tuple[Fleet, Path]]:
    """One agent on the fake driver whose starts wait while a gate file exists."""
    gate = tmp_path / "start-gate"
    args = {1: ["--driver", "fake", "--fake-start-gate", str(gate)]}
    with (
        database_factory() as url,
        Fleet(tmp_path, database_url=url, agents=1, agent_args=args) as f,
    ):
        yield f, gate


def test_backlog_goes_up_while_starts_are_held_and_back_down_after(
    gated_fleet: tuple[Fleet, Path],
) -> None:
    """Held starts show as backlog on both sides (with an age); released, it drains to 0."""
    fleet, gate = gated_fleet
    gate.touch()
    fleet.apply_ok(fleet.manifest("held", replicas=3, health=False))

    def backlog_up() -> bool:
        cp, agent = fleet.metrics(), fleet.metrics(1)
        return (
            cp['keel_unconverged_objects{kind="instance"}'] >= 3
            and cp["keel_oldest_unconverged_seconds"] > 0
            and agent["keel_agent_unconverged_instances"] >= 3
        )

    wait_for(backlog_up, message="backlog of 3 on control plane and agent")
    gate.unlink()

    def drained() -> bool:
        cp, agent = fleet.metrics(), fleet.metrics(1)
        return (
            cp['keel_unconverged_objects{kind="instance"}'] == 0
            and cp["keel_oldest_unconverged_seconds"] == 0
            and agent["keel_agent_unconverged_instances"] == 0
        )

    wait_for(drained, message="backlog drained")
    assert fleet.metrics()['keel_convergence_seconds_count{change="create"}'] >= 3


def _spans(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_trace_runs_from_keelctl_apply_to_the_process_start(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    """keelctl's span, the control plane's RPC span and the agent's start span share a trace."""
    cp_file, agent_file, ctl_file = (tmp_path / f"{n}.spans" for n in ("cp", "agent", "ctl"))
    with (
        database_factory() as url,
        Fleet(
            tmp_path,
            database_url=url,
            agents=1,
            controlplane_args=["--trace-file", str(cp_file)],
            agent_args={1: ["--trace-file", str(agent_file)]},
        ) as fleet,
    ):
        manifest = fleet.write_manifest(fleet.manifest("traced", replicas=1))
        fleet.keelctl_ok("--trace-file", str(ctl_file), "apply", "-f", str(manifest))
        fleet.wait_running("traced", 1)
        [apply_span] = [s for s in _spans(ctl_file) if s["name"] == "keelctl apply"]
        trace_id = apply_span["trace_id"]

        def joined() -> bool:
            in_cp = {s["name"] for s in _spans(cp_file) if s["trace_id"] == trace_id}
            in_agent = {s["name"] for s in _spans(agent_file) if s["trace_id"] == trace_id}
            return "keel.v1.FleetService/ApplyWorkload" in in_cp and bool(in_agent)

        wait_for(joined, message=f"trace {trace_id} in keelctl, control plane and agent spans")


def test_no_secret_reaches_a_log_line(fleet: Fleet) -> None:
    """A workload's secret env value never appears in the control plane's or agents' logs."""
    secret = "s3cr3t-keel-e2e-value-7f1d"
    fleet.apply_ok(fleet.manifest("secretive", replicas=2, env={"API_TOKEN": secret}))
    fleet.wait_running("secretive", 2)
    fleet.keelctl_ok("describe", "workload", "secretive")
    fleet.keelctl_ok("get", "instances")
    for log in fleet.logs.glob("*.log"):
        assert secret not in log.read_text(), f"{log.name} contains the secret"
