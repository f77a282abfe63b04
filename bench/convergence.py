"""Apply-to-placed under steady change, and what the convergence SLI reports for the same run.

    .venv/bin/python -m bench.convergence [--workloads 500] [--rate 20] [--duration 60s]
                                          [--agents 3] [--resync-period 30s]

Starts a fleet of its own in a temporary directory: one `keel-controlplane` (embedded Postgres,
ports picked by the OS) and `--agents` `keel-agent`s with the fake driver. Creates
`--workloads` workloads of one replica each and waits until every one runs. Then, for
`--duration`, it scales a workload up by one replica `--rate` times a second (round-robin over
the workloads), each apply sent at its scheduled time whatever the latency of the ones before.
Once every change is placed and converged it prints, over those changes:

- apply-to-placed p50 / p99 / max: from the workload's write (`updated_at` in the
  ApplyWorkload answer) to the `created_at` of the instance that carried it out, both
  database time. This is the wait in the control plane's own queue.
- `keel_convergence_seconds{change="create"}` p50 / p99 over the same changes, computed from
  the scraped buckets as Prometheus' histogram_quantile would (`bench.slis.quantile`).

The fleet is stopped at the end (every process group, the embedded Postgres included) and the
directory removed. Figures depend on the machine and its load: compare runs on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
import psutil

from bench.slis import buckets, quantile, scrape
from keel.spec import parse_duration
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0  # the first start runs initdb for the embedded Postgres
SETTLE_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Polls `check` until it returns something truthy; exits naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(grpc.RpcError, OSError, ValueError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Fleet:
    """A control plane and fake-driver agents as child processes, each in its own group."""

    def __init__(self, root: Path, *, agents: int, controlplane_args: Sequence[str]) -> None:
        self.root = root
        self.hosts = [f"bench-{n}" for n in range(1, agents + 1)]
        self._controlplane_args = list(controlplane_args)
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.grpc = ""
        self.metrics = ""

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        )
        self._children.append((name, child))
        log.close()

    def start(self) -> None:
        state = self.root / "controlplane"
        self._start(
            "controlplane",
            [
                str(BIN / "keel-controlplane"),
                "--state-dir",
                str(state),
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *self._controlplane_args,
            ],
        )

        def bound() -> dict[str, str] | None:
            self._check_alive()
            data: dict[str, str] = json.loads((state / "addresses.json").read_text())
            return data if "grpc" in data and "metrics" in data else None

        addresses = wait_for(bound, timeout=START_TIMEOUT_S, what="the control plane to listen")
        self.grpc, self.metrics = addresses["grpc"], addresses["metrics"]
        for host in self.hosts:
            self._start(
                host,
                [
                    str(BIN / "keel-agent"),
                    "--controlplane",
                    self.grpc,
                    "--host",
                    host,
                    "--state-dir",
                    str(self.root / host),
                    "--driver",
                    "fake",
                    "--metrics",
                    "127.0.0.1:0",
                    "--log-format",
                    "json",
                ],
            )

    def _check_alive(self) -> None:
        for name, child in self._children:
            if child.poll() is not None:
                raise SystemExit(f"{name} exited ({child.returncode}); see {self.root}/{name}.log")

    def stop(self) -> None:
        """SIGTERM every group (agents first), SIGKILL what is left at the deadline, then any
        process that still names the directory (the embedded Postgres of a killed control
        plane)."""
        for _, child in reversed(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        marker = str(self.root)
        leftovers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(marker in arg for arg in p.info.get("cmdline") or [])
        ]
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)


@contextlib.contextmanager
def running_fleet(*, agents: int, controlplane_args: Sequence[str], keep: bool) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    fleet = Fleet(root, agents=agents, controlplane_args=controlplane_args)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        if keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def manifest(name: str, replicas: int) -> str:
    return json.dumps(
        {
            "name": name,
            "replicas": replicas,
            "spec": {"command": ["sleep", "3600"], "min_ready": "0s", "stop_grace": "1s"},
        }
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of exact samples."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def apply_changes(
    address: str, names: Sequence[str], *, rate: float, duration_s: float
) -> dict[str, list[datetime]]:
    """Scales workloads up one replica at a time, `rate` per second, each at its own time.

    Returns, per workload, the database time of each change's write, in order.
    """
    replicas = dict.fromkeys(names, 1)
    written: dict[str, list[tuple[int, datetime]]] = {name: [] for name in names}
    failures: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)

        async def one(name: str, target: int) -> None:
            try:
                reply = await stub.ApplyWorkload(
                    fleet_pb2.ApplyWorkloadRequest(manifest_json=manifest(name, target)),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{name}: {exc.code().name} {exc.details()}")
                return
            written[name].append((target, reply.workload.updated_at.ToDatetime()))

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            name = names[n % len(names)]
            replicas[name] += 1
            tasks.append(asyncio.create_task(one(name, replicas[name])))
        await asyncio.gather(*tasks)
        late = loop.time() - start - duration_s
    if failures:
        raise SystemExit(f"{len(failures)} applies failed, first: {failures[0]}")
    if late > 1.0:
        print(f"note: the applies finished {late:.1f}s behind schedule (slow answers)")
    # Ordered by the replica count each asked for, which is the order they were made.
    return {name: [at for _, at in sorted(w)] for name, w in written.items()}


def list_instances(stub: fleet_pb2_grpc.FleetServiceStub) -> list[types_pb2.Instance]:
    reply = stub.ListInstances(fleet_pb2.ListInstancesRequest(), timeout=60)
    return list(reply.instances)


def apply_to_placed(
    changes: dict[str, list[datetime]], instances: Sequence[types_pb2.Instance]
) -> list[float]:
    """Seconds from each change's write to the creation of the instance that carried it out:
    a workload's instances made after its first change, in order, pair with its changes."""
    by_workload: dict[str, list[datetime]] = {}
    for inst in instances:
        by_workload.setdefault(inst.workload, []).append(inst.created_at.ToDatetime())
    seconds: list[float] = []
    for name, writes in changes.items():
        if not writes:
            continue
        made = sorted(at for at in by_workload.get(name, []) if at >= writes[0])
        if len(made) != len(writes):
            raise SystemExit(f"{name}: {len(writes)} changes but {len(made)} new instances")
        seconds += [(at - w).total_seconds() for w, at in zip(writes, made, strict=True)]
    return seconds


