"""Rollouts as an operator reads them: revisions, failure records and rollout status as wire
messages (keel.v1), the one step from `revision_store` / `rollout_status` to the RPCs'
answers (`rollouts_api`).

A revision's spec goes out as GetWorkload's does (`keel.convert.spec_to_pb`): it is stored
sealed, so every secret_env value is `redacted`. A failure record is the jsonb the rollout
controller writes (the stuck-style record: reason, message, evidence, runbook, next_command,
at, rolled_back_to, with the proto's field names); one that cannot be read is presented with
what can be, never failing the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from controlplane.revision_store import RevisionRow
from controlplane.rollout_status import RolloutStatus
from keel import convert
from keel.v1 import fleet_pb2

log = structlog.get_logger("keel.rollouts")


def revision_pb(rev: RevisionRow, *, current: bool) -> fleet_pb2.Revision:
    msg = fleet_pb2.Revision(
        number=rev.number,
        actor=rev.actor,
        reason=rev.reason,
        created_at=convert.ts(rev.created_at),
        same_as=rev.same_as or 0,
        state=rev.state,
        state_since=convert.ts(rev.state_since),
        completed_at=convert.ts(rev.completed_at),
        spec=convert.spec_to_pb(rev.spec),
        current=current,
    )
    failure = failure_pb(rev.failure, workload=rev.workload)
    if failure is not None:
        msg.failure.CopyFrom(failure)
    return msg


def failure_pb(
    record: Mapping[str, Any] | None, *, workload: str
) -> fleet_pb2.RolloutFailure | None:
    """The stored failure record as a message, or None when there is none."""
    if not record:
        return None
    msg = fleet_pb2.RolloutFailure(
        reason=_text(record.get("reason")),
        message=_text(record.get("message")),
        runbook=_text(record.get("runbook")),
        next_command=_text(record.get("next_command")),
        rolled_back_to=_number(record.get("rolled_back_to")),
    )
    at = _time(record.get("at"))
    if at is not None:
        convert.set_ts(msg.at, at)
    evidence = record.get("evidence")
    for item in evidence if isinstance(evidence, list) else []:
        if not isinstance(item, Mapping):
            continue
        msg.evidence.add(
            instance=_text(item.get("instance")),
            host=_text(item.get("host")),
            reason=_text(item.get("reason")),
            last_exit=_text(item.get("last_exit")),
            message=_text(item.get("message")),
        )
    if set(record) - _FAILURE_KEYS:
        log.warning("rollout failure record has fields this replica does not know",
                    workload=workload, fields=sorted(set(record) - _FAILURE_KEYS))  # fmt: skip
    return msg


_FAILURE_KEYS = frozenset(fleet_pb2.RolloutFailure.DESCRIPTOR.fields_by_name)


def status_pb(s: RolloutStatus) -> fleet_pb2.RolloutStatus:
    msg = fleet_pb2.RolloutStatus(
        workload=s.workload,
        revision=s.revision,
        state=s.state,
        desired=s.desired,
        updated=s.updated,
        ready=s.ready,
        old_remaining=s.old_remaining,
        canaries=s.canaries,
        paused=s.paused,
        paused_by=s.paused_by,
        paused_at=convert.ts(s.paused_at),
        message=s.message,
        since=convert.ts(s.since),
    )
    failure = failure_pb(s.failure, workload=s.workload)
    if failure is not None:
        msg.failure.CopyFrom(failure)
    return msg


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
