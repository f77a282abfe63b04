"""The agent's pure planner: desired assignments vs actual instances -> actions.

`plan` decides what to do now for every instance on this host. It is pure (no I/O, the
clock passed in) and table-tested; `agent.reconciler` gathers the inputs (`Actual`) and
performs the actions through a driver. When a process is restarted is `agent.restart`'s
rule; what is reported about an instance, `agent.status`, with the stuck verdicts of
`agent.stuck`.

Rules (per instance):
- an exit not yet recorded is recorded first, with what `agent.restart` decides about it
  (the back-off before a restart, the crash streak);
- desired RUNNING: start when not running and `agent.restart` says a start is due; but with
  `on_disconnect.stop_after` and the control plane out of contact that long (`cut_off_s`):
  stop it, and start nothing, until the control plane is heard again (it may have replaced
  the instance elsewhere by then: `controlplane.liveness.self_fence_due`);
- desired STOPPED: stop when running;
- desired REMOVED (a tombstone): stop when running, then confirm the removal;
- not desired at all (an orphan, e.g. absent from a full set): stop, then forget;
- an instance that is starting or stopping is left alone until that finishes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from agent import restart
from agent.runtime.base import ExitInfo
from agent.settings import Settings
from agent.state import Assignment, InstanceRecord
from keel.model import Desired


class Transition(enum.StrEnum):
    STARTING = "STARTING"
    STOPPING = "STOPPING"


@dataclass(frozen=True)
class Actual:
    """One instance as the agent observes it now: its record plus live facts."""

    record: InstanceRecord
    running: bool = False
    exited: ExitInfo | None = None  # an exit observed but not yet recorded
    exited_at: float | None = None
    healthy: bool = True  # the last probe passed (True when there is no health check)
    # A probe of the current process has answered (True when there is no health check):
    # until then it is not ready, but nothing says its health check fails.
    health_known: bool = True
    health_message: str = ""
    unhealthy_since: float | None = None  # when the probes started failing
    transition: Transition | None = None
    stopping_since: float | None = None  # the first stop of the current process began
    stderr_tail: str = ""  # the end of the stderr log, read at the last exit


@dataclass(frozen=True)
class Start:
    instance_id: str
    assignment: Assignment
    restart: bool  # a restart after a crash: counts in restart_count once it starts
    retry: bool = False  # the last start failed (keel_agent_reconcile_retries_total)


@dataclass(frozen=True)
class Stop:
    instance_id: str
    grace_s: float
    why: str


@dataclass(frozen=True)
class RecordExit:
    instance_id: str
    last_exit: str
    at: float
    backoff_s: float
    next_start_at: float | None  # None: no restart is due (not desired RUNNING)
    crash_streak: int = 0
    crash_loop_since: float | None = None


@dataclass(frozen=True)
class ConfirmRemoved:
    """Report removed=true for a stopped tombstone, then forget the instance."""

    instance_id: str


@dataclass(frozen=True)
class Forget:
    """An orphan is stopped: drop it from local state without a report."""

    instance_id: str


Action = Start | Stop | RecordExit | ConfirmRemoved | Forget


def plan(
    desired: Mapping[str, Assignment],
    actual: Mapping[str, Actual],
    *,
    now: float,
    settings: Settings,
    cut_off_s: float | None = None,
) -> list[Action]:
    """Everything to do now, in instance-id order; each instance's actions in sequence.
    `cut_off_s`: how long the control plane has not recorded this host alive (None: not
    known, as before the first contact)."""
    policy = restart.Policy.of(settings)
    actions: list[Action] = []
    for iid in sorted(desired.keys() | actual.keys()):
        actions.extend(_plan_one(iid, desired.get(iid), actual.get(iid), now, policy, cut_off_s))
    return actions


def self_fenced(a: Assignment, cut_off_s: float | None) -> bool:
    """The instance must not run: its workload stops on a host cut off this long."""
    limit_ms = a.spec.stop_after_disconnect_ms
    return bool(limit_ms) and cut_off_s is not None and cut_off_s * 1000 >= limit_ms


def self_fences(a: Assignment) -> bool:
    """The instance is one the planner stops when the host is cut off (`self_fenced`): its
    agent needs each heartbeat acknowledged to keep counting from a fresh contact."""
    return a.desired is Desired.RUNNING and bool(a.spec.stop_after_disconnect_ms)


def _plan_one(
    iid: str,
    a: Assignment | None,
    x: Actual | None,
    now: float,
    policy: restart.Policy,
    cut_off_s: float | None = None,
) -> list[Action]:
    if x is not None and x.transition is not None:
        return []  # a start or stop is under way; look again when it is done
    out: list[Action] = []
    running = x is not None and x.running
    next_start_at = x.record.next_start_at if x is not None else None
    if x is not None and x.exited is not None:
        running = False
        at = x.exited_at if x.exited_at is not None else now
        spec = a.spec if a is not None and a.desired is Desired.RUNNING else None
        after = restart.after_exit(x.record, spec, at=at, policy=policy)
        next_start_at = after.next_start_at
        out.append(
            RecordExit(
                iid,
                x.exited.describe(),
                at,
                after.backoff_s,
                after.next_start_at,
                after.crash_streak,
                after.crash_loop_since,
            )
        )

    if a is None:
        assert x is not None  # the id came from one of the two maps
        out.append(Stop(iid, x.record.stop_grace_s, "not desired") if running else Forget(iid))
        return out
    grace_s = a.spec.stop_grace_ms / 1000.0
    if a.desired is Desired.RUNNING and self_fenced(a, cut_off_s):
        if running:
            why = f"no contact with the control plane for {cut_off_s:.0f}s (on_disconnect)"
            out.append(Stop(iid, grace_s, why))
    elif a.desired is Desired.RUNNING:
        if not running and restart.start_due(next_start_at, now=now):
            record = x.record if x is not None else None
            retry = record is not None and bool(record.start_error)
            out.append(Start(iid, a, restart.is_restart(record, next_start_at), retry))
    elif a.desired is Desired.STOPPED:
        if running:
            out.append(Stop(iid, grace_s, "desired STOPPED"))
    elif running:
        out.append(Stop(iid, grace_s, "desired REMOVED"))
    else:
        out.append(ConfirmRemoved(iid))
    return out
