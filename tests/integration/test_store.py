"""The store on a real Postgres: revisions in commit order, apply results, reports, liveness."""

from __future__ import annotations

import asyncio
import random

import pytest
from plans import loaded_cache, write_plan

from controlplane.liveness import Decision, Timings, judge
from controlplane.rowviews import instance_view
from controlplane.sql import bump_revisions
from controlplane.status import StatusStore, StuckMark
from controlplane.store import Report, Store
from keel.model import Desired, HostState, Kind, Phase, Resources, Workload, WorkloadSpec


def _workload(
    name: str = "web", *, replicas: int = 3, env: dict[str, str] | None = None
) -> Workload:
    return Workload(
        name=name,
        replicas=replicas,
        spec=WorkloadSpec(command=("sleep", "1000"), env=env or {}, resources=Resources(100, 64)),
    )


async def _host(store: Store, name: str) -> None:
    await store.register_host(name, labels={}, capacity=Resources(4000, 8192), agent_version="test")


async def test_apply_reports_created_configured_unchanged(store: Store) -> None:
    """Apply is idempotent; only a spec change bumps the generation."""
    row, result = await store.apply_workload(_workload())
    assert (result, row.generation) == ("created", 1)
    row, result = await store.apply_workload(_workload())
    assert (result, row.generation) == ("unchanged", 1)
    row, result = await store.apply_workload(_workload(replicas=5))
    assert (result, row.generation) == ("configured", 1)
    row, result = await store.apply_workload(_workload(replicas=5, env={"A": "b"}))
    assert (result, row.generation) == ("configured", 2)


async def test_watcher_misses_no_change_under_concurrent_writers(store: Store) -> None:
    """A watcher resuming from its last revision sees every committed change, slow ones too."""
    await _host(store, "h1")
    await store.apply_workload(_workload())
    created: set[str] = set()
    done = asyncio.Event()

    async def fast_writer() -> None:
        for _ in range(15):
            created.update((await write_plan(store, "web", create_on=["h1"])).created)

    async def slow_writer(n: int) -> None:
        # The same protocol as apply_plan, but the transaction sleeps before committing: with a
        # plain sequence its revision would be taken early and skipped by the watcher.
        for i in range(5):
            async with store.pool.acquire() as conn, conn.transaction():
                revision = (await bump_revisions(conn, ["h1"]))["h1"]
                await asyncio.sleep(random.uniform(0.0, 0.03))
                iid = f"slow-{n}-{i}"
                await conn.execute(
                    """INSERT INTO instance (id, workload, generation, host, spec, cpu_millis,
                                             memory_mib, desired, revision)
                       VALUES ($1, 'web', 1, 'h1', '{"command": ["x"]}', 0, 0, 'RUNNING', $2)""",
                    iid,
                    revision,
                )
            created.add(iid)

    seen: set[str] = set()
    revisions: list[int] = []

    async def watcher() -> None:
        since = 0
        while True:
            finished = done.is_set()
            revision, rows = await store.host_assignments("h1", since=since)
            assert revision >= since
            seen.update(r.id for r in rows)
            revisions.append(revision)
            since = revision
            if finished:
                return
            await asyncio.sleep(0)

    watch = asyncio.create_task(watcher())
    await asyncio.gather(*(fast_writer() for _ in range(4)), *(slow_writer(n) for n in range(4)))
    done.set()
    await watch
    assert len(created) == 4 * 15 + 4 * 5
    assert seen == created
    assert revisions == sorted(revisions)


async def test_plan_bumps_revision_and_tombstone_confirmed_by_report(store: Store) -> None:
    """Removal is a tombstone at a new revision; the agent's confirmation deletes the row."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    [iid] = (await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)).created
    rev1, rows = await store.host_assignments("h1", since=None)
    assert [r.id for r in rows] == [iid] and rows[0].revision == rev1
    await write_plan(store, "web", remove=[iid])
    rev2, rows = await store.host_assignments("h1", since=rev1)
    assert rev2 == rev1 + 1
    assert [(r.id, r.desired) for r in rows] == [(iid, Desired.REMOVED)]
    changed = await StatusStore(store.pool).write_reports(
        [Report("h1", iid, "STOPPED", 0, 0, "", "", "", {}, False, True, None)]
    )
    assert changed.workloads == {"web"}
    assert [c for c, _ in changed.converged] == ["remove"]
    assert await store.list_instances() == []


async def test_reports_batch_updates_only_the_reporting_hosts_instances(store: Store) -> None:
    """An agent cannot write status for another host's instance; the last report per id wins."""
    await _host(store, "h1")
    await _host(store, "h2")
    row, _ = await store.apply_workload(_workload())
    [a] = (await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)).created
    [b] = (await write_plan(store, "web", create_on=["h2"])).created
    await StatusStore(store.pool).write_reports(
        [
            Report("h1", a, "STARTING", 10, 0, "", "", "", {}, False, False, None),
            Report("h1", a, "RUNNING", 10, 0, "", "", "", {"http": 8080}, True, False, None),
            Report("h1", b, "FAILED", 99, 3, "exit code 1", "", "", {}, False, False, None),
        ]
    )
    ia = await store.get_instance(a)
    ib = await store.get_instance(b)
    assert (ia.phase, ia.ready, ia.ports, ia.converged) == ("RUNNING", True, {"http": 8080}, True)
    assert (ib.phase, ib.pid) == ("PENDING", 0)


