"""A drain's progress as its operation records it: moved, remaining, blocked, every blocker
since when, whether it is stuck (DRAIN_BLOCKED), and what changed enough to be written.

Pure functions of the operation's last record and the planner's step (`controlplane.drain`),
with the clock passed in; the drain controller (`drainer`) calls them after each pass, and
the ETA comes from `controlplane.drain_plan`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from controlplane.drain import Step
from controlplane.operations import BlockerRecord, OperationRow, Progress
from keel.stuck import Reason

# The ETA is written again only when it moves by more than this share (or anything else moved).
ETA_CHANGE = 0.1


def age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - then).total_seconds())


def progress_of(
    op: OperationRow,
    step: Step,
    *,
    now: datetime,
    eta_s: float | None,
    blocked_after_s: float,
) -> tuple[Progress, datetime | None]:
    """The progress after `step`, and since when the drain has been blocked (None: it is not):
    it has blockers and no move finished since that time."""
    before = op.progress
    first = before.total == 0 and before.moved == 0 and before.remaining == 0
    moved = 0 if first else before.moved + max(0, before.remaining - step.remaining)
    held = {(b.instance, b.reason): b.since for b in before.blockers}
    blockers = sorted(
        (
            BlockerRecord(
                instance=b.instance,
                workload=b.workload,
                host=b.host,
                reason=b.reason,
                message=b.message,
                since=held.get((b.instance, b.reason), now),
                replacement=b.replacement,
            )
            for b in step.blockers
        ),
        key=lambda b: (b.since, b.instance),
    )
    blocked_since: datetime | None = None
    if blockers:
        unchanged = op.blocked_since is not None and moved <= before.moved
        blocked_since = op.blocked_since if unchanged else now
    progress = Progress(
        total=moved + step.remaining,
        moved=moved,
        remaining=step.remaining,
        blocked=len({b.instance for b in blockers}),
        in_flight=step.in_flight,
        queued=step.queued,
        eta_s=None if eta_s is None else round(eta_s, 1),
        blockers=tuple(blockers),
        stuck=blocked_since is not None and age(now, blocked_since) >= blocked_after_s,
    )
    return progress, blocked_since


def stuck_event(
    before: Progress, after: Progress, *, now: datetime, since: datetime | None
) -> tuple[str, str] | None:
    """StuckDetected when the drain becomes DRAIN_BLOCKED, StuckCleared when it stops being
    so (judged from the record, so a new leader says each once too)."""
    if after.stuck and not before.stuck:
        first = after.blockers[0]
        return (
            "StuckDetected",
            f"{Reason.DRAIN_BLOCKED.value}: blocked for {age(now, since):.0f}s with no move "
            f"finishing; {first.instance} {first.reason.value}: {first.message}",
        )
    if before.stuck and not after.stuck:
        return ("StuckCleared", f"{Reason.DRAIN_BLOCKED.value}: moving again")
    return None


def worth_writing(before: Progress, after: Progress) -> bool:
    """Anything but the ETA moved, or the ETA by more than a tenth (or a second)."""
    if dataclasses.replace(before, eta_s=None) != dataclasses.replace(after, eta_s=None):
        return True
    if (before.eta_s is None) != (after.eta_s is None):
        return True
    if before.eta_s is None or after.eta_s is None:
        return False
    return abs(before.eta_s - after.eta_s) > max(1.0, ETA_CHANGE * before.eta_s)


def failed_text(deadline: str, progress: Progress) -> str:
    """Why a drain failed at its deadline: what is left and the first blocker."""
    text = (
        f"the deadline ({deadline}) passed with {progress.remaining} instance(s) left on the "
        f"hosts, which stay cordoned"
    )
    if progress.blockers:
        first = progress.blockers[0]
        more = len(progress.blockers) - 1
        text += f"; blocked: {first.instance} {first.reason.value}: {first.message}"
        if more:
            text += f" (and {more} more blocker(s): keelctl op get)"
    return text
