"""The rollout judge, pure: from what the leader's cache holds of a workload's current revision,
whether that rollout is complete, has failed (and whether Keel rolls it back), may be promoted,
or when to look again.

The rollout controller (`controlplane.rollouts`) gathers the facts: the revision's row
(`rollout_store`), each live instance of the current spec with its stuck verdict
(`verdicts.judge_instance`: the stuck detector's own rule) and whether the workload is
converged (`verdicts.workload_converged`); it keeps a `Track` per workload between passes and
writes what the judge decides. Nothing here reads a clock or does I/O: `now` is the database's.

- COMPLETE: the workload converged on the revision (every wanted instance runs its spec and is
  ready, none of another revision is left).
- FAILED: live instances of the revision are stuck START_FAILED, CRASH_LOOP or
  HEALTH_CHECK_FAILING (reported first, by that order, when several are), or no progress for
  `rollout.progress_deadline`: no new instance of the revision became ready (more than ever
  before) and no instance of another revision went away. A paused rollout is never failed for
  making no progress (its clock restarts on resume), nor a canary waiting to be promoted (only
  for its canaries being stuck). With `auto_rollback`, Keel returns to the last revision that
  was fully ready, unless the failed revision is itself Keel's rollback (it holds then: a
  second automatic step would ping-pong between two bad revisions).
- PROMOTE: with `auto_promote`, a canary awaiting promotion once its canaries (the live
  instances of the current spec while it waits) have all stayed ready for the spec's min_ready.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from keel.model import RolloutPolicy
from keel.stuck import Reason

# Who Keel's own rollout decisions are recorded as (events, revisions, the hold).
ACTOR = "keel/rollout"
RUNBOOK = "runbooks/rollout-failed.md"
# The failure reason of a rollout that made no progress in time (not a stuck reason: no
# instance is stuck, the rollout is).
PROGRESS_DEADLINE = "PROGRESS_DEADLINE"
# The stuck reasons that fail a rollout, in the order one is named when several are seen.
FAILING = (Reason.START_FAILED.value, Reason.CRASH_LOOP.value, Reason.HEALTH_CHECK_FAILING.value)
# The most instances a failure record names (the message says how many there were).
EVIDENCE_LIMIT = 5


class State(enum.StrEnum):
    """A revision's state (workload_revision.state)."""

    PROGRESSING = "PROGRESSING"
    AWAITING_PROMOTION = "AWAITING_PROMOTION"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"
    SUPERSEDED = "SUPERSEDED"


# A workload's rollout as keel_rollouts{state} counts it (`rollout_state`).
ROLLOUT_STATES = (
    "PROGRESSING",
    "PAUSED",
    "AWAITING_PROMOTION",
    "COMPLETE",
    "FAILED",
    "ROLLED_BACK",
)


@dataclass(frozen=True)
class Member:
    """A live instance of the current spec: ready or not, and its stuck verdict now."""

    id: str
    host: str
    ready: bool
    stuck: str = ""  # a reason of keel.stuck, or ""
    message: str = ""  # the verdict's message (a CRASH_LOOP one carries the stderr tail)


@dataclass(frozen=True)
class Facts:
    revision: int
    state: str
    since: datetime  # the revision's state_since: applied, or promoted
    now: datetime
    converged: bool  # verdicts.workload_converged
    members: tuple[Member, ...]
    old_live: int  # live instances of other specs
    desired: int  # instances wanted (replicas, or a daemon's hosts)
    paused: bool
    canary_pending: bool
    policy: RolloutPolicy
    min_ready_s: float
    # The revision is Keel's own rollback of a failed one: it is never rolled back again.
    keel_rollback: bool = False


@dataclass(frozen=True)
class Track:
    """What the controller remembers of a workload's rollout between passes (lost with
    leadership: a new leader starts the clock at its first look, so a deadline is only ever
    met late, never early)."""

    revision: int
    best_ready: int  # the most instances of the revision ever seen ready
    fewest_old: int  # the fewest live instances of other revisions ever seen
    progress_at: datetime  # the clock: the last progress, resume or start
    paused: bool = False
    canaries_ready_since: datetime | None = None


@dataclass(frozen=True)
class Complete:
    pass


@dataclass(frozen=True)
class Fail:
    reason: str  # one of FAILING, or PROGRESS_DEADLINE
    message: str
    evidence: tuple[Member, ...]
    roll_back: bool  # auto_rollback asks for it (the store still needs a revision to return to)


@dataclass(frozen=True)
class Promote:
    pass


Action = Complete | Fail | Promote


@dataclass(frozen=True)
class Judgement:
    action: Action | None
    track: Track
    recheck_s: float | None = None  # look again then, with nothing changed (None: on change)


