"""The agent's durable local state: `<state-dir>/state.json`, written atomically.

It holds what the agent must remember across its own restarts: the last desired set with its
revision (so it keeps running workloads while the control plane is away, and resumes the watch
from that revision), and per instance what it started (pid plus process start time, to tell a
reused pid apart at adoption), its ports, restart count, last exit and back-off. The reconciler
is the only writer; `StateStore.save` runs the blocking write-fsync-rename in a thread, and only
when one of these changed.

When the control plane last recorded the host alive (what `on_disconnect.stop_after` counts
from) moves at every acknowledged heartbeat, so it is not in state.json (which would then be
rewritten and fsynced at every heartbeat): it is the modification time of `<state-dir>/contact`
(`StateStore.load_contact`, `save_contact`), set with one utime call and never fsynced. A crash
can only leave it older than the truth, so a restarted agent fences no later than it should.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import StateError
from keel.model import Desired, WorkloadSpec

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Assignment:
    """One instance the control plane placed on this host, with its generation's spec."""

    instance_id: str
    workload: str
    generation: int
    desired: Desired
    spec: WorkloadSpec
    # W3C traceparent of the operator request behind this desired change ("" = none); kept
    # in local state so a start after an agent restart still joins the operator's trace.
    trace_context: str = ""


@dataclass(frozen=True)
class InstanceRecord:
    """What the agent started for one instance, and its crash history. Times are epoch seconds."""

    instance_id: str
    workload: str
    pid: int | None = None
    start_time: float | None = None  # psutil create_time of pid: tells a reused pid apart
    ports: dict[str, int] = field(default_factory=dict)
    restart_count: int = 0
    starts: int = 0  # successful starts; the first start is ready without min_ready
    started_at: float | None = None
    last_exit: str = ""
    last_exit_at: float | None = None
    backoff_s: float = 0.0  # the wait used before the last restart (0 = none yet)
    next_start_at: float | None = None  # no start before this (crash back-off)
    start_error: str = ""  # the last start failure, until a start succeeds
    start_failed_since: float | None = None  # first failure of the current run of failures
    stop_grace_s: float = 10.0  # from the spec it was started with: orphans have no spec
    # Unexpected exits in a row, none after staying up min_ready (2+ = CRASH_LOOP), and when
    # the streak reached 2.
    crash_streak: int = 0
    crash_loop_since: float | None = None

    @property
    def first_start(self) -> bool:
        return self.starts <= 1

    # What each event does to the record; when to start next is `agent.restart`'s to say.

    def started(
        self,
        pid: int,
        start_time: float,
        *,
        ports: dict[str, int],
        at: float,
        restart: bool,
        stop_grace_s: float,
    ) -> InstanceRecord:
        return replace(
            self,
            pid=pid,
            start_time=start_time,
            ports=ports,
            starts=self.starts + 1,
            restart_count=self.restart_count + (1 if restart else 0),
            started_at=at,
            start_error="",
            start_failed_since=None,
            next_start_at=None,
            stop_grace_s=stop_grace_s,
        )

    def start_failed(
        self,
        error: str,
        *,
        ports: dict[str, int],
        since: float,
        backoff_s: float,
        next_start_at: float,
    ) -> InstanceRecord:
        return replace(
            self,
            ports=ports,
            start_error=error,
            start_failed_since=since,
            backoff_s=backoff_s,
            next_start_at=next_start_at,
        )

    def exited(
        self,
        last_exit: str,
        *,
        at: float,
        backoff_s: float,
        next_start_at: float | None,
        crash_streak: int,
        crash_loop_since: float | None,
    ) -> InstanceRecord:
        return replace(
            self,
            pid=None,
            start_time=None,
            last_exit=last_exit,
            last_exit_at=at,
            backoff_s=backoff_s,
            next_start_at=next_start_at,
            crash_streak=crash_streak,
            crash_loop_since=crash_loop_since,
        )

    def stopped(self, last_exit: str, *, at: float) -> InstanceRecord:
        """Stopped on purpose: no restart is pending."""
        return replace(
            self,
            pid=None,
            start_time=None,
            last_exit=last_exit,
            last_exit_at=at,
            next_start_at=None,
        )


