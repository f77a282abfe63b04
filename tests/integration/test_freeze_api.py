"""Freeze, Unfreeze, GetFreeze and ApplyWorkload's override over gRPC, on a real Postgres: the
codes a caller gets (FAILED_PRECONDITION while frozen, INVALID_ARGUMENT naming `reason` or
`until`), a retried Freeze answered from its request id's record and applied once, and
Unfreeze naming the alert freezes that still hold."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetapi import serve_fleet

from controlplane import freeze
from controlplane.idempotency import REQUEST_ID_KEY
from controlplane.metrics import Metrics
from controlplane.store import Store
from keel.convert import set_ts
from keel.v1 import fleet_pb2


@pytest.fixture
async def stub(store: Store, tmp_path: Path) -> AsyncIterator[Any]:
    async with serve_fleet(store, tmp_path, Metrics()) as stub:
        yield stub


def _apply(version: str, **fields: Any) -> fleet_pb2.ApplyWorkloadRequest:
    doc = {
        "name": "web",
        "replicas": 2,
        "spec": {"command": ["sleep", "1000"], "env": {"V": version}},
    }
    return fleet_pb2.ApplyWorkloadRequest(manifest_json=json.dumps(doc), **fields)


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_frozen_applies_get_failed_precondition_and_overrides_need_a_reason(
    store: Store, stub: Any
) -> None:
    await stub.ApplyWorkload(_apply("1"), timeout=10)
    frozen = await stub.Freeze(fleet_pb2.FreezeRequest(reason="INC-9"), timeout=10)
    assert frozen.frozen and [f.source for f in frozen.freezes] == ["operator"]
    err = await _refused(stub.ApplyWorkload(_apply("2"), timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "deploys are frozen" in (err.details() or "")
    err = await _refused(stub.ApplyWorkload(_apply("2", override_freeze=True), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("reason: ")
    done = await stub.ApplyWorkload(
        _apply("2", override_freeze=True, reason="INC-9 fix"), timeout=10
    )
    assert done.workload.generation == 2


async def test_an_until_in_the_past_is_invalid_argument_naming_until(stub: Any) -> None:
    request = fleet_pb2.FreezeRequest()
    set_ts(request.until, datetime.now(UTC) - timedelta(seconds=5))
    err = await _refused(stub.Freeze(request, timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("until: must be in the future")
    assert not (await stub.GetFreeze(fleet_pb2.GetFreezeRequest(), timeout=10)).frozen


async def test_a_retried_freeze_is_answered_from_its_record_and_applied_once(
    store: Store, stub: Any
) -> None:
    metadata = [(REQUEST_ID_KEY, "freeze-1")]
    request = fleet_pb2.FreezeRequest(reason="window")
    first = await stub.Freeze(request, metadata=metadata, timeout=10)
    again = await stub.Freeze(request, metadata=metadata, timeout=10)
    assert again == first
    kinds = await store.pool.fetch("SELECT kind FROM event WHERE object = 'fleet/freeze'")
    assert [r["kind"] for r in kinds] == ["DeployFrozen"]


async def test_a_retried_freeze_for_a_duration_answers_the_same_end(
    store: Store, stub: Any
) -> None:
    """`keelctl --request-id ID freeze --until 2h` run again: the request carries the duration,
    the control plane computed the end once, and the retry is answered with that freeze."""
    metadata = [(REQUEST_ID_KEY, "freeze-2h")]
    request = fleet_pb2.FreezeRequest(reason="window")
    request.until_in.FromTimedelta(timedelta(hours=2))
    first = await stub.Freeze(request, metadata=metadata, timeout=10)
    [held] = first.freezes
    ahead = held.until.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(hours=1, minutes=59) < ahead <= timedelta(hours=2)
    again = await stub.Freeze(request, metadata=metadata, timeout=10)
    assert again == first
    assert await store.pool.fetchval("SELECT count(*) FROM event WHERE kind = 'DeployFrozen'") == 1


async def test_unfreeze_answers_the_alert_freezes_that_still_hold(store: Store, stub: Any) -> None:
    await stub.Freeze(fleet_pb2.FreezeRequest(reason="ops"), timeout=10)
    await freeze.alerts_changed(
        store.pool,
        firing=[freeze.AlertFreeze("KeelBurn", "f00d", "KeelBurn: burning")],
        resolved=[],
        actor="webhook",
    )
    left = await stub.Unfreeze(fleet_pb2.UnfreezeRequest(), timeout=10)
    assert left.frozen
    assert [(f.source, f.actor, f.reason) for f in left.freezes] == [
        ("alert:KeelBurn", "webhook", "KeelBurn: burning")
    ]
    assert [(f.source, f.reason) for f in left.lifted] == [("operator", "ops")]
    status = await stub.GetFreeze(fleet_pb2.GetFreezeRequest(), timeout=10)
    assert status.freezes == left.freezes and not status.lifted
    # With only the alert's left, a plain unfreeze lifts nothing, and says so.
    again = await stub.Unfreeze(fleet_pb2.UnfreezeRequest(), timeout=10)
    assert not again.lifted and again.freezes == left.freezes
    by_hand = await stub.Unfreeze(fleet_pb2.UnfreezeRequest(alert="KeelBurn"), timeout=10)
    assert [f.source for f in by_hand.lifted] == ["alert:KeelBurn"] and not by_hand.frozen
    err = await _refused(stub.Unfreeze(fleet_pb2.UnfreezeRequest(alert="x y"), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("alert: must be an alert name")


async def test_a_refusal_stays_small_however_many_long_freezes_hold(
    store: Store, stub: Any
) -> None:
    """Thirty alert freezes with 1 KiB reasons: the caller gets FAILED_PRECONDITION naming the
    first three and "+27 more", not RESOURCE_EXHAUSTED for metadata past gRPC's limit."""
    await stub.ApplyWorkload(_apply("1"), timeout=10)
    firing = [
        freeze.AlertFreeze("KeelBurn", f"f{i:03d}", f"KeelBurn {i}: " + "x" * 1000)
        for i in range(30)
    ]
    await freeze.alerts_changed(store.pool, firing=firing, resolved=[], actor="webhook")
    err = await _refused(stub.ApplyWorkload(_apply("2"), timeout=10))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.details() or ""
    assert "deploys are frozen" in details and "+27 more (keelctl freeze --status)" in details
    assert "KeelBurn 0: " in details and "KeelBurn 3: " not in details
    assert len(details) < 4 * 1024


async def test_freeze_and_unfreeze_tell_this_replicas_watch(store: Store, tmp_path: Path) -> None:
    """So keel_deploy_frozen on the replica that took the call changes at once."""
    told: list[str] = []
    async with serve_fleet(
        store, tmp_path, Metrics(), on_freeze_changed=lambda: told.append("changed")
    ) as stub:
        await stub.Freeze(fleet_pb2.FreezeRequest(reason="x"), timeout=10)
        assert told == ["changed"]
        await stub.Unfreeze(fleet_pb2.UnfreezeRequest(), timeout=10)
        assert told == ["changed", "changed"]
