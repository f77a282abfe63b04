"""The benchmark harness keeps working: a tiny `make bench` runs every scenario and reports.

Only that each scenario ran and said something is checked, never its figures (they depend on
the machine); tests/unit/test_bench_rules.py covers the harness's rules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from procs import kill_processes_mentioning

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SIZED = {1, 2, 3, 4, 5, 6, 7}  # every scenario runs at a size


def test_every_scenario_runs_and_reports(tmp_path: Path, postgres_uri: str) -> None:
    """`python -m bench --profile tiny` reports scenarios 1-7: each ran,
    with its figures and, where it has a size, what each size cost; and prints the table."""
    results = tmp_path / "latest.json"
    argv = [sys.executable, "-m", "bench", "--profile", "tiny", "--results", str(results),
            "--postgres", postgres_uri, "--workdir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The bench ends what it started; this is the net under it.
        leftovers = kill_processes_mentioning(str(tmp_path))
    assert proc.returncode == 0, out
    assert not leftovers, f"the bench left processes running: {leftovers}"
    data = json.loads(results.read_text())
    scenarios = {s["scenario"]: s for s in data["scenarios"]}
    assert sorted(scenarios) == [1, 2, 3, 4, 5, 6, 7], out
    for number, s in scenarios.items():
        assert s["status"] == "ran", (number, s["error"], out)
        assert s["figures"] and all(f["name"] and f["result"] for f in s["figures"]), s
        if number in SIZED:
            assert s["steps"] and all(step["units"] > 0 for step in s["steps"]), s
    assert all(
        f["value"] is not None for n in SIZED for f in scenarios[n]["figures"] if f["target"]
    ), data
    for number in scenarios:
        assert f"\n| {number} | " in out, out
