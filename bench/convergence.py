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
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from pathlib import Path

from bench import auth
from bench.changes import apply_changes, manifest, pair_changes
from bench.measure import percentile
from bench.procs import BIN, Children, wait_for
from bench.slis import buckets, quantile, scrape
from keel.spec import parse_duration
from keel.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

START_TIMEOUT_S = 120.0  # the first start runs initdb for the embedded Postgres
SETTLE_TIMEOUT_S = 600.0


class Fleet:
    """A control plane (embedded Postgres under its state dir) and fake-driver agents."""

    def __init__(self, root: Path, *, agents: int, controlplane_args: Sequence[str]) -> None:
        self.root = root
        self.hosts = [f"bench-{n}" for n in range(1, agents + 1)]
        self._controlplane_args = list(controlplane_args)
        self.children = Children(root)
        self.grpc = ""
        self.metrics = ""

    def start(self) -> None:
        state = self.root / "controlplane"
        self.children.start(
            "controlplane",
            [str(BIN / "keel-controlplane"), "--state-dir", str(state), "--listen", "127.0.0.1:0",
             "--metrics", "127.0.0.1:0", "--log-format", "json", *self._controlplane_args],
        )  # fmt: skip

        def bound() -> dict[str, str] | None:
            self.children.check_alive()
            data: dict[str, str] = json.loads((state / "addresses.json").read_text())
            return data if "grpc" in data and "metrics" in data else None

        addresses = wait_for(bound, timeout=START_TIMEOUT_S, what="the control plane to listen")
        self.grpc, self.metrics = addresses["grpc"], addresses["metrics"]
        auth.remember([self.grpc], state)
        for host in self.hosts:
            self.children.start(
                host,
                [str(BIN / "keel-agent"), "--controlplane", self.grpc, "--host", host,
                 "--state-dir", str(self.root / host), "--driver", "fake",
                 "--metrics", "127.0.0.1:0", "--log-format", "json", *auth.join_args(self.grpc)],
            )  # fmt: skip


@contextlib.contextmanager
def running_fleet(*, agents: int, controlplane_args: Sequence[str], keep: bool) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    fleet = Fleet(root, agents=agents, controlplane_args=controlplane_args)
    try:
        fleet.start()
        yield fleet
    finally:
        # Agents first (the last started), the control plane and its embedded Postgres last.
        fleet.children.stop_all()
        if keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def list_instances(stub: fleet_pb2_grpc.FleetServiceStub) -> list[types_pb2.Instance]:
    """Every instance, a page at a time (the list is paged)."""
    request = fleet_pb2.ListInstancesRequest(page_size=1000)
    out: list[types_pb2.Instance] = []
    while True:
        reply = stub.ListInstances(request, timeout=60)
        out.extend(reply.instances)
        if not reply.next_page_token:
            return out
        request.page_token = reply.next_page_token


def run(args: argparse.Namespace) -> None:
    duration_s = parse_duration(args.duration, "--duration") / 1000
    names = [f"bench-{n:04d}" for n in range(args.workloads)]
    cp_args = ["--resync-period", args.resync_period]
    with running_fleet(agents=args.agents, controlplane_args=cp_args, keep=args.keep) as fleet:
        channel = auth.channel(fleet.grpc)
        stub = fleet_pb2_grpc.FleetServiceStub(channel)

        def hosts_ready() -> bool:
            hosts = stub.ListHosts(fleet_pb2.ListHostsRequest(), timeout=10).hosts
            return {h.name for h in hosts if h.state == "READY"} >= set(fleet.hosts)

        wait_for(hosts_ready, timeout=60, what=f"hosts {', '.join(fleet.hosts)} READY")
        print(f"fleet up: control plane {fleet.grpc}, {args.agents} fake-driver agents")
        started = time.monotonic()
        for name in names:
            stub.ApplyWorkload(
                fleet_pb2.ApplyWorkloadRequest(manifest_json=manifest(name, 1, resources=False)),
                timeout=30,
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
        made = asyncio.run(
            apply_changes(
                fleet.grpc,
                dict.fromkeys(names, 1),
                rate=args.rate,
                duration_s=duration_s,
                resources=False,
            )
        )
        if made.late_s > 1.0:
            print(f"note: the applies finished {made.late_s:.1f}s behind schedule (slow answers)")
        total = made.total
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
        waits = pair_changes(
            made.written,
            (
                (
                    i.workload,
                    i.created_at.ToDatetime(tzinfo=UTC),
                    i.created_at.ToDatetime(tzinfo=UTC),
                )
                for i in list_instances(stub)
            ),
        )
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
