"""Automatic rollback on a hollow fleet: the time from a crashing revision's first exit to the
fleet being back on the good revision, and the instances kept versus restarted.

    .venv/bin/python -m bench.rollback [--hosts 20] [--replicas 3,30] [--postgres URI]

For each size, a fresh stage (`bench.fleet.Stage`: its own database, one control plane at its
default settings, the hollow agents): revision 1 of a workload (max_unavailable and max_surge
10% of the replicas, at least 1) applied and all ready; then revision 2 with
`rollout: {auto_rollback: true}` whose instances crash at once on the hollow agents
(`bench.hollow.CRASH_ENV`: reported in a crash loop with a stderr line, as the real agent does
from a process's second quick exit). Measured on the database, polled every 20 ms: the first
crash report (the instance's `observed_at`, the agent's clock), the rollback decision (the
failure record's `at`), and the first moment the workload has `replicas` ready instances of
the good spec and none of revision 2 left. The process driver's figure is the end-to-end test's
(tests/e2e/test_rollback.py prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.changes import SPEC
from bench.fleet import Run, Stage
from bench.hollow import CRASH_ENV
from bench.postgres import Postgres
from keel.v1 import fleet_pb2

POLL_S = 0.02
STDERR = "boom: cannot read /etc/web/config.yaml"


def _manifest(replicas: int, version: str, *, crash: bool) -> str:
    budget = max(1, replicas // 10)
    env = {"V": version, **({CRASH_ENV: STDERR} if crash else {})}
    return json.dumps(
        {
            "name": "web",
            "replicas": replicas,
            "max_unavailable": budget,
            "max_surge": budget,
            "spec": {**SPEC, "env": env},
            "rollout": {"auto_rollback": True},
        }
    )


async def measure(run: Run, *, hosts: int, replicas: int) -> dict[str, float | int]:
    async with Stage(run, f"rollback-{replicas}") as stage:
        stage.hollow(hosts, heartbeat_s=2.0)
        await stage.hosts_ready(hosts, within_s=120)
        apply = fleet_pb2.ApplyWorkloadRequest(manifest_json=_manifest(replicas, "1", crash=False))
        await stage.api.ApplyWorkload(apply, timeout=60)
        await stage.running(replicas, within_s=120, what="revision 1 ready")
        before = {r["id"]: r["pid"] for r in await stage.db.fetch("SELECT id, pid FROM instance")}
        crashing = _manifest(replicas, "2", crash=True)
        await stage.api.ApplyWorkload(
            fleet_pb2.ApplyWorkloadRequest(manifest_json=crashing), timeout=60
        )
        first_exit: datetime | None = None
        started = time.monotonic()
        while True:
            row = await stage.db.fetchrow(
                """SELECT min(observed_at) FILTER (WHERE generation = 2 AND phase = 'FAILED')
                              AS crashed,
                          count(*) FILTER (WHERE generation = 2) AS bad,
                          count(*) FILTER (WHERE generation <> 2 AND desired = 'RUNNING'
                                                 AND phase = 'RUNNING' AND ready) AS good,
                          count(*) FILTER (WHERE desired <> 'REMOVED') AS live
                   FROM instance WHERE workload = 'web'"""
            )
            assert row is not None
            if first_exit is None and row["crashed"] is not None:
                first_exit = row["crashed"]
            rev = await stage.db.fetchrow(
                "SELECT state, failure FROM workload_revision WHERE workload = 'web' "
                "AND revision = 2"
            )
            if (
                first_exit is not None
                and rev is not None
                and rev["state"] == "ROLLED_BACK"
                and row["bad"] == 0
                and row["good"] == replicas == row["live"]
            ):
                back = await stage.db.fetchval("SELECT now()")
                break
            if time.monotonic() - started > 120:
                raise TimeoutError(f"web not back on revision 1 within 120 s: {dict(row)}")
            stage.children.check_alive()
            await asyncio.sleep(POLL_S)
        failure = json.loads(rev["failure"])
        decided = datetime.fromisoformat(failure["at"])
        after = {r["id"]: r["pid"] for r in await stage.db.fetch("SELECT id, pid FROM instance")}
        kept = sum(1 for i, pid in after.items() if before.get(i) == pid)
        assert failure["reason"] == "CRASH_LOOP"
        assert any(STDERR in e["message"] for e in failure["evidence"])
        return {
            "replicas": replicas,
            "decided_s": (decided - first_exit).total_seconds(),
            "back_s": (back - first_exit).total_seconds(),
            "kept": kept,
            "restarted": replicas - kept,
        }


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="keel-bench-rollback-") as tmp:
        postgres = Postgres(Path(tmp), uri=args.postgres)
        await asyncio.to_thread(postgres.start)
        try:
            run = Run(Path(tmp), postgres)
            for replicas in (int(n) for n in args.replicas.split(",")):
                got = await measure(run, hosts=args.hosts, replicas=replicas)
                print(
                    f"hollow fleet, {args.hosts} hosts, {replicas} replicas (max_unavailable "
                    f"{max(1, replicas // 10)}): first exit -> rollback decided "
                    f"{got['decided_s']:.2f} s; first exit -> back on revision 1's spec "
                    f"{got['back_s']:.2f} s; instances kept {got['kept']}, restarted "
                    f"{got['restarted']}",
                    flush=True,
                )
        finally:
            await asyncio.to_thread(postgres.stop)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.rollback", description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=20, help="hollow hosts (20)")
    p.add_argument("--replicas", default="3,30", help="comma-separated sizes (3,30)")
    p.add_argument("--postgres", default=None, help="use this running Postgres (admin URI)")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
