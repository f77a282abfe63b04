"""Operations as records: a drain's parameters, its state machine and its progress.

Plain data with its JSON form (the `operation` table's `params` and `progress` columns,
migration 0009). `operation_store` reads and writes the rows; the drain controller
(`drainer`) moves an operation through its states and records its progress; `fleet` presents
it (`convert.operation_pb`). The blockers' reasons, runbooks and next commands are
`keel.blockers`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keel.blockers import BlockerReason

RUNBOOK = "runbooks/cordon-and-drain.md"
DEFAULT_DEADLINE_MS = 3_600_000


class OperationState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        return self in (OperationState.PENDING, OperationState.RUNNING)


ACTIVE = (OperationState.PENDING.value, OperationState.RUNNING.value)


class OnDeadline(enum.StrEnum):
    FAIL = "fail"  # end FAILED, the hosts left cordoned, the blockers listed
    FORCE = "force"  # stop what remains, budget or not


@dataclass(frozen=True)
class DrainParams:
    deadline_ms: int = DEFAULT_DEADLINE_MS
    on_deadline: OnDeadline = OnDeadline.FAIL
    max_parallel: int = 0  # 0: no limit
    ignore_daemons: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "deadline_ms": self.deadline_ms,
            "on_deadline": self.on_deadline.value,
            "max_parallel": self.max_parallel,
            "ignore_daemons": self.ignore_daemons,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrainParams:
        return cls(
            deadline_ms=int(data.get("deadline_ms", DEFAULT_DEADLINE_MS)),
            on_deadline=OnDeadline(data.get("on_deadline", OnDeadline.FAIL.value)),
            max_parallel=int(data.get("max_parallel", 0)),
            ignore_daemons=bool(data.get("ignore_daemons", False)),
        )


@dataclass(frozen=True)
class BlockerRecord:
    """A blocker as the operation keeps it: the planner's, and since when it has held."""

    instance: str
    workload: str
    host: str
    reason: BlockerReason
    message: str
    since: datetime
    replacement: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "workload": self.workload,
            "host": self.host,
            "reason": self.reason.value,
            "message": self.message,
            "since": self.since.isoformat(),
            "replacement": self.replacement,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockerRecord:
        return cls(
            instance=str(data["instance"]),
            workload=str(data["workload"]),
            host=str(data["host"]),
            reason=BlockerReason(data["reason"]),
            message=str(data["message"]),
            since=datetime.fromisoformat(data["since"]),
            replacement=str(data.get("replacement", "")),
        )


@dataclass(frozen=True)
class Progress:
    """How far a drain is: `total` instances it had to move when it began (or since, if more
    came), how many have left (`moved`), are left, blocked, under way; its ETA in seconds
    (None: unknown, it is blocked) and its blockers, the longest-held first."""

    total: int = 0
    moved: int = 0
    remaining: int = 0
    blocked: int = 0
    in_flight: int = 0
    queued: int = 0
    eta_s: float | None = None
    blockers: tuple[BlockerRecord, ...] = ()
    stuck: bool = False  # blocked past --drain-blocked-after with no move finishing

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "moved": self.moved,
            "remaining": self.remaining,
            "blocked": self.blocked,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "eta_s": self.eta_s,
            "blockers": [b.to_json() for b in self.blockers],
            "stuck": self.stuck,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        eta = data.get("eta_s")
        return cls(
            total=int(data.get("total", 0)),
            moved=int(data.get("moved", 0)),
            remaining=int(data.get("remaining", 0)),
            blocked=int(data.get("blocked", 0)),
            in_flight=int(data.get("in_flight", 0)),
            queued=int(data.get("queued", 0)),
            eta_s=None if eta is None else float(eta),
            blockers=tuple(BlockerRecord.from_json(b) for b in data.get("blockers", ())),
            stuck=bool(data.get("stuck", False)),
        )


@dataclass(frozen=True)
class OperationRow:
    id: str
    kind: str
    state: OperationState
    hosts: tuple[str, ...]
    params: DrainParams
    actor: str
    reason: str
    runbook: str
    progress: Progress
    message: str
    forced: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime
    blocked_since: datetime | None
    version: int
