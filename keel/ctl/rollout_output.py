"""How keelctl shows rollouts: the revision history table, a rollout's status, its failure
record, and the one-line progress `rollout status --wait` prints.

Pure functions from keel.v1 messages to text, with the clock passed in (`keel.ctl.output` has
the table and time helpers); `keel.ctl.rollout` runs the commands and
`keel.ctl.rollout_progress` draws the progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from keel.convert import from_ts, spec_from_pb
from keel.ctl.output import NONE, age, first_line, spec_yaml, table, when
from keel.model import Workload
from keel.spec import workload_to_doc
from keel.v1 import fleet_pb2

# What roll_back writes as the cause when the operator gave none ("roll back to revision N").
_DEFAULT_ROLLBACK_CAUSE = "roll back to revision "


def cause(rev: fleet_pb2.Revision) -> str:
    """Why the revision exists: "rollback to N" for a spec that ran before, and the reason."""
    parts = []
    if rev.same_as:
        parts.append(f"rollback to {rev.same_as}")
    if rev.reason and not (rev.same_as and rev.reason.startswith(_DEFAULT_ROLLBACK_CAUSE)):
        parts.append(rev.reason)
    return ": ".join(parts) or NONE


def history_table(revisions: Iterable[fleet_pb2.Revision], *, now: datetime) -> str:
    rows = [
        (
            f"{r.number} (current)" if r.current else str(r.number),
            r.state,
            age(from_ts(r.created_at), now=now),
            r.actor or NONE,
            first_line(cause(r), 80),
        )
        for r in revisions
    ]
    return table(("REVISION", "STATE", "CREATED", "ACTOR", "CAUSE"), rows)


def revision_text(workload: str, r: fleet_pb2.Revision, *, now: datetime) -> str:
    """One revision in full (`rollout history --revision N`): its state, who applied it, when
    and why, its failure record with the evidence, and its spec (secret values redacted)."""
    lines = [
        f"workload/{workload} revision {r.number}{' (current)' if r.current else ''}: {r.state}",
        f"  since:    {when(from_ts(r.state_since), now=now)}",
        f"  applied:  {when(from_ts(r.created_at), now=now)} by {r.actor or NONE}",
        f"  cause:    {cause(r)}",
        f"  complete: {when(from_ts(r.completed_at), now=now)}",
    ]
    if r.HasField("failure"):
        lines.append(failure_text(r.failure, now=now))
    doc = workload_to_doc(Workload(name=workload, spec=spec_from_pb(r.spec)))["spec"]
    lines.append("  spec:")
    lines.extend(f"    {line}" for line in spec_yaml(doc).splitlines())
    return "\n".join(lines)


def counts(s: fleet_pb2.RolloutStatus) -> str:
    """Updated and ready count the current revision's instances only (ready 0/3 while every
    old instance serves is no outage): the label says so."""
    text = (
        f"updated {s.updated}/{s.desired}, ready {s.ready}/{s.desired} (of the new revision), "
        f"old remaining {s.old_remaining}"
    )
    if s.canaries:
        text += f", canaries {s.canaries}"
    return text


def progress_line(s: fleet_pb2.RolloutStatus) -> str:
    """One line per change while waiting."""
    return f"workload/{s.workload} revision {s.revision} {s.state}: {counts(s)}"


def status_text(s: fleet_pb2.RolloutStatus, *, now: datetime) -> str:
    lines = [
        f"workload/{s.workload} revision {s.revision}: {s.state}",
        f"  applied:  {when(from_ts(s.since), now=now)}",
        f"  {counts(s)}",
    ]
    if s.paused:
        lines.append(f"  paused:   by {s.paused_by or NONE} {when(from_ts(s.paused_at), now=now)}")
    if s.message:
        lines.append(f"  {s.message}")
    if s.HasField("failure"):
        lines.append(failure_text(s.failure, now=now))
    return "\n".join(lines)


def failure_text(f: fleet_pb2.RolloutFailure, *, now: datetime) -> str:
    """A failed rollout explained like a stuck state: reason, evidence (each instance, its last
    exit and the stderr tail), runbook and next command."""
    lines = [f"  failure:  {f.reason or NONE} {when(from_ts(f.at), now=now)}"]
    if f.message:
        lines.append(f"    {f.message}")
    if f.rolled_back_to:
        lines.append(f"    rolled back to revision {f.rolled_back_to}")
    for e in f.evidence:
        head = f"    {e.instance or NONE} on {e.host or NONE}: {e.reason or NONE}"
        lines.append(head + (f", {e.last_exit}" if e.last_exit else ""))
        lines.extend(f"      {line}" for line in e.message.rstrip().splitlines())
    lines.append(f"  runbook:  {f.runbook or NONE}")
    lines.append(f"  next:     {f.next_command or NONE}")
    return "\n".join(lines)


# Who holds a failed rollout (the rollout controller's pause): the next revision lifts it.
KEEL_HOLD = "keel/rollout"


def undo_text(reply: fleet_pb2.UndoRolloutResponse) -> str:
    w = reply.workload
    text = (
        f"workload/{w.name} rolled back to revision {reply.to_revision} as revision "
        f"{reply.revision}: {w.status.updated} of {w.status.desired} instance(s) already run its "
        f"spec and are kept, the others are replaced\n"
    )
    if w.paused and w.paused_by != KEEL_HOLD:
        # An operator's pause holds the rollback too: say so, or it looks stuck.
        text += (
            f"the rollout is paused by {w.paused_by or NONE}: the others are replaced once it "
            f"is resumed: keelctl rollout resume {w.name}\n"
        )
    return text + f"follow it: keelctl rollout status {w.name} --wait"


def pause_text(s: fleet_pb2.RolloutStatus, *, now: datetime) -> str:
    if s.paused:
        head = (
            f"workload/{s.workload} rollout paused (revision {s.revision}) by "
            f"{s.paused_by or NONE} {when(from_ts(s.paused_at), now=now)}; resume it: "
            f"keelctl rollout resume {s.workload}"
        )
    else:
        head = f"workload/{s.workload} rollout resumed (revision {s.revision})"
    return head + "\n" + status_text(s, now=now)
