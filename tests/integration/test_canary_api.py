"""Canaries on a real Postgres, through the store and the real FleetService over gRPC: promote
lets a waiting canary's rollout continue, abort returns to the revision the canaries ran beside
(its instances stay current) and ends the canary revision ABORTED; both are answered once per
request id, refuse bad input by field and refuse with FAILED_PRECONDITION when no canary waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetapi import serve_fleet
from plans import live_instance

from controlplane.errors import FailedPrecondition
from controlplane.idempotency import REQUEST_ID_KEY
from controlplane.metrics import Metrics
from controlplane.rowviews import workload_view
from controlplane.store import Store
from keel.model import Resources, RolloutPolicy, Workload, WorkloadSpec
from keel.v1 import fleet_pb2


@pytest.fixture
async def stub(store: Store, tmp_path: Path) -> AsyncIterator[Any]:
    async with serve_fleet(store, tmp_path, Metrics()) as stub:
        yield stub


def _workload(version: str, *, canary: int = 1) -> Workload:
    spec = WorkloadSpec(command=("sleep", "1000"), env={"V": version}, resources=Resources(10, 16))
    return Workload(name="web", replicas=2, spec=spec, rollout=RolloutPolicy(canary=canary))


async def _canary_waiting(store: Store) -> None:
    """Revision 1 running (one instance), revision 2 applied with a canary placed beside it."""
    await store.apply_workload(_workload("1"))
    await live_instance(store, "web-1-a", 1)
    row, _ = await store.apply_workload(_workload("2"), actor="alice", reason="v2")
    assert row.canary_pending
    await live_instance(store, "web-2-c", 2)


def _id(value: str) -> list[tuple[str, str]]:
    return [(REQUEST_ID_KEY, value)]


async def _events(store: Store, kind: str) -> list[Any]:
    return list(await store.pool.fetch("SELECT actor, message FROM event WHERE kind = $1", kind))


async def test_abort_returns_to_the_revision_beside_and_ends_the_canary_aborted(
    store: Store, stub: Any
) -> None:
    """Abort: revision 3 runs revision 1's spec (its instance current, the canary not), revision
    2 is ABORTED, one RolloutAborted event; the retried call is answered, not applied again."""
    await _canary_waiting(store)
    request = fleet_pb2.RolloutActionRequest(workload="web", reason="p99 up")
    status = await stub.AbortRollout(request, metadata=_id("abort-1"), timeout=10)
    assert (status.workload, status.revision, status.state) == ("web", 3, "PROGRESSING")
    assert (status.updated, status.old_remaining, status.canaries) == (1, 1, 0)
    assert "revision 2 aborted" in status.message and "revision 1" in status.message
    again = await stub.AbortRollout(request, metadata=_id("abort-1"), timeout=10)
    assert again == status
    row = await store.get_workload("web")
    assert row.workload.spec.env == {"V": "1"} and not row.canary_pending
    assert row.is_current(1) and not row.is_current(2)
    revisions = {r.number: r for r in await store.revisions("web")}
    assert revisions[2].state == "ABORTED"
    assert revisions[3].same_as == 1
    (event,) = await _events(store, "RolloutAborted")
    assert "revision 2" in event["message"] and "p99 up" in event["message"]
    assert event["actor"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AbortRollout(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no canary awaiting promotion" in str(refused.value.details())


async def test_abort_goes_back_to_the_fully_ready_revision_the_canaries_ran_beside(
    store: Store,
) -> None:
    """The newest fully ready revision whose instances still run: not the newest complete
    revision, which no instance runs any more."""
    await store.apply_workload(_workload("1"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await store.apply_workload(_workload("2"))  # no instance yet: no canary
    await live_instance(store, "web-2-a", 2)
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await store.apply_workload(_workload("3", canary=0))  # completes, its instances gone since
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    row, _ = await store.apply_workload(_workload("4"))
    assert row.canary_pending
    aborted = await store.abort("web", actor="carol", reason="errors")
    assert (aborted.aborted, aborted.to_revision, aborted.row.generation) == (4, 2, 5)
    assert aborted.row.workload.spec.env == {"V": "2"}
    (event,) = await _events(store, "RolloutAborted")
    assert event["actor"] == "carol"


async def test_abort_over_a_superseded_canary_returns_to_the_last_ready_revision(
    store: Store,
) -> None:
    """Revision 2's canary was never promoted when revision 3 was applied over it: aborting
    3 returns to revision 1 (fully ready, its instance running), never to 2's spec."""
    await store.apply_workload(_workload("1"))
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await live_instance(store, "web-1-a", 1)
    row, _ = await store.apply_workload(_workload("2"))
    assert row.canary_pending
    await live_instance(store, "web-2-c", 2)
    row, _ = await store.apply_workload(_workload("3"))
    assert row.canary_pending
    aborted = await store.abort("web", actor="carol", reason="errors")
    assert (aborted.aborted, aborted.to_revision, aborted.row.generation) == (3, 1, 4)
    assert aborted.row.workload.spec.env == {"V": "1"}
    assert aborted.row.is_current(1) and not aborted.row.is_current(2)
    assert not aborted.row.canary_pending


