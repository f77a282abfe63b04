"""Request ids on a real Postgres, through the real FleetService over gRPC: a mutating call
retried with the id of an attempt that committed gets that attempt's answer and is not applied
again; an id reused for another request is INVALID_ARGUMENT naming it and changes nothing; a
caller that gave up mid-write finds the write's outcome; old records are pruned."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from fleetapi import serve_fleet

from controlplane import idempotency
from controlplane.idempotency import REQUEST_ID_KEY
from controlplane.metrics import Metrics
from controlplane.store import Store
from keel.model import Resources
from keel.v1 import fleet_pb2


class Api:
    """The stub, and the server's replay counter."""

    def __init__(self, stub: Any, metrics: Metrics) -> None:
        self.stub = stub
        self.metrics = metrics

    def replays(self, method: str) -> float:
        return self.metrics.requests_replayed.labels(method)._value.get()  # type: ignore[no-any-return]


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    metrics = Metrics()
    async with serve_fleet(store, tmp_path, metrics) as stub:
        yield Api(stub, metrics)


def _apply(name: str = "web", *, replicas: int = 2, greeting: str = "hi") -> Any:
    doc = {
        "name": name,
        "replicas": replicas,
        "spec": {"command": ["sleep", "1000"], "env": {"GREETING": greeting}},
    }
    return fleet_pb2.ApplyWorkloadRequest(manifest_json=json.dumps(doc))


def _id(value: str) -> list[tuple[str, str]]:
    return [(REQUEST_ID_KEY, value)]


async def _events(store: Store, kind: str) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM event WHERE kind = $1", kind))


async def _host(store: Store, name: str) -> None:
    await store.register_host(name, labels={}, capacity=Resources(4000, 4096), agent_version="test")


async def test_a_retried_apply_gets_the_first_answer_and_is_applied_once(
    store: Store, api: Api
) -> None:
    """The same id twice: both answers are the first (created, generation 1), one event."""
    first = await api.stub.ApplyWorkload(_apply(), metadata=_id("a-1"), timeout=10)
    again = await api.stub.ApplyWorkload(_apply(), metadata=_id("a-1"), timeout=10)
    assert first.result == again.result == "created"
    assert again == first
    assert await _events(store, "WorkloadApplied") == 1
    assert api.replays("ApplyWorkload") == 1
    # Without the id, the same apply is a new request: unchanged, no second event.
    plain = await api.stub.ApplyWorkload(_apply(), timeout=10)
    assert plain.result == "unchanged"


async def test_a_retried_change_answers_configured_not_unchanged(store: Store, api: Api) -> None:
    """A change retried after it committed answers `configured` (what happened), not
    `unchanged` (what a second run would say), and moves the generation once."""
    await api.stub.ApplyWorkload(_apply(), timeout=10)
    first = await api.stub.ApplyWorkload(_apply(greeting="x"), metadata=_id("c-1"), timeout=10)
    again = await api.stub.ApplyWorkload(_apply(greeting="x"), metadata=_id("c-1"), timeout=10)
    assert (
        (again.result, again.workload.generation)
        == ("configured", 2)
        == (
            first.result,
            first.workload.generation,
        )
    )
    assert (await store.get_workload("web")).generation == 2