def judge(f: Facts, track: Track | None) -> Judgement:
    """The decision for the workload's current revision now, and what to remember."""
    t = _tracked(f, track)
    if f.state == State.FAILED:
        # Rolled on after all (the operator resumed it): complete once it converges.
        return Judgement(Complete() if f.converged else None, t)
    if f.state not in (State.PROGRESSING, State.AWAITING_PROMOTION):
        return Judgement(None, t)
    awaiting = f.state == State.AWAITING_PROMOTION or f.canary_pending
    if f.converged and not awaiting:
        return Judgement(Complete(), t)
    stuck = [m for m in f.members if m.stuck in FAILING]
    if stuck:
        return Judgement(_stuck(f, stuck), t)
    if awaiting:
        # A pause holds everything: no canary is promoted while it lasts.
        return Judgement(None, t) if f.paused else _canary(f, t)
    if f.paused:
        return Judgement(None, t)
    due = t.progress_at + timedelta(milliseconds=f.policy.progress_deadline_ms)
    if f.now < due:
        return Judgement(None, t, (due - f.now).total_seconds())
    return Judgement(_no_progress(f), t)


def _tracked(f: Facts, track: Track | None) -> Track:
    """The track moved on to what the facts show: progress, a pause or a resume, a promotion."""
    ready = sum(1 for m in f.members if m.ready)
    if track is None or track.revision != f.revision:
        return Track(f.revision, ready, f.old_live, f.now, paused=f.paused)
    t = track
    if f.since > t.progress_at:  # promoted (or the row says it started later): from then
        t = replace(t, progress_at=f.since)
    if ready > t.best_ready or f.old_live < t.fewest_old:
        t = replace(
            t,
            best_ready=max(ready, t.best_ready),
            fewest_old=min(f.old_live, t.fewest_old),
            progress_at=f.now,
        )
    if f.paused != t.paused:
        # Paused time is no time without progress: the clock restarts on resume.
        t = replace(t, paused=f.paused, progress_at=f.now if not f.paused else t.progress_at)
    return t


def _stuck(f: Facts, stuck: list[Member]) -> Fail:
    counts = Counter(m.stuck for m in stuck)
    reason = next(r for r in FAILING if counts[r])
    named = [m for m in stuck if m.stuck == reason] + [m for m in stuck if m.stuck != reason]
    first = named[0]
    detail = first.message.strip().split("\n", 1)[0] if first.message.strip() else reason
    message = (
        f"revision {f.revision}: {counts[reason]} of its {len(f.members)} "
        f"{_plural(len(f.members), 'instance')} {reason}"
        + (f" (and {len(stuck) - counts[reason]} more stuck otherwise)" if len(counts) > 1 else "")
        + f"; {first.id} on {first.host}: {detail}"
    )
    return Fail(reason, message, tuple(named[:EVIDENCE_LIMIT]), _rolls_back(f))


def _no_progress(f: Facts) -> Fail:
    ready = sum(1 for m in f.members if m.ready)
    waiting = [m for m in f.members if not m.ready]
    deadline = _duration(f.policy.progress_deadline_ms)
    message = (
        f"revision {f.revision} made no progress for {deadline} (rollout.progress_deadline): "
        f"{ready} of {f.desired} wanted {_plural(f.desired, 'instance')} of it ready, "
        f"{f.old_live} of other revisions left"
    )
    if waiting:
        first = waiting[0]
        detail = first.message.strip().split("\n", 1)[0] or "not ready"
        message += f"; {first.id} on {first.host}: {detail}"
    return Fail(PROGRESS_DEADLINE, message, tuple(waiting[:EVIDENCE_LIMIT]), _rolls_back(f))


def _canary(f: Facts, t: Track) -> Judgement:
    """A canary awaiting promotion: promoted once every canary stayed ready for min_ready."""
    canaries = f.members
    if not f.policy.auto_promote:
        return Judgement(None, t)
    if not canaries or len(canaries) < f.policy.canary or not all(m.ready for m in canaries):
        return Judgement(None, replace(t, canaries_ready_since=None))
    since = t.canaries_ready_since or f.now
    t = replace(t, canaries_ready_since=since)
    due = since + timedelta(seconds=f.min_ready_s)
    if f.now < due:
        return Judgement(None, t, (due - f.now).total_seconds())
    return Judgement(Promote(), t)


def _rolls_back(f: Facts) -> bool:
    return f.policy.auto_rollback and not f.keel_rollback


def is_keel_rollback(actor: str, same_as: int | None) -> bool:
    """Whether a revision is Keel's own rollback of a failed one (`auto_rollback`): while it is
    current, the rollout the operator started counts as ROLLED_BACK (gauge and status)."""
    return actor == ACTOR and same_as is not None


def rollout_state(state: str, *, paused: bool, keel_rollback: bool) -> str | None:
    """How keel_rollouts{state} counts a workload whose current revision is in `state`: FAILED
    (held), ROLLED_BACK (the current revision is Keel's rollback of a failed one), PAUSED (in
    progress or with canaries waiting, and paused: as `keelctl rollout status` says), else the
    revision's state; None for a state it does not count."""
    if state == State.FAILED:
        return "FAILED"
    if keel_rollback:
        return "ROLLED_BACK"
    if state in (State.PROGRESSING, State.AWAITING_PROMOTION) and paused:
        return "PAUSED"
    return str(state) if state in ROLLOUT_STATES else None


def next_command(workload: str, fail: Fail, *, rolled_back: bool) -> str:
    """What to run next: why the revision failed when Keel already rolled back; else undo."""
    if rolled_back and fail.evidence:
        return f"keelctl logs {fail.evidence[0].id} --tail 50"
    return f"keelctl rollout undo {workload}"


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
