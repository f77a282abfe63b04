"""`make bench`: every scenario of the scale issue, one table, `bench/results/latest.json`.

    .venv/bin/python -m bench [--profile default|quick|tiny|full] [--only 1,3] [--keep]
                              [--results PATH] [--postgres URI] [--agents-per-process N]

Starts one standalone embedded Postgres for the run (`bench.postgres`; `--postgres` uses a
running one instead), then runs each scenario in stages of its own (`bench.fleet.Stage`: a
fresh database, control plane(s), hollow fleet), prints the figures table and the growth
table (`bench.report`) and writes the JSON. A scenario that fails is reported as failed with
its reason and the run goes on. Every process the run started is ended however it exits
(Ctrl-C and SIGTERM included) and its directory removed unless `--keep`.

Scenarios: 1 `bench.idle`, 2 `bench.burst`, 3 and 6 `bench.churn` (with `bench.operator`),
4 `bench.drain`, 5 `bench.failover`, 7 `bench.agentcost`. Sizes: `bench.profiles`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import agentcost, burst, churn, drain, failover, idle
from bench.fleet import Run
from bench.postgres import Postgres
from bench.procs import STEP_FAILURES, first_line, kill_processes_naming, raise_open_files_limit
from bench.profiles import PROFILES, Profile
from bench.report import Outcome, failed, print_tables, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

Scenario = Callable[[Run, Profile], Awaitable[Sequence[Outcome]]]


async def _one(
    fn: Callable[[Run, Profile], Awaitable[Outcome]], run: Run, p: Profile
) -> list[Outcome]:
    return [await fn(run, p)]


# (the scenario numbers it reports, its title, the runner)
SCENARIOS: list[tuple[tuple[int, ...], str, Scenario]] = [
    ((1,), idle.TITLE, lambda r, p: _one(idle.run, r, p)),
    ((2,), burst.TITLE, lambda r, p: _one(burst.run, r, p)),
    ((3, 6), churn.TITLE, churn.run),
    ((4,), drain.TITLE, lambda r, p: _one(drain.run, r, p)),
    ((5,), failover.TITLE, lambda r, p: _one(failover.run, r, p)),
    ((7,), agentcost.TITLE, lambda r, p: _one(agentcost.run, r, p)),
]


async def run_all(args: argparse.Namespace, root: Path) -> list[Outcome]:
    profile = PROFILES[args.profile]
    if args.agents_per_process:
        profile = Profile(**{**profile.__dict__, "agents_per_process": args.agents_per_process})
    wanted = {int(n) for n in args.only.split(",")} if args.only else None
    postgres = Postgres(root, uri=args.postgres)
    await asyncio.to_thread(postgres.start)
    run = Run(root, postgres, agents_per_process=profile.agents_per_process)
    outcomes: list[Outcome] = []
    try:
        for numbers, title, scenario in SCENARIOS:
            if wanted is not None and not wanted & set(numbers):
                continue
            print(f"scenario {'+'.join(map(str, numbers))}: {title} ...", flush=True)
            started = time.monotonic()
            try:
                got = list(await scenario(run, profile))
            except STEP_FAILURES as exc:
                # Its stage could not even start (the sizes fail on their own, inside).
                print(f"  failed: {exc}", flush=True)
                got = [failed(n, title, first_line(exc)) for n in numbers]
            for o in got:
                o.seconds = time.monotonic() - started
                o.close()
                if o.error:
                    print(f"  scenario {o.number} stopped: {o.error}", flush=True)
            outcomes += [o for o in got if wanted is None or o.number in wanted]
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        await asyncio.to_thread(postgres.stop)
    return outcomes


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return out.stdout.strip()
    return ""


async def _main(args: argparse.Namespace, root: Path) -> list[Outcome]:
    # SIGTERM and SIGINT (even where a shell made it ignored) end the run the same way: the
    # main task is cancelled, so every stage's teardown runs.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    return await run_all(args, root)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--only", default="", help="comma-separated scenario numbers (default: all)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--postgres", default=None, help="use this running Postgres (admin URI)")
    p.add_argument("--agents-per-process", type=int, default=0, help="hollow agents per process")
    p.add_argument("--keep", action="store_true", help="keep the run's directory and logs")
    p.add_argument("--workdir", type=Path, default=None, help="make the run's directory here")
    args = p.parse_args(argv)
    raise_open_files_limit()
    root = Path(tempfile.mkdtemp(prefix="keel-bench-", dir=args.workdir))
    started, load = datetime.now(UTC), os.getloadavg()[0]
    clock = time.monotonic()
    try:
        outcomes = asyncio.run(_main(args, root))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench interrupted; every process it started has been stopped")
        return 130
    finally:
        kill_processes_naming(str(root))
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print_tables(outcomes, profile=args.profile)
    run: dict[str, Any] = {
        "profile": args.profile,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - clock, 1),
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": round(load, 2),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "commit": _git_commit(),
    }
    write_json(args.results, outcomes, run=run)
    print(f"\n{run['seconds']:.0f} s in all; figures written to {args.results}")
    return 0
