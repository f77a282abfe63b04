"""Scenarios 3 and 6: single changes at a steady rate on a settled fleet, and the operator API
meanwhile.

At each size, a fresh stage: the hollow hosts, then the workloads with their instances, all
RUNNING. Then `bench.changes.apply_changes` scales one workload up by one replica at the
profile's rate (20/s) for the profile's duration, long enough to include a resync period (30 s
by default), while `bench.operator_api.Prober` makes operator calls. Once every new replica is
RUNNING: apply-to-RUNNING of each change, from its commit to the report that showed its
instance RUNNING (both database time); what `keel_convergence_seconds{change="create"}` says
about the same changes (histogram_quantile over the scraped buckets); and the operator
latencies. The SLI agrees with the measured figures when their p99, put through the SLI's own
buckets and interpolation, lands in the same bucket as the SLI's p99 (compared raw, the
interpolation alone can put two equal distributions in neighbouring buckets). At the largest
size, a profile with `list_instances` then tops the fleet up to that many instances (one more
workload, 20,000 for the default profile: the size scenario 6's list target is set at) and
lists them all, paged, three times.
"""

from __future__ import annotations

import asyncio
import math

from bench.burst import apply_all
from bench.changes import apply_changes, pair_changes
from bench.fleet import Run, Stage
from bench.measure import Window, percentile
from bench.operator_api import PAGE_SIZE, Listed, Prober, list_all
from bench.procs import STEP_FAILURES, BenchError, await_for, first_line
from bench.profiles import ISSUE, Churn, Profile, size_text
from bench.report import Figure, Outcome, Step, Target
from bench.slis import buckets, quantile, scrape
from keel.endpoint import CONVERGENCE_BUCKETS

TITLE = "single changes at 20/s, operator API meanwhile"
ANCHOR3 = "Kubernetes pod startup SLO: p99 5 s at 20/s churn (container start included)"
ANCHOR6 = "Kubernetes API SLO: mutating calls p99 1 s"
SETTLE_S = 300.0  # the longest the new replicas may take to run after the last change
# The operator's load: a get or a describe every PROBE_INTERVAL_S, a list of every instance and
# a `keelctl get hosts` every LIST_EVERY_S (a person at a terminal, not a load test).
PROBE_INTERVAL_S = 0.25
LIST_EVERY_S = 10.0
SAMPLE_S = 1.0
# The workload that tops the fleet up to the profile's `list_instances` for one list of them all.
TOP_UP = "list-top-up"


async def run(run: Run, profile: Profile) -> list[Outcome]:
    three = Outcome(3, "single changes at 20/s")
    six = Outcome(6, "operator API during scenario 3")
    for size in profile.churn:
        try:
            step3, step6 = await _size(run, profile, size, top_up=size is profile.churn[-1])
        except STEP_FAILURES as exc:
            for o in (three, six):
                o.fail(f"at {size.instances:,} instances: {first_line(exc)}")
            break
        three.steps.append(step3)
        six.steps.append(step6)
    if not three.steps:
        return [three, six]
    size, issue = profile.churn[len(three.steps) - 1], ISSUE.churn[-1]
    shown = (
        f"{size_text(size.instances, issue.instances, 'instances')}, "
        f"{size_text(size.hosts, issue.hosts, 'hosts')}, "
        f"{size_text(size.workloads, issue.workloads, 'workloads')}"
    )
    e3, e6 = three.steps[-1].extra, six.steps[-1].extra
    agrees = _same_bucket(e3["exact_through_buckets_p99_ms"] / 1000, e3["sli_p99_ms"] / 1000)
    three.figures = [
        Figure("apply-to-RUNNING p50", e3["apply_to_running_p50_ms"], "ms", shown,
               Target("< 20 ms", 20.0), ANCHOR3),
        Figure("apply-to-RUNNING p99", e3["apply_to_running_p99_ms"], "ms", shown,
               Target("< 100 ms", 100.0), ANCHOR3, note=_unfinished(e3)),
        Figure("keel_convergence_seconds p50", e3["sli_p50_ms"], "ms", shown),
        Figure("keel_convergence_seconds p99", e3["sli_p99_ms"], "ms", shown,
               Target("agrees with apply-to-RUNNING p99 (same bucket)"), ANCHOR3,
               holds=agrees,
               note=f"apply-to-RUNNING through the same buckets: p99 "
               f"{e3['exact_through_buckets_p99_ms']:,.0f} ms"),
    ]  # fmt: skip
    listed = f"{int(e6['listed']):,} instances"
    six.figures = [
        Figure("get p99", e6["get_p99_ms"], "ms", shown, Target("< 20 ms", 20.0), ANCHOR6),
        Figure("describe p99", e6["describe_p99_ms"], "ms", shown, Target("< 20 ms", 20.0),
               ANCHOR6),
        Figure("apply p99", e6["apply_p99_ms"], "ms", shown, Target("< 50 ms", 50.0), ANCHOR6),
        Figure("list every instance (slowest)", e6["list_max_ms"], "ms",
               size_text(e6["listed"], issue.instances, "instances"),
               Target("< 1 s at 20,000 (paged)", 1000.0), ANCHOR6,
               note=f"{listed} in pages of {PAGE_SIZE:,}, slowest page "
               f"{e6['page_max_ms']:.0f} ms"),
        Figure("keelctl get hosts, whole process (median)", e6["keelctl_p50_ms"], "ms",
               size_text(size.hosts, issue.hosts, "hosts"), Target("< 200 ms", 200.0), ANCHOR6,
               note=f"slowest {e6['keelctl_max_ms']:.0f} ms"),
    ]  # fmt: skip
    if "topped_up_list_ms" in e6:
        six.figures.append(
            Figure("list every instance after the churn (slowest of 3)", e6["topped_up_list_ms"],
                   "ms", size_text(e6["topped_up_listed"], issue.instances, "instances"),
                   Target("< 1 s at 20,000 (paged)", 1000.0), ANCHOR6,
                   note=f"pages of {PAGE_SIZE:,}, slowest page "
                   f"{e6['topped_up_page_ms']:.0f} ms; topped up with one workload")
        )  # fmt: skip
    return [three, six]


