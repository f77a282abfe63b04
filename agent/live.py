"""What the agent knows about an instance beyond its local-state record, in memory only.

`agent.reconciler` keeps one `Live` per instance: the driver's handle, an exit seen but not
yet recorded, the start or stop under way and its task, the process watcher, since when a stop
has been going on, the end of stderr at the last exit, and the secret_env values the process
started with (what is redacted from its output). `actual_of` joins it with the
record and the last health result into the planner's `Actual` (`agent.planner`), and
`probe_targets` says which of them the health monitor (`agent.health`) probes, and how.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.health import ProbeResult, Target
from agent.planner import Actual, Transition
from agent.runtime.base import ExitInfo, Handle, instance_env
from agent.state import Assignment, InstanceRecord, LocalState
from keel.redact import Redactor


@dataclass
class Live:
    """In-memory facts about one instance that local state does not need to keep."""

    handle: Handle | None = None
    exited: ExitInfo | None = None
    exited_at: float | None = None
    transition: Transition | None = None
    task: asyncio.Task[Any] | None = None
    watcher: asyncio.Task[Any] | None = None
    stopping_since: float | None = None  # the first stop of the current process began
    stderr_tail: str = ""  # the end of stderr at the last exit (CRASH_LOOP's message), redacted
    secrets: Redactor = field(default_factory=Redactor)  # the values the process started with

    @classmethod
    def adopted(cls, handle: Handle | None, *, now: float) -> Live:
        """A process a previous agent started, as the driver found it: its handle, or gone
        (exited, or the pid belongs to another process now: not ours to touch)."""
        return cls(handle=handle) if handle is not None else cls(exited=ExitInfo(), exited_at=now)

    @property
    def running(self) -> bool:
        return self.handle is not None and self.exited is None

    def process_gone(self) -> None:
        """The process is recorded as gone (an exit recorded, or a stop done)."""
        self.handle, self.exited, self.exited_at = None, None, None
        self.stopping_since = None

    def stopping(self, now: float) -> None:
        """A stop begins, or begins again: STOP_TIMEOUT's clock runs from the first."""
        self.transition = Transition.STOPPING
        if self.stopping_since is None:
            self.stopping_since = now

    def stopping_for(self, now: float) -> float:
        return now - self.stopping_since if self.stopping_since is not None else 0.0


def actual_of(
    record: InstanceRecord,
    live: Live,
    assignment: Assignment | None,
    *,
    probed: ProbeResult | None,
    failing_since: float | None,
) -> Actual:
    """The planner's view of one instance; with no health check it counts as healthy."""
    checked = assignment is not None and assignment.spec.health is not None
    message = ""
    if checked:
        message = probed.message if probed is not None else "no health result yet"
    return Actual(
        record=record,
        running=live.running,
        exited=live.exited,
        exited_at=live.exited_at,
        healthy=probed.ok if checked and probed is not None else not checked,
        health_known=not checked or probed is not None,
        health_message=message,
        unhealthy_since=failing_since if checked else None,
        transition=live.transition,
        stopping_since=live.stopping_since,
        stderr_tail=live.stderr_tail,
    )


def probe_target(
    record: InstanceRecord, live: Live, assignment: Assignment | None, *, host: str
) -> Target | None:
    """What to probe for a running instance with a health check (None: nothing to probe)."""
    a = assignment
    if a is None or a.spec.health is None or not live.running or live.transition is not None:
        return None
    env = instance_env(
        a.spec, host=host, workload=a.workload, instance_id=a.instance_id, ports=record.ports
    )
    return Target(
        a.instance_id, a.spec.health, dict(record.ports), env, a.workload, user=a.spec.user
    )


def probe_targets(lives: Mapping[str, Live], state: LocalState, *, host: str) -> list[Target]:
    """Running instances with a health check, for the health monitor."""
    targets = []
    for iid, live in lives.items():
        record = state.instances.get(iid)
        if record is None:
            continue
        if (target := probe_target(record, live, state.desired.get(iid), host=host)) is not None:
            targets.append(target)
    return targets