@dataclass(frozen=True)
class LocalState:
    revision: int = 0
    desired: dict[str, Assignment] = field(default_factory=dict)
    instances: dict[str, InstanceRecord] = field(default_factory=dict)

    def with_desired(
        self, *, full: bool, revision: int, assignments: Sequence[Assignment]
    ) -> tuple[LocalState, list[Assignment]]:
        """A desired set from the control plane taken in (a full set replaces, changes
        merge), and the assignments whose desired state is new to this agent."""
        desired = {} if full else dict(self.desired)
        changed = []
        for a in assignments:
            old = self.desired.get(a.instance_id)
            if old is None or old.desired is not a.desired:
                changed.append(a)
            desired[a.instance_id] = a
        return replace(self, revision=revision, desired=desired), changed

    def with_record(self, record: InstanceRecord) -> LocalState:
        return replace(self, instances={**self.instances, record.instance_id: record})

    def without(self, instance_id: str, *, drop_desired: bool) -> LocalState:
        """The instance forgotten here; with `drop_desired`, gone from the desired set too."""
        instances = {k: v for k, v in self.instances.items() if k != instance_id}
        desired = self.desired
        if drop_desired:
            desired = {k: v for k, v in desired.items() if k != instance_id}
        return replace(self, instances=instances, desired=desired)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "revision": self.revision,
            "desired": {
                k: {
                    "workload": a.workload,
                    "generation": a.generation,
                    "desired": a.desired.value,
                    "spec": a.spec.to_json(),
                    "trace_context": a.trace_context,
                }
                for k, a in sorted(self.desired.items())
            },
            "instances": {
                k: {
                    "workload": r.workload,
                    "pid": r.pid,
                    "start_time": r.start_time,
                    "ports": dict(r.ports),
                    "restart_count": r.restart_count,
                    "starts": r.starts,
                    "started_at": r.started_at,
                    "last_exit": r.last_exit,
                    "last_exit_at": r.last_exit_at,
                    "backoff_s": r.backoff_s,
                    "next_start_at": r.next_start_at,
                    "start_error": r.start_error,
                    "start_failed_since": r.start_failed_since,
                    "stop_grace_s": r.stop_grace_s,
                    "crash_streak": r.crash_streak,
                    "crash_loop_since": r.crash_loop_since,
                }
                for k, r in sorted(self.instances.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalState:
        if data.get("version") != FORMAT_VERSION:
            raise StateError(f"unsupported state format version {data.get('version')!r}")
        desired = {
            k: Assignment(
                instance_id=k,
                workload=v["workload"],
                generation=int(v["generation"]),
                desired=Desired(v["desired"]),
                spec=WorkloadSpec.from_json(v["spec"]),
                trace_context=str(v.get("trace_context", "")),
            )
            for k, v in data.get("desired", {}).items()
        }
        instances = {
            k: InstanceRecord(
                instance_id=k,
                workload=v["workload"],
                pid=v.get("pid"),
                start_time=v.get("start_time"),
                ports={str(n): int(p) for n, p in (v.get("ports") or {}).items()},
                restart_count=int(v.get("restart_count", 0)),
                starts=int(v.get("starts", 0)),
                started_at=v.get("started_at"),
                last_exit=v.get("last_exit", ""),
                last_exit_at=v.get("last_exit_at"),
                backoff_s=float(v.get("backoff_s", 0.0)),
                next_start_at=v.get("next_start_at"),
                start_error=v.get("start_error", ""),
                start_failed_since=v.get("start_failed_since"),
                stop_grace_s=float(v.get("stop_grace_s", 10.0)),
                crash_streak=int(v.get("crash_streak", 0)),
                crash_loop_since=v.get("crash_loop_since"),
            )
            for k, v in data.get("instances", {}).items()
        }
        return cls(revision=int(data.get("revision", 0)), desired=desired, instances=instances)


class StateStore:
    """Reads and atomically replaces `<state-dir>/state.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.contact_path = path.with_name("contact")
        self._saved: LocalState | None = None  # what the file holds, once loaded or saved
        self._lock = asyncio.Lock()  # one save at a time, so an older one never lands last
        # The contact time an older agent kept in state.json, until the contact file has one.
        self._legacy_contact: float | None = None

    def load(self) -> LocalState:
        """The saved state, or an empty one on first start. Blocking: call before serving."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            self._saved = LocalState()
            return self._saved
        except OSError as e:
            raise StateError(f"cannot read {self.path}: {e}") from e
        try:
            data = json.loads(text)
            self._saved = LocalState.from_json(data)
            contact = data.get("contact_at")
            self._legacy_contact = None if contact is None else float(contact)
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(f"{self.path} is corrupt ({e}); move it aside to start empty") from e
        return self._saved

    def load_contact(self) -> float | None:
        """When the control plane last recorded this host alive (epoch s), as kept by
        `save_contact` (or by an older agent in state.json; call `load` first); None: never."""
        try:
            return self.contact_path.stat().st_mtime
        except FileNotFoundError:
            return self._legacy_contact
        except OSError as e:
            raise StateError(f"cannot read {self.contact_path}: {e}") from e

    def save_contact(self, at: float) -> None:
        """Keeps `at` as the contact file's modification time: one utime call, cheap enough
        for the event loop at every acknowledged heartbeat. No fsync: a crash can only leave
        an older time, and an older contact stops a self-fencing workload sooner, not later."""
        try:
            try:
                os.utime(self.contact_path, (at, at))
            except FileNotFoundError:
                self.contact_path.parent.mkdir(parents=True, exist_ok=True)
                self.contact_path.touch()
                os.utime(self.contact_path, (at, at))
        except OSError as e:
            raise StateError(f"cannot write {self.contact_path}: {e}") from e

    async def save_if_changed(self, state: LocalState) -> None:
        """Save `state` unless the file already holds it; StateError if it cannot."""
        async with self._lock:
            if state != self._saved:
                await self.save(state)
                self._saved = state

    async def save(self, state: LocalState) -> None:
        """Write in a thread: fsync is a blocking call that must not stall the event loop."""
        await asyncio.to_thread(self.save_blocking, state)

    def save_blocking(self, state: LocalState) -> None:
        # write temp + fsync + rename + fsync(dir): after a crash the file is either the old
        # state or the new one, never a torn mix.
        data = json.dumps(state.to_json(), indent=1).encode()
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise StateError(f"cannot write {self.path}: {e}") from e