async def test_reports_record_when_an_instance_starts_and_stops_serving(store: Store) -> None:
    """The history says, in order, when each instance became ready and when it stopped being
    so; a report that changes nothing of that records nothing."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    [a] = (await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)).created
    status = StatusStore(store.pool)
    for phase, ready in [("STARTING", False), ("RUNNING", False), ("RUNNING", True)]:
        await status.write_reports(
            [Report("h1", a, phase, 7, 0, "", "", "", {}, ready, False, None)]
        )
    await status.write_reports(
        [Report("h1", a, "RUNNING", 7, 0, "", "", "", {}, True, False, None)]
    )
    await status.write_reports(
        [Report("h1", a, "STOPPING", 7, 0, "", "", "", {}, True, False, None)]
    )
    events = await status.list_events(obj="workload/web", limit=100)
    assert [(e.object, e.kind, e.message) for e in events if e.kind.startswith("Instance")] == [
        (f"instance/{a}", "InstanceReady", "RUNNING on h1 (pid 7)"),
        (f"instance/{a}", "InstanceNotReady", "STOPPING on h1 (pid 7)"),
    ]


async def _judge(store: Store) -> Decision:
    """Liveness' decision as the leader makes it: database time, the hosts as its cache holds
    them."""
    cache = await loaded_cache(store)
    now = await store.now()
    return judge(cache.liveness_facts(), now=now, term_age_s=3600, timings=Timings(40, 60, 300))


async def test_liveness_marks_silent_hosts_not_ready_then_ready_on_heartbeat(store: Store) -> None:
    """No heartbeat within the grace: NOT_READY; the next heartbeat makes it READY again."""
    await _host(store, "h1")
    await _host(store, "h2")
    await store.pool.execute(
        "UPDATE host SET last_heartbeat = now() - interval '1 minute' WHERE name = 'h1'"
    )
    decision = await _judge(store)
    assert [(t.host, t.to) for t in decision.transitions] == [("h1", HostState.NOT_READY)]
    assert await store.record_liveness(decision.transitions, epoch=None) == list(
        decision.transitions
    )
    assert (await store.get_host("h1")).state is HostState.NOT_READY
    events = await StatusStore(store.pool).list_events(obj="host/h1", limit=10)
    assert events[-1].kind == "HostNotReady"
    [beat] = await store.write_heartbeats([("h1", "", 0)])
    assert beat.was is HostState.NOT_READY
    assert (await store.get_host("h1")).state is HostState.READY


async def test_a_liveness_pass_reads_only_the_hosts_it_can_judge(store: Store) -> None:
    """Given the grace's cut-off, the facts are those of the hosts not READY and the READY ones
    silent since before it, and judging them decides what judging every host decides."""
    from datetime import timedelta

    for name in ("fresh", "silent", "down"):
        await _host(store, name)
    await store.pool.execute(
        """UPDATE host SET last_heartbeat = now() - interval '1 minute'
           WHERE name IN ('silent', 'down')"""
    )
    await store.pool.execute("UPDATE host SET state = 'NOT_READY' WHERE name = 'down'")
    cache = await loaded_cache(store)
    now = await store.now()
    timings = Timings(40, 60, 300)
    some = cache.liveness_facts(silent_before=now - timedelta(seconds=timings.grace_s))
    assert sorted(f.name for f in some) == ["down", "silent"]
    every = cache.liveness_facts()
    size = cache.host_count()
    assert size == 3
    assert judge(some, now=now, term_age_s=3600, timings=timings, fleet_size=size) == judge(
        every, now=now, term_age_s=3600, timings=timings
    )


async def test_a_heartbeat_racing_the_liveness_pass_wins(store: Store) -> None:
    """A heartbeat that lands between the facts and the write keeps the host READY."""
    await _host(store, "h1")
    await store.pool.execute(
        "UPDATE host SET last_heartbeat = now() - interval '1 minute' WHERE name = 'h1'"
    )
    decision = await _judge(store)
    assert decision.transitions
    await store.write_heartbeats([("h1", "", 0)])
    assert await store.record_liveness(decision.transitions, epoch=None) == []
    assert (await store.get_host("h1")).state is HostState.READY


async def test_liveness_facts_say_which_hosts_have_service_instances_to_fence(
    store: Store,
) -> None:
    """Only live service instances count: a host whose instances are all fenced has none."""
    await _host(store, "h1")
    await _host(store, "h2")
    row, _ = await store.apply_workload(_workload())
    await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)
    cache = await loaded_cache(store)
    facts = cache.liveness_facts()
    assert {f.name: f.has_service_instances for f in facts} == {"h1": True, "h2": False}
    # A READY host is never fenced, whatever its caller believed.
    assert await store.fence_host("h1", [Kind.SERVICE], epoch=None) == 0
    await store.pool.execute("UPDATE host SET state = 'UNKNOWN' WHERE name = 'h1'")
    assert await store.fence_host("h1", [Kind.SERVICE], epoch=None) == 1
    await cache.refresh(["web"])
    facts = cache.liveness_facts()
    assert {f.name: f.has_service_instances for f in facts} == {"h1": False, "h2": False}


async def test_delete_then_finish_when_no_instances(store: Store) -> None:
    """A deleting workload goes away only after its last instance row is gone."""
    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    [iid] = (await store.apply_plan(row, create_on=["h1"], remove=[], epoch=None)).created
    row = await store.get_workload("web")
    await store.delete_workload("web")
    assert await store.finish_deleted_workload("web", epoch=None) is False
    # A plan made before the delete committed is stale: it writes nothing.
    stale = await store.apply_plan(row, create_on=[], remove=[iid], epoch=None)
    assert (stale.created, stale.removed, stale.stale) == (
        [],
        0,
        "the workload or its instances changed",
    )
    await write_plan(store, "web", remove=[iid])
    await StatusStore(store.pool).write_reports(
        [Report("h1", iid, "STOPPED", 0, 0, "", "", "", {}, False, True, None)]
    )
    assert await store.finish_deleted_workload("web", epoch=None) is True
    assert await store.list_workloads() == []


async def test_stale_epoch_cannot_write(store: Store) -> None:
    """A deposed leader's plan is refused once another replica bumped the epoch."""
    from controlplane.errors import NotLeader

    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    async with store.pool.acquire() as conn:
        first = await store.take_leadership(conn, "a")
        await store.take_leadership(conn, "b")
    with pytest.raises(NotLeader):
        await store.apply_plan(row, create_on=["h1"], remove=[], epoch=first)
    assert await store.list_instances() == []


