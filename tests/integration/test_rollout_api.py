"""The rollout calls on a real Postgres, through the real FleetService over gRPC: history with
the current revision marked and secrets redacted, status counted from the instances, pause and
resume as store writes (actor, reason, event, new versions and a NOTIFY; safe to repeat), undo
to an earlier revision, and bad input refused naming the field, changing nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetapi import serve_fleet
from plans import write_plan

from controlplane.idempotency import REQUEST_ID_KEY
from controlplane.metrics import Metrics
from controlplane.sql import WORKLOAD_CHANNEL
from controlplane.status import StatusStore
from controlplane.store import Report, Store
from keel.model import Kind, Resources
from keel.v1 import fleet_pb2


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Any]:
    """FleetService over the store, served in this process through the real interceptor."""
    async with serve_fleet(store, tmp_path, Metrics()) as stub:
        yield stub


def _doc(version: str, *, replicas: int = 3, kind: str = "service") -> dict[str, Any]:
    return {
        "name": "web",
        "kind": kind,
        "replicas": replicas,
        "spec": {
            "command": ["sleep", "1000"],
            "env": {"V": version},
            "secret_env": {"TOKEN": f"s3cret-{version}"},
            "resources": {"cpu": "10m", "memory": "16Mi"},
        },
    }


async def _apply(api: Any, version: str, *, reason: str = "", **kwargs: Any) -> Any:
    request = fleet_pb2.ApplyWorkloadRequest(
        manifest_json=json.dumps(_doc(version, **kwargs)), reason=reason
    )
    return await api.ApplyWorkload(request, timeout=10)


async def _hosts(store: Store, n: int = 3) -> list[str]:
    names = [f"host-{i}" for i in range(1, n + 1)]
    for name in names:
        await store.register_host(
            name, labels={}, capacity=Resources(64000, 65536), agent_version="test"
        )
    return names


async def _ready(store: Store, ids: list[str], hosts: list[str], *, ready: bool = True) -> None:
    reports = [
        Report(h, i, "RUNNING", 10 + n, 0, "", "", "", {}, ready, False, None)
        for n, (i, h) in enumerate(zip(ids, hosts, strict=True))
    ]
    await StatusStore(store.pool).write_reports(reports)


async def _events(store: Store, kind: str) -> list[Any]:
    return list(
        await store.pool.fetch("SELECT actor, message FROM event WHERE kind = $1 ORDER BY id", kind)
    )


def _action(reason: str = "") -> fleet_pb2.RolloutActionRequest:
    return fleet_pb2.RolloutActionRequest(workload="web", reason=reason)


async def test_history_is_newest_first_with_the_current_marked_and_secrets_redacted(
    api: Any, store: Store
) -> None:
    """Every revision with its actor, cause, rollback origin and state; the current one
    marked; secret values never in the answer; a failure record presented."""
    await _apply(api, "1", reason="first")
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await _apply(api, "2", reason="second")
    await _apply(api, "1", reason="back")
    failure = {
        "reason": "CRASH_LOOP",
        "message": "2 instances of revision 2 crash",
        "evidence": [
            {"instance": "web-2-a", "host": "host-1", "reason": "CRASH_LOOP",
             "last_exit": "exit 1", "message": "boom\nstderr tail"},
        ],
        "runbook": "runbooks/rollout-failed.md",
        "next_command": "keelctl rollout undo web",
        "at": "2026-12-02T01:00:00+00:00",
        "rolled_back_to": 1,
    }  # fmt: skip
    await store.pool.execute(
        "UPDATE workload_revision SET failure = $1::jsonb, state = 'ROLLED_BACK' "
        "WHERE revision = 2",
        failure,
    )
    reply = await api.GetRolloutHistory(
        fleet_pb2.GetRolloutHistoryRequest(workload="web"), timeout=10
    )
    got = [(r.number, r.reason, r.same_as, r.current) for r in reply.revisions]
    assert got == [(3, "back", 1, True), (2, "second", 0, False), (1, "first", 0, False)]
    assert all(r.actor for r in reply.revisions)
    assert all(r.spec.secret_env["TOKEN"].redacted for r in reply.revisions)
    assert "s3cret" not in str(reply)
    assert reply.revisions[0].spec.env["V"] == "1"
    rolled = reply.revisions[1]
    assert rolled.state == "ROLLED_BACK"
    assert rolled.failure.reason == "CRASH_LOOP"
    assert rolled.failure.rolled_back_to == 1
    assert rolled.failure.at.seconds > 0
    [evidence] = rolled.failure.evidence
    assert (evidence.instance, evidence.last_exit) == ("web-2-a", "exit 1")
    assert "stderr tail" in evidence.message
    assert not reply.revisions[0].HasField("failure")


async def test_status_counts_updated_ready_and_old_from_the_instances(
    api: Any, store: Store
) -> None:
    """Updated and ready are the current spec's live instances; old remaining the others;
    COMPLETE once the counts show it, before any controller marks the revision."""
    hosts = await _hosts(store)
    await _apply(api, "1")
    first = (await write_plan(store, "web", create_on=hosts)).created
    await _ready(store, first, hosts)
    status = await api.GetRolloutStatus(
        fleet_pb2.GetRolloutStatusRequest(workload="web"), timeout=10
    )
    assert (status.revision, status.state, status.desired, status.updated, status.ready) == (
        1, "COMPLETE", 3, 3, 3,
    )  # fmt: skip
    assert "complete" in status.message

    await _apply(api, "2", reason="v2")
    second = (await write_plan(store, "web", create_on=hosts[:1], remove=first[:1])).created
    await _ready(store, second, hosts[:1], ready=False)
    status = await api.GetRolloutStatus(
        fleet_pb2.GetRolloutStatusRequest(workload="web"), timeout=10
    )
    assert (status.revision, status.state) == (2, "PROGRESSING")
    assert (status.desired, status.updated, status.ready, status.old_remaining) == (3, 1, 0, 2)
    assert "2 more updated instances to start" in status.message
    assert "2 old instances to be replaced" in status.message
    assert status.since.seconds > 0


async def test_pause_is_a_write_with_its_actor_reason_event_and_notify(
    api: Any, store: Store
) -> None:
    """Pause sets paused, paused_by and paused_at, records RolloutPaused with the actor and
    reason, takes new versions and wakes the leader's cache; a second pause changes nothing;
    resume clears them and records RolloutResumed."""
    await _apply(api, "1")
    await _apply(api, "2")
    before = await store.get_workload("web")
    heard: list[str] = []
    async with store.pool.acquire() as listener:

        def hear(*args: object) -> None:
            heard.append(str(args[-1]))

        await listener.add_listener(WORKLOAD_CHANNEL, hear)
        status = await api.PauseRollout(_action("looking at v2"), timeout=10)
        assert (status.paused, status.state) == (True, "PAUSED")
        assert status.paused_by and status.paused_at.seconds > 0
        assert "paused by" in status.message and "keelctl rollout resume web" in status.message
        row = await store.get_workload("web")
        assert row.paused and row.paused_by == status.paused_by and row.paused_at is not None
        assert row.version > before.version and row.desired_version > before.desired_version
        for _ in range(200):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard, "no NOTIFY on the workload channel"
        await listener.remove_listener(WORKLOAD_CHANNEL, hear)
    [paused] = await _events(store, "RolloutPaused")
    assert paused["actor"] == status.paused_by
    assert "revision 2" in paused["message"] and "looking at v2" in paused["message"]

    again = await api.PauseRollout(_action("again"), timeout=10)
    assert again.paused and again.paused_at == status.paused_at
    assert len(await _events(store, "RolloutPaused")) == 1
    assert (await store.get_workload("web")).version == row.version

    resumed = await api.ResumeRollout(_action("v2 looks fine"), timeout=10)
    assert (resumed.paused, resumed.paused_by, resumed.state) == (False, "", "PROGRESSING")
    assert not resumed.HasField("paused_at")
    [event] = await _events(store, "RolloutResumed")
    assert "v2 looks fine" in event["message"]
    await api.ResumeRollout(_action(), timeout=10)
    assert len(await _events(store, "RolloutResumed")) == 1


async def test_resuming_a_failed_held_rollout_judges_it_again(api: Any, store: Store) -> None:
    """Keel held revision 2 FAILED: a resume sets it back to PROGRESSING (the rollout
    controller judges it afresh), so the status, the history and the gauge agree; its record
    stays attached, and the event says it is judged again."""
    await _apply(api, "1")
    await _apply(api, "2")
    failure = {"reason": "CRASH_LOOP", "message": "1 instance of revision 2 crashes"}
    await store.pool.execute(
        "UPDATE workload_revision SET state = 'FAILED', failure = $1::jsonb WHERE revision = 2",
        failure,
    )
    await store.pool.execute(
        "UPDATE workload SET paused = true, paused_by = 'keel/rollout', paused_at = now()"
    )
    resumed = await api.ResumeRollout(_action("the database is back"), timeout=10)
    assert (resumed.paused, resumed.state) == (False, "PROGRESSING")
    assert resumed.failure.reason == "CRASH_LOOP"
    history = await api.GetRolloutHistory(
        fleet_pb2.GetRolloutHistoryRequest(workload="web"), timeout=10
    )
    assert history.revisions[0].state == "PROGRESSING"
    [event] = await _events(store, "RolloutResumed")
    assert "CRASH_LOOP" in event["message"] and "judged again" in event["message"]


async def test_a_freeze_refuses_resuming_a_new_spec_over_old_instances_but_not_the_rest(
    api: Any, store: Store
) -> None:
    """Frozen: resuming a paused rollout that still has old instances to replace would deploy
    the new spec further, so it is refused like a promotion, naming the freeze and the ways
    through (Keel's hold too); a paused workload with nothing left to roll resumes."""
    hosts = await _hosts(store)
    await _apply(api, "1")
    first = (await write_plan(store, "web", create_on=hosts)).created
    await _ready(store, first, hosts)
    await _apply(api, "2", reason="v2")
    await api.PauseRollout(_action("looking at v2"), timeout=10)
    await api.Freeze(fleet_pb2.FreezeRequest(reason="INC-9"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.ResumeRollout(_action("go on"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert details.startswith('workload "web": deploys are frozen (operator freeze by ')
    assert "resuming the rollout of revision 2 would roll its new spec to the 3 old" in details
    assert "keelctl rollout undo web" in details and "keelctl freeze --status" in details
    assert (await store.get_workload("web")).paused
    assert await _events(store, "RolloutResumed") == []

    # Keel's own hold of a failed rollout: resuming it would roll the new spec further too.
    await store.pool.execute("UPDATE workload SET paused_by = 'keel/rollout' WHERE name = 'web'")
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await api.ResumeRollout(_action("take it"), timeout=10)
    assert held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await store.get_workload("web")).paused

    # Nothing left to roll: every instance runs revision 2's spec, so resuming deploys nothing.
    second = (await write_plan(store, "web", create_on=hosts, remove=first)).created
    await _ready(store, second, hosts)
    await api.PauseRollout(_action(), timeout=10)
    await api.ResumeRollout(_action(), timeout=10)
    assert not (await store.get_workload("web")).paused


async def test_under_a_freeze_an_undo_of_a_paused_rollout_and_paused_canaries_resume(
    api: Any, store: Store
) -> None:
    """Paused, then frozen: the operator undoes (a rollback goes through) and the rollback,
    paused still, resumes: it returns to what ran. Paused canaries resume too: that rolls
    nothing (their promotion is what a freeze holds)."""
    hosts = await _hosts(store)
    await _apply(api, "1")
    first = (await write_plan(store, "web", create_on=hosts)).created
    await _ready(store, first, hosts)
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    await _apply(api, "2", reason="v2")
    await write_plan(store, "web", create_on=hosts[:1], remove=first[:1])
    await api.PauseRollout(_action("looking at v2"), timeout=10)
    await api.Freeze(fleet_pb2.FreezeRequest(reason="INC-9"), timeout=10)
    undone = await api.UndoRollout(fleet_pb2.UndoRolloutRequest(workload="web"), timeout=10)
    assert (undone.revision, undone.to_revision) == (3, 1)
    resumed = await api.ResumeRollout(_action("back to v1"), timeout=10)
    assert not resumed.paused

    await api.Unfreeze(fleet_pb2.UnfreezeRequest(), timeout=10)
    canaried = {**_doc("4"), "rollout": {"canary": 1}}
    request = fleet_pb2.ApplyWorkloadRequest(manifest_json=json.dumps(canaried))
    await api.ApplyWorkload(request, timeout=10)
    assert (await store.get_workload("web")).canary_pending
    await api.PauseRollout(_action(), timeout=10)
    await api.Freeze(fleet_pb2.FreezeRequest(reason="INC-10"), timeout=10)
    assert not (await api.ResumeRollout(_action(), timeout=10)).paused


async def test_a_retried_pause_is_answered_not_applied_twice(api: Any, store: Store) -> None:
    """The same request id after a resume gets the first answer: the rollout stays resumed."""
    await _apply(api, "1")
    metadata = [(REQUEST_ID_KEY, "pause-1")]
    first = await api.PauseRollout(_action(), timeout=10, metadata=metadata)
    await api.ResumeRollout(_action(), timeout=10)
    again = await api.PauseRollout(_action(), timeout=10, metadata=metadata)
    assert again == first
    assert not (await store.get_workload("web")).paused


async def test_undo_applies_an_earlier_revision_and_keeps_its_instances_current(
    api: Any, store: Store
) -> None:
    """Undo (to the last ready revision, or a named one) is a new revision with that spec;
    the instances already running it stay current."""
    hosts = await _hosts(store)
    await _apply(api, "1")
    await store.pool.execute("UPDATE workload_revision SET completed_at = now()")
    first = (await write_plan(store, "web", create_on=hosts)).created
    await _apply(api, "2")
    await _apply(api, "3")
    reply = await api.UndoRollout(
        fleet_pb2.UndoRolloutRequest(workload="web", reason="v3 is bad"), timeout=10
    )
    assert (reply.revision, reply.to_revision) == (4, 1)
    assert reply.workload.generation == 4 and reply.workload.spec.env["V"] == "1"
    assert reply.workload.status.updated == len(first)
    row = await store.get_workload("web")
    assert all(row.is_current(1) for _ in first)
    newest = (await store.revisions("web"))[0]
    assert (newest.same_as, newest.reason) == (1, "v3 is bad")

    reply = await api.UndoRollout(
        fleet_pb2.UndoRolloutRequest(workload="web", to_revision=2), timeout=10
    )
    assert (reply.revision, reply.to_revision) == (5, 2)
    assert reply.workload.status.updated == 0


@pytest.mark.parametrize(
    ("call", "request_", "code", "field"),
    [
        ("GetRolloutHistory", fleet_pb2.GetRolloutHistoryRequest(workload="Web!"),
         grpc.StatusCode.INVALID_ARGUMENT, "workload"),
        ("GetRolloutStatus", fleet_pb2.GetRolloutStatusRequest(),
         grpc.StatusCode.INVALID_ARGUMENT, "workload"),
        ("PauseRollout", fleet_pb2.RolloutActionRequest(workload="web", reason="a\nb"),
         grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        ("ResumeRollout", fleet_pb2.RolloutActionRequest(workload="nope"),
         grpc.StatusCode.NOT_FOUND, "nope"),
        ("UndoRollout", fleet_pb2.UndoRolloutRequest(workload="web", to_revision=-1),
         grpc.StatusCode.INVALID_ARGUMENT, "to_revision"),
        ("UndoRollout", fleet_pb2.UndoRolloutRequest(workload="web", to_revision=9),
         grpc.StatusCode.NOT_FOUND, "revision 9"),
        ("UndoRollout", fleet_pb2.UndoRolloutRequest(workload="web"),
         grpc.StatusCode.FAILED_PRECONDITION, "no earlier revision"),
        ("GetRolloutStatus", fleet_pb2.GetRolloutStatusRequest(workload="nope"),
         grpc.StatusCode.NOT_FOUND, "nope"),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    api: Any, store: Store, call: str, request_: Any, code: grpc.StatusCode, field: str
) -> None:
    """A clear code and message, never UNKNOWN or INTERNAL, and the workload as it was."""
    await _apply(api, "1")
    before = await store.get_workload("web")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(api, call)(request_, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert field in (info.value.details() or "")
    after = await store.get_workload("web")
    assert (after.version, after.generation, after.paused) == (
        before.version, before.generation, before.paused,
    )  # fmt: skip


async def test_a_daemon_wants_one_instance_per_matching_ready_host(api: Any, store: Store) -> None:
    """A daemon's desired count is its hosts: READY, matching the selector."""
    hosts = await _hosts(store, 2)
    await _apply(api, "1", kind=Kind.DAEMON.value)
    placed = (await write_plan(store, "web", create_on=hosts[:1])).created
    await _ready(store, placed, hosts[:1])
    status = await api.GetRolloutStatus(
        fleet_pb2.GetRolloutStatusRequest(workload="web"), timeout=10
    )
    ready_hosts = await store.pool.fetchval("SELECT count(*) FROM host WHERE state = 'READY'")
    assert status.desired == ready_hosts
    assert (status.updated, status.ready) == (1, 1)