async def test_promote_lets_the_rollout_continue_once_per_request(store: Store, stub: Any) -> None:
    """Promote answers PROGRESSING with no canary left; retried with its id it is answered from
    the record; a second promote is FAILED_PRECONDITION."""
    await _canary_waiting(store)
    settled = await store.pool.fetchval(
        """UPDATE workload SET desired_pending = false, desired_changed_at = now() - interval '1h'
           RETURNING desired_changed_at"""
    )
    request = fleet_pb2.RolloutActionRequest(workload="web", reason="looks good")
    status = await stub.PromoteRollout(request, metadata=_id("promote-1"), timeout=10)
    assert (status.revision, status.state, status.canaries, status.updated) == (
        2,
        "PROGRESSING",
        0,
        1,
    )
    assert status.since.seconds > 0 and "promoted" in status.message
    assert await stub.PromoteRollout(request, metadata=_id("promote-1"), timeout=10) == status
    (event,) = await _events(store, "RolloutPromoted")
    assert "looks good" in event["message"]
    row = await store.get_workload("web")
    # What should run changed at the promotion: the convergence clock starts there.
    assert row.desired_pending and row.desired_changed_at is not None
    assert row.desired_changed_at > settled
    assert workload_view(row).canary == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PromoteRollout(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("method", ["PromoteRollout", "AbortRollout"])
@pytest.mark.parametrize(
    ("workload", "reason", "code", "named"),
    [
        ("", "", grpc.StatusCode.INVALID_ARGUMENT, "workload"),
        ("Web!", "", grpc.StatusCode.INVALID_ARGUMENT, "workload"),
        ("web", "two\nlines", grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        ("nope", "", grpc.StatusCode.NOT_FOUND, "nope"),
        ("web", "", grpc.StatusCode.FAILED_PRECONDITION, "no canary awaiting promotion"),
    ],
    ids=["no-name", "bad-name", "bad-reason", "unknown", "no-canary"],
)
async def test_bad_requests_are_refused_by_field_and_change_nothing(
    store: Store,
    stub: Any,
    method: str,
    workload: str,
    reason: str,
    code: grpc.StatusCode,
    named: str,
) -> None:
    """Each refusal names the field or the thing, and no revision or event is written."""
    await store.apply_workload(_workload("1"))
    request = fleet_pb2.RolloutActionRequest(workload=workload, reason=reason)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, method)(request, timeout=10)
    assert refused.value.code() == code
    assert named in str(refused.value.details())
    assert len(await store.revisions("web")) == 1
    assert not await _events(store, "RolloutAborted")
    assert not await _events(store, "RolloutPromoted")


async def test_waiting_since_is_when_the_canary_revision_was_applied(store: Store) -> None:
    """Only workloads whose canaries wait, with their revision's apply time."""
    assert await store.waiting_since() == {}
    await _canary_waiting(store)
    created = (await store.revisions("web"))[0].created_at
    assert await store.waiting_since() == {"web": created}
    await store.promote("web", actor="a")
    assert await store.waiting_since() == {}
    with pytest.raises(FailedPrecondition):
        await store.abort("web", actor="a")