def run(args: argparse.Namespace) -> None:
    duration_s = parse_duration(args.duration, "--duration") / 1000
    names = [f"bench-{n:04d}" for n in range(args.workloads)]
    cp_args = ["--resync-period", args.resync_period]
    with running_fleet(agents=args.agents, controlplane_args=cp_args, keep=args.keep) as fleet:
        channel = grpc.insecure_channel(fleet.grpc)
        stub = fleet_pb2_grpc.FleetServiceStub(channel)

        def hosts_ready() -> bool:
            hosts = stub.ListHosts(fleet_pb2.ListHostsRequest(), timeout=10).hosts
            return {h.name for h in hosts if h.state == "READY"} >= set(fleet.hosts)

        wait_for(hosts_ready, timeout=60, what=f"hosts {', '.join(fleet.hosts)} READY")
        print(f"fleet up: control plane {fleet.grpc}, {args.agents} fake-driver agents")
        started = time.monotonic()
        for name in names:
            stub.ApplyWorkload(
                fleet_pb2.ApplyWorkloadRequest(manifest_json=manifest(name, 1)), timeout=30
            )

        def all_ready(expected: int) -> Callable[[], bool]:
            def check() -> bool:
                got = list_instances(stub)
                return len(got) == expected and all(i.converged for i in got)

            return check

        wait_for(all_ready(len(names)), timeout=SETTLE_TIMEOUT_S, what="the workloads to run")
        print(f"{len(names)} workloads running, {time.monotonic() - started:.1f}s after the first")

        before = scrape(fleet.metrics)
        print(f"scaling up {args.rate:g} times a second for {duration_s:g}s ...", flush=True)
        changes = asyncio.run(
            apply_changes(fleet.grpc, names, rate=args.rate, duration_s=duration_s)
        )
        total = sum(len(w) for w in changes.values())
        wait_for(
            all_ready(len(names) + total),
            timeout=SETTLE_TIMEOUT_S,
            what=f"{total} new replicas to run",
        )
        count = 'keel_convergence_seconds_count{change="create"}'

        def observed() -> dict[str, float] | None:
            after = scrape(fleet.metrics)
            return after if after.get(count, 0) - before.get(count, 0) >= total else None

        after = wait_for(observed, timeout=60, what=f"{total} creates in the histogram")
        waits = apply_to_placed(changes, list_instances(stub))
        channel.close()

    b, a = buckets(before, "create"), buckets(after, "create")
    print(
        f"{total} changes at {args.rate:g}/s over {args.workloads} workloads "
        f"({args.agents} agents, fake driver, resync every {args.resync_period}):"
    )
    print(
        f"  apply-to-placed: p50 {percentile(waits, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(waits, 0.99) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms"
    )
    print(
        f"  keel_convergence_seconds{{change=create}}: p50 {quantile(0.5, b, a) * 1000:.0f} ms, "
        f"p99 {quantile(0.99, b, a) * 1000:.0f} ms (histogram_quantile over the run)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.convergence", description=__doc__.splitlines()[0])
    p.add_argument("--workloads", type=int, default=500)
    p.add_argument("--rate", type=float, default=20.0, help="changes per second")
    p.add_argument("--duration", default="60s", help="how long changes are made")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--resync-period", default="30s", help="the control plane's --resync-period")
    p.add_argument("--keep", action="store_true", help="keep the fleet's logs")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
