"""How keelctl shows operations: the `ops` table, `op get`'s description with every blocker,
a drain's dry-run plan, and the one-line progress `--wait` prints off a terminal.

Pure functions from protobuf messages (keel.v1) to text, with the clock passed in, like
`keel.ctl.output` (whose helpers they use). `keel.ctl.operations` and `keel.ctl.progress`
call them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from keel.convert import from_ts
from keel.ctl.output import NONE, age, block, first_line, table, when
from keel.spec import format_duration
from keel.v1 import fleet_pb2


def seconds_text(value: float) -> str:
    """An ETA or a time into a plan: `45s`, `3m20s`; `-` for unknown (negative)."""
    if value < 0:
        return NONE
    return format_duration(round(value) * 1000) if value >= 1 else f"{value:.1f}s"


def _hosts(hosts: Iterable[str], limit: int = 3) -> str:
    listed = list(hosts)
    shown = ",".join(listed[:limit])
    return shown + (f",+{len(listed) - limit}" if len(listed) > limit else "")


def operations_table(ops: Iterable[fleet_pb2.Operation], *, now: datetime) -> str:
    rows = []
    for op in ops:
        p = op.progress
        rows.append(
            [
                op.id,
                op.kind,
                op.state,
                _hosts(op.hosts),
                f"{p.moved}/{p.moved + p.remaining}",
                str(p.blocked),
                seconds_text(p.eta_s) if op.state in ("PENDING", "RUNNING") else NONE,
                age(from_ts(op.created_at), now=now),
            ]
        )
    return table(["ID", "KIND", "STATE", "HOSTS", "MOVED", "BLOCKED", "ETA", "AGE"], rows)


def blocker_text(b: fleet_pb2.Blocker, *, now: datetime) -> str:
    since = from_ts(b.since)
    held = f" for {age(since, now=now)}" if since is not None else ""
    pairs = [
        ("Instance", f"{b.instance} ({b.workload}) on {b.host}"),
        ("Reason", f"{b.reason}{held}"),
        ("Message", b.message or NONE),
        ("Runbook", b.runbook or NONE),
        ("Next", b.next_command or NONE),
    ]
    return block(pairs)


def describe_operation(op: fleet_pb2.Operation, *, now: datetime) -> str:
    p = op.progress
    params = op.params
    pairs = [
        ("ID", op.id),
        ("Kind", op.kind),
        ("State", op.state + (" (forced at the deadline)" if op.forced else "")),
        ("Hosts", ", ".join(op.hosts)),
        ("Actor", op.actor or NONE),
        ("Reason", op.reason or NONE),
        ("Created", when(from_ts(op.created_at), now=now)),
        ("Started", when(from_ts(op.started_at), now=now)),
        ("Finished", when(from_ts(op.finished_at), now=now)),
        ("Deadline", f"{when(from_ts(op.deadline_at), now=now)}, then {params.on_deadline}"),
        ("Max parallel", str(params.max_parallel) if params.max_parallel else "no limit"),
        ("Daemons", "left running" if params.ignore_daemons else "stopped last"),
        ("Progress", progress_counts(op)),
        ("ETA", seconds_text(p.eta_s) if op.state in ("PENDING", "RUNNING") else NONE),
        ("Blocked since", when(from_ts(op.blocked_since), now=now)),
        ("Message", op.message or NONE),
        ("Runbook", op.runbook),
    ]
    text = block(pairs)
    if p.blockers:
        sections = [blocker_text(b, now=now) for b in p.blockers]
        text += "\nBlockers:\n" + "\n\n".join(_indent(s) for s in sections)
    return text


def progress_counts(op: fleet_pb2.Operation) -> str:
    p = op.progress
    return (
        f"moved {p.moved}/{p.moved + p.remaining}, {p.remaining} remaining, {p.in_flight} "
        f"under way, {p.blocked} blocked"
    )


def progress_line(op: fleet_pb2.Operation) -> str:
    """One line per change, for `--wait` off a terminal."""
    line = f"{op.id} {op.state}: {progress_counts(op)}"
    if op.state in ("PENDING", "RUNNING"):
        line += f", eta {seconds_text(op.progress.eta_s)}"
    if op.progress.blockers:
        b = op.progress.blockers[0]
        line += f"; blocked: {b.instance} {b.reason}: {first_line(b.message, 160)}"
    return line


def result_text(op: fleet_pb2.Operation) -> str:
    """How an operation ended, what it says, and its runbook; its blockers if it failed."""
    text = f"{op.id} {op.state}: {op.message or progress_counts(op)}\nrunbook: {op.runbook}"
    if op.state != "SUCCEEDED":
        for b in op.progress.blockers:
            text += f"\n  {b.instance} {b.reason}: {first_line(b.message, 200)} (next: "
            text += f"{b.next_command or NONE})"
    return text


def drain_plan_text(plan: fleet_pb2.PlanDrainResponse) -> str:
    """What a drain would do, changing nothing: the moves by wave, the blockers, the estimate."""
    parts = [f"Dry run: drain of {', '.join(plan.hosts)} (nothing was changed)"]
    if plan.moves:
        rows = [
            [
                str(m.wave),
                m.instance,
                m.workload,
                m.source,
                m.target or NONE,
                m.kind,
                seconds_text(m.starts_at_s),
                seconds_text(m.done_at_s),
            ]
            for m in plan.moves
        ]
        header = ["WAVE", "INSTANCE", "WORKLOAD", "FROM", "TO", "HOW", "STARTS", "DONE"]
        parts.append(table(header, rows))
    else:
        parts.append("Nothing would move.")
    if plan.blockers:
        parts.append("Would block:")
        for b in plan.blockers:
            parts.append(
                f"  {b.instance} ({b.workload}) {b.reason}: {b.message}\n"
                f"    runbook: {b.runbook}; next: {b.next_command}"
            )
    if plan.eta_s >= 0:
        waves = f"{plan.waves} wave{'s' if plan.waves != 1 else ''}"
        parts.append(f"Estimate: {seconds_text(plan.eta_s)} in {waves}.")
    else:
        parts.append(
            f"Would not finish: {plan.remaining} instance(s) would stay on the hosts "
            "(the deadline would end it)."
        )
    return "\n".join(parts)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