async def test_a_report_the_database_refuses_does_not_block_the_others(store: Store) -> None:
    """A report Postgres refuses (a NUL in its text) is dropped; its batch-mates are written."""
    import asyncio

    from controlplane.convert import report_from_pb
    from controlplane.reports import ReportWriter
    from controlplane.status import ReportOutcome
    from keel.v1 import types_pb2

    await _host(store, "h1")
    row, _ = await store.apply_workload(_workload())
    a, b = (await store.apply_plan(row, create_on=["h1", "h1"], remove=[], epoch=None)).created
    written: list[ReportOutcome] = []
    writer = ReportWriter(StatusStore(store.pool), on_written=written.append)
    task = asyncio.create_task(writer.run())
    try:
        bad = Report("h1", a, "FAILED", 0, 1, "", "CRASH_LOOP", "boom\x00", {}, False, False, None)
        good = Report("h1", b, "RUNNING", 7, 0, "", "", "", {}, True, False, None)
        writer.submit([bad, good])
        assert await writer.flush(10)
        assert (await store.get_instance(b)).phase == "RUNNING"
        assert (await store.get_instance(a)).phase == "PENDING"
        # At the edge, agent text is cleaned of NUL, so such a report is written after all.
        status = types_pb2.InstanceStatus(
            instance_id=a, phase=types_pb2.PHASE_FAILED, message="boom\x00tail"
        )
        writer.submit([report_from_pb("h1", status)])
        assert await writer.flush(10)
        assert (await store.get_instance(a)).message == "boom\N{REPLACEMENT CHARACTER}tail"
    finally:
        task.cancel()