async def _size(run: Run, profile: Profile, size: Churn, *, top_up: bool) -> tuple[Step, Step]:
    replicas = max(1, size.instances // size.workloads)
    names = [f"churn-{n:04d}" for n in range(size.workloads)]
    placed = replicas * size.workloads
    async with Stage(run, f"churn-{size.instances}") as stage:
        cp = stage.controlplanes[0]
        stage.hollow(size.hosts, heartbeat_s=profile.heartbeat_s)
        await stage.hosts_ready(size.hosts, within_s=profile.setup_timeout_s)
        await apply_all(stage, names, replicas)
        await stage.running(placed, within_s=profile.setup_timeout_s, what="the fleet to run")
        before = await asyncio.to_thread(scrape, cp.metrics)
        window = stage.window()
        stop = asyncio.Event()
        prober = Prober(cp.grpc, names, interval_s=PROBE_INTERVAL_S, list_every_s=LIST_EVERY_S,
                        keelctl_every_s=LIST_EVERY_S)  # fmt: skip
        probing = asyncio.create_task(prober.run(stop), name="operator prober")
        sampling = asyncio.create_task(_sample(window, stop), name="sampler")
        try:
            made = await apply_changes(
                cp.grpc,
                dict.fromkeys(names, replicas),
                rate=profile.churn_rate,
                duration_s=profile.churn_duration_s,
            )
        finally:
            stop.set()
            await asyncio.gather(probing, sampling)
        total = placed + made.total
        try:
            await stage.running(total, within_s=SETTLE_S, what=f"{made.total} new replicas")
            late = ""
        except BenchError as exc:
            late = str(exc)  # reported below: the changes not RUNNING count as never
        cost = window.close()
        key = 'keel_convergence_seconds_count{change="create"}'

        async def counted() -> dict[str, float] | None:
            after = await asyncio.to_thread(scrape, cp.metrics)
            return after if after.get(key, 0) - before.get(key, 0) >= made.total else None

        after = (
            await await_for(counted, within_s=60, what=f"{made.total} creates in the SLI")
            if not late
            else await asyncio.to_thread(scrape, cp.metrics)
        )
        rows = await stage.db.fetch(
            """SELECT workload, created_at,
                      CASE WHEN phase = 'RUNNING' AND ready THEN observed_at END AS reached
               FROM instance"""
        )
        fill = profile.list_instances - len(rows) if top_up and not late else 0
        lists = await _topped_up_lists(stage, profile, fill, len(rows)) if fill > 0 else []
    waits = pair_changes(made.written, [(r[0], r[1], r[2]) for r in rows], complete=not late)
    b, a = buckets(before, "create"), buckets(after, "create")
    ms = 1000.0
    extra3 = {
        "changes": float(made.total),
        "apply_to_running_p50_ms": percentile(waits, 0.5) * ms,
        "apply_to_running_p99_ms": percentile(waits, 0.99) * ms,
        "apply_to_running_max_ms": max(waits) * ms,
        "sli_p50_ms": quantile(0.5, b, a) * ms,
        "sli_p99_ms": quantile(0.99, b, a) * ms,
        # The exact figures put through the SLI's own buckets and interpolation: what the SLI
        # would say if it measured the same thing, so the two compare without the
        # interpolation's error.
        "exact_through_buckets_p99_ms": quantile(0.99, _zeros(), _histogram(waits)) * ms,
        "late_s": made.late_s,
        "unfinished": float(sum(1 for w in waits if math.isinf(w))),
    }
    s = prober.samples
    extra6 = {
        "get_p99_ms": percentile(s["get"], 0.99) * ms,
        "describe_p99_ms": percentile(s["describe"], 0.99) * ms,
        "apply_p99_ms": percentile(made.latencies_s, 0.99) * ms,
        "list_max_ms": max(s["list"], default=math.nan) * ms,
        "page_max_ms": max(s["page"], default=math.nan) * ms,
        "keelctl_p50_ms": percentile(s["keelctl"], 0.5) * ms,
        "keelctl_max_ms": max(s["keelctl"], default=math.nan) * ms,
        "listed": float(prober.listed),
        "calls": float(sum(len(v) for v in s.values()) + len(made.latencies_s)),
    }
    if lists:
        extra6["topped_up_list_ms"] = max(x.seconds for x in lists) * ms
        extra6["topped_up_page_ms"] = max(x.slowest_page_s for x in lists) * ms
        extra6["topped_up_listed"] = float(lists[-1].instances)
    label = f"{placed:,} instances, {size.hosts:,} hosts, {size.workloads:,} workloads"
    per_k = 1000 / placed
    step3 = Step(
        label, placed, "instance", cost,
        per_unit={
            "control plane %/1k instances": cost.cpu("controlplane") * per_k,
            "Postgres %/1k instances": cost.cpu("postgres") * per_k,
            "p99 ms": extra3["apply_to_running_p99_ms"],
        },
        extra=extra3,
    )  # fmt: skip
    step6 = Step(
        label, placed, "instance", None,
        per_unit={
            "list ms/1k instances": extra6["list_max_ms"] * per_k,
            "get p99 ms": extra6["get_p99_ms"],
        },
        extra=extra6,
    )  # fmt: skip
    print(
        f"  {label}: apply-to-RUNNING p50 {extra3['apply_to_running_p50_ms']:.0f} ms, "
        f"p99 {extra3['apply_to_running_p99_ms']:.0f} ms; SLI p99 {extra3['sli_p99_ms']:.0f} ms",
        flush=True,
    )
    return step3, step6


async def _topped_up_lists(stage: Stage, profile: Profile, fill: int, have: int) -> list[Listed]:
    """Tops the fleet up by `fill` instances (one more workload), waits until they run, then
    lists every instance three times, as keelctl does."""
    await apply_all(stage, [TOP_UP], fill)
    await stage.running(have + fill, within_s=profile.setup_timeout_s,
                        what=f"the fleet topped up to {have + fill:,} instances")  # fmt: skip
    return [await list_all(stage.api) for _ in range(3)]


async def _sample(window: Window, stop: asyncio.Event) -> None:
    while not stop.is_set():
        window.sample()
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            continue


def _unfinished(extra: dict[str, float]) -> str:
    n = int(extra["unfinished"])
    return f"{n} of {extra['changes']:.0f} not RUNNING {SETTLE_S:.0f} s after the last" if n else ""


def _histogram(values: list[float]) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of `values` in keel_convergence_seconds' buckets."""
    bounds = (*CONVERGENCE_BUCKETS, math.inf)
    return [(le, float(sum(1 for v in values if v <= le))) for le in bounds]


def _zeros() -> list[tuple[float, float]]:
    return [(le, 0.0) for le in (*CONVERGENCE_BUCKETS, math.inf)]


def _same_bucket(measured_s: float, sli_s: float) -> bool:
    """True when `measured_s` lies in the histogram bucket that holds `sli_s`."""
    if math.isnan(measured_s) or math.isnan(sli_s):
        return False
    lower = 0.0
    for upper in (*CONVERGENCE_BUCKETS, math.inf):
        if sli_s <= upper:
            return lower <= measured_s <= upper
        lower = upper
    return False