async def test_an_id_reused_for_another_request_is_refused_and_changes_nothing(
    store: Store, api: Api
) -> None:
    """The id of one apply sent with a different manifest, or with another method:
    INVALID_ARGUMENT naming keel-request-id, nothing changed."""
    await api.stub.ApplyWorkload(_apply(), metadata=_id("r-1"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.ApplyWorkload(_apply(replicas=5), metadata=_id("r-1"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert REQUEST_ID_KEY in (err.value.details() or "")
    assert "ApplyWorkload" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.DeleteWorkload(
            fleet_pb2.DeleteWorkloadRequest(name="web"), metadata=_id("r-1"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    row = await store.get_workload("web")
    assert (row.workload.replicas, row.deleting) == (2, False)


@pytest.mark.parametrize("bad", ["", " x", "a/b", "x" * 129, "-leading-dash"])
async def test_a_malformed_request_id_is_refused_naming_the_key(
    store: Store, api: Api, bad: str
) -> None:
    """An id outside the accepted characters or length: INVALID_ARGUMENT, nothing written."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.ApplyWorkload(_apply(), metadata=_id(bad), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert REQUEST_ID_KEY in (err.value.details() or "")
    assert await store.list_workloads() == []


async def test_a_replayed_cordon_does_not_undo_a_later_uncordon(store: Store, api: Api) -> None:
    """cordon (id A), uncordon (id B), cordon retried with A: the answer is the first cordon's,
    and the host stays schedulable (the retry is not applied again)."""
    await _host(store, "h1")
    cordon = fleet_pb2.CordonRequest(hosts=["h1"], reason="disk")
    first = await api.stub.Cordon(cordon, metadata=_id("A"), timeout=10)
    assert list(first.changed) == ["h1"]
    await api.stub.Uncordon(fleet_pb2.UncordonRequest(hosts=["h1"]), metadata=_id("B"), timeout=10)
    again = await api.stub.Cordon(cordon, metadata=_id("A"), timeout=10)
    assert again == first
    assert (await store.get_host("h1")).schedulable
    assert await _events(store, "HostCordoned") == 1
    replay = await api.stub.Uncordon(
        fleet_pb2.UncordonRequest(hosts=["h1"]), metadata=_id("B"), timeout=10
    )
    assert list(replay.changed) == ["h1"]


async def test_drain_cancel_and_delete_retried_answer_as_first(store: Store, api: Api) -> None:
    """Drain, cancel and delete, each retried with its id: the first answer each time, one
    DrainRequested, one DrainCancelled, one WorkloadDeleted."""
    await _host(store, "h1")
    await _host(store, "h2")
    await api.stub.ApplyWorkload(_apply(), timeout=10)
    drain = fleet_pb2.DrainRequest(hosts=["h1"])
    first = await api.stub.Drain(drain, metadata=_id("d-1"), timeout=10)
    assert first.created
    assert await api.stub.Drain(drain, metadata=_id("d-1"), timeout=10) == first
    cancel = fleet_pb2.CancelOperationRequest(id=first.operation.id)
    cancelled = await api.stub.CancelOperation(cancel, metadata=_id("k-1"), timeout=10)
    assert await api.stub.CancelOperation(cancel, metadata=_id("k-1"), timeout=10) == cancelled
    delete = fleet_pb2.DeleteWorkloadRequest(name="web")
    gone = await api.stub.DeleteWorkload(delete, metadata=_id("x-1"), timeout=10)
    assert await api.stub.DeleteWorkload(delete, metadata=_id("x-1"), timeout=10) == gone
    for kind in ("DrainRequested", "DrainCancelled", "WorkloadDeleted"):
        assert await _events(store, kind) == 1, kind


async def test_a_failed_write_records_nothing_so_its_retry_runs(store: Store, api: Api) -> None:
    """A delete of a workload not there yet fails NOT_FOUND and records nothing: the same id
    once the workload exists deletes it."""
    delete = fleet_pb2.DeleteWorkloadRequest(name="web")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.DeleteWorkload(delete, metadata=_id("f-1"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await api.stub.ApplyWorkload(_apply(), timeout=10)
    await api.stub.DeleteWorkload(delete, metadata=_id("f-1"), timeout=10)
    assert (await store.get_workload("web")).deleting


async def test_concurrent_attempts_with_one_id_apply_once(store: Store, api: Api) -> None:
    """Eight attempts with one id at once: one applies, every one answers the same."""
    answers = await asyncio.gather(
        *(api.stub.ApplyWorkload(_apply(), metadata=_id("same"), timeout=20) for _ in range(8))
    )
    assert all(a == answers[0] for a in answers)
    assert answers[0].result == "created"
    assert await _events(store, "WorkloadApplied") == 1


async def test_a_caller_cut_off_mid_write_finds_its_outcome_on_retry(
    store: Store, api: Api, migrated_database: str
) -> None:
    """The write is held up in the database (a lock the test holds) past the caller's deadline:
    the caller sees DEADLINE_EXCEEDED, the write still commits once the lock goes, and the
    retry with the same id answers with it (configured, generation 2) instead of applying it
    again."""
    await api.stub.ApplyWorkload(_apply(), timeout=10)
    blocker = await asyncpg.connect(migrated_database)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM workload WHERE name = 'web' FOR UPDATE")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.stub.ApplyWorkload(_apply(greeting="x"), metadata=_id("cut"), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await store.get_workload("web")).generation == 1
        await tx.rollback()
    finally:
        await blocker.close()
    again = await api.stub.ApplyWorkload(_apply(greeting="x"), metadata=_id("cut"), timeout=10)
    assert (again.result, again.workload.generation) == ("configured", 2)
    assert (await store.get_workload("web")).generation == 2
    assert await _events(store, "WorkloadApplied") == 2
    assert api.replays("ApplyWorkload") == 1


async def test_records_past_the_retention_are_pruned_and_the_id_runs_again(
    store: Store, api: Api
) -> None:
    """A record older than the retention goes; a younger one stays; the pruned id runs anew."""
    await api.stub.ApplyWorkload(_apply(), metadata=_id("old"), timeout=10)
    await api.stub.ApplyWorkload(_apply("db"), metadata=_id("young"), timeout=10)
    await store.pool.execute(
        "UPDATE request SET created_at = now() - interval '2 hours' WHERE id = 'old'"
    )
    assert await idempotency.prune(store.pool, retention_s=3600) == 1
    ids = {r["id"] for r in await store.pool.fetch("SELECT id FROM request")}
    assert ids == {"young"}
    again = await api.stub.ApplyWorkload(_apply(), metadata=_id("old"), timeout=10)
    assert again.result == "unchanged"