async def test_the_caches_records_match_the_full_rows(store: Store) -> None:
    """The cache's column-only read gives exactly what the full rows would give the planners
    and the stuck detector, and a plan's and a report's own returned rows say the same."""
    await _host(store, "h1")
    await _host(store, "h2")
    row, _ = await store.apply_workload(_workload())
    created = await store.apply_plan(row, create_on=["h1", "h2"], remove=[], epoch=None)
    a, b = created.created
    removed = await write_plan(store, "web", remove=[b])
    outcome = await StatusStore(store.pool).write_reports(
        [Report("h1", a, Phase.RUNNING, 10, 0, "", "", "up", {}, True, False, None)]
    )
    full = {i.id: i for i in await store.list_instances()}
    [read] = await store.read_workloads(["web"])
    assert read.row == await store.get_workload("web")
    records = {r.id: r for r in read.instances}
    assert {i: instance_view(r) for i, r in full.items()} == {i: r.view for i, r in records.items()}
    for iid, r in records.items():
        f = full[iid]
        assert (r.desired_changed_at, r.unconverged_since, r.observed, r.reason, r.message,
                r.agent_stuck, r.stop_grace_ms, r.stuck, r.converged) == (
            f.desired_changed_at, f.unconverged_since, f.observed, f.reason, f.message,
            f.agent_stuck, f.stop_grace_ms, f.stuck, f.converged)  # fmt: skip
    assert {(v.id, v.desired, v.phase, v.ready) for v in (r.view for r in records.values())} == {
        (a, Desired.RUNNING, Phase.RUNNING, True),
        (b, Desired.REMOVED, Phase.PENDING, False),
    }
    # The writes' own rows: what each changed, as it is after it.
    assert created.delta is not None and removed.delta is not None
    assert [u.id for u in created.delta.upserts] == [a, b]
    assert [u.desired for u in removed.delta.upserts] == [Desired.REMOVED]
    assert removed.delta.from_version == created.delta.to_version
    [delta] = outcome.deltas
    assert (delta.from_version, delta.to_version) == (removed.delta.to_version, read.row.version)
    assert delta.upserts == (records[a],)


async def test_a_stream_ending_late_does_not_disconnect_its_successor(store: Store) -> None:
    """Only the stream that last registered a host can mark it disconnected."""
    caps = {"labels": {}, "capacity": Resources(4000, 8192), "agent_version": "test"}
    await store.register_host("h1", stream_id="old", **caps)  # type: ignore[arg-type]
    await store.register_host("h1", stream_id="new", **caps)  # type: ignore[arg-type]
    await store.disconnect_host("h1", stream_id="old")
    assert (await store.get_host("h1")).connected
    await store.disconnect_host("h1", stream_id="new")
    assert not (await store.get_host("h1")).connected


async def test_concurrent_first_applies_of_one_name_both_succeed(store: Store) -> None:
    """Two first applies of the same name race: one creates, the other applies on top; neither
    fails with a driver error."""
    results = await asyncio.gather(
        *(store.apply_workload(_workload(replicas=n)) for n in (2, 3, 4, 5))
    )
    assert sorted(r for _, r in results).count("created") == 1
    assert {r for _, r in results} <= {"created", "configured", "unchanged"}
    assert (await store.get_workload("web")).workload.replicas in (2, 3, 4, 5)


async def test_stuck_and_unconverged_marks_answer_what_is_recorded_changed_or_not(
    store: Store,
) -> None:
    """Marking again what is already recorded changes nothing and answers what is recorded:
    a leader whose cached copy fell behind is corrected instead of marking on every pass."""
    await store.apply_workload(Workload(name="web", spec=WorkloadSpec(command=("true",))))
    status = StatusStore(store.pool)
    first = await status.record_unconverged({"web": True})
    again = await status.record_unconverged({"web": True})
    assert first["web"] is not None and again == first
    mark = StuckMark("workload", "web", "UNSCHEDULABLE", "no host")
    recorded = await status.mark_stuck([mark])
    assert await status.mark_stuck([mark]) == recorded
    assert recorded[("workload", "web")] is not None
    events = [e for e in await status.list_events(obj="workload/web", limit=10)]
    assert [e.kind for e in events].count("StuckDetected") == 1
