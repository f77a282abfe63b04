"""The rollout controller: one pass per workload key, run by `reconcile.Runner` on the leader.

It follows each workload's current revision to its end: COMPLETE once the workload converged on
it; FAILED when its instances are stuck (START_FAILED, CRASH_LOOP, HEALTH_CHECK_FAILING) or it
made no progress for `rollout.progress_deadline`, then rolled back to the last revision that was
fully ready (`auto_rollback`) or held; a canary promoted once its canaries stayed ready
(`auto_promote`). The decisions are `rollout_judge`'s (pure); the writes `rollout_store`'s,
fenced by the leader's epoch and by the revision still being current.

What it reads: the leader's cache (`cache.FleetCache`: the workload, its instances with the agent's
reason and message, the hosts), the stuck detector's own verdict rule (`verdicts.judge_instance`)
and convergence rule (`verdicts.workload_converged`, over `rollout.plan_workload`'s plan), and the
current revision's row. That row is kept between passes and read again (one indexed read) only when
the workload's generation or desired version moves (every write to a revision by an RPC, on any
replica, moves the latter in its transaction), after a write of the controller's own, at each
resync and in a new term; the time it judges by is the database's, through `dbclock.DatabaseClock`
(read once per resync, not per pass). A pass judges on the cache as it stands (kept current by the
notifications, each of which wakes the key again), so one that only waits makes no query (but that
row's, when it moved); one that would write (a completion, a failure, a promotion, a hold lifted)
is checked first against the database (`cache.current`, the workload's version): written as judged
when the cache held the workload as it is, else judged again on the workload read again. A workload
whose current revision is settled (COMPLETE, ROLLED_BACK, SUPERSEDED, ABORTED, or FAILED and held)
costs a lookup in memory, no query, until its generation or its pause moves. Woken like the
workload controller (the cache's notifications and report batches, `main`), and requeued at the
times it waits for: the progress deadline, a canary's min_ready, the deadline after which an
instance's verdict can become HEALTH_CHECK_FAILING. It also keeps `keel_rollouts{state}`
(`rollout_metrics`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping
from datetime import datetime
from typing import TypeVar

import structlog

from controlplane.cache import FleetCache, NotLoaded
from controlplane.dbclock import DatabaseClock
from controlplane.errors import FailedPrecondition
from controlplane.fleet_index import InstanceRecord, WorkloadEntry
from controlplane.metrics import Metrics
from controlplane.reconcile import IDLE, Result, Term, requeue_after
from controlplane.rollout import plan_workload
from controlplane.rollout_judge import (
    ACTOR,
    Complete,
    Facts,
    Fail,
    Member,
    Promote,
    State,
    Track,
    is_keel_rollback,
    judge,
    rollout_state,
)
from controlplane.rollout_store import CurrentRevision
from controlplane.scheduler import daemon_hosts
from controlplane.store import Store, WorkloadRow
from controlplane.verdicts import judge_instance, surely_unconverged, workload_converged
from keel.model import Kind

log = structlog.get_logger("keel.rollouts")

T = TypeVar("T")

# A current revision in one of these has nothing left to decide until the generation moves.
SETTLED = frozenset({State.COMPLETE, State.ROLLED_BACK, State.SUPERSEDED, State.ABORTED})
# The database's time is read again at least this often (and at each resync, `keys`).
CLOCK_MAX_AGE_S = 30.0


class RolloutController:
    name = "rollout"
    key_label = "workload"

    def __init__(
        self,
        store: Store,
        *,
        cache: FleetCache,
        metrics: Metrics,
        clock: DatabaseClock | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._metrics = metrics
        self._clock = clock or DatabaseClock(store.now, max_age_s=CLOCK_MAX_AGE_S)
        self._tracks: dict[str, Track] = {}
        # name -> the current revision's row as last read, with the workload's (generation,
        # desired_version) it was read at: read again once either moves (every write to the
        # revision by an RPC, on any replica, takes the workload a new desired_version in the
        # same transaction), after a write of the controller's own, at a resync and in a new
        # term.
        self._revisions: dict[str, tuple[tuple[int, int], CurrentRevision]] = {}
        # name -> (generation, paused, state, keel's rollback): a current revision with nothing
        # left to decide while the workload stays at that generation and pause.
        self._settled: dict[str, tuple[int, bool, str, bool]] = {}
        # name -> its keel_rollouts state, and the counts over them (kept as they change).
        self._states: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._term: Term | None = None
        metrics.rollouts.track_states(self.counts)

    async def keys(self) -> list[str]:
        names = self._cache.index.workload_names()
        present = set(names)
        for name in [n for n in self._states if n not in present]:
            self._forget(name)
        self._tracks = {n: t for n, t in self._tracks.items() if n in present}
        # The resync: whatever a write not foreseen above moved is read again, and the clock.
        self._revisions.clear()
        self._clock.forget()
        return names

    async def reconcile(self, name: str, *, term: Term) -> Result:
        if term != self._term:
            # A new term: what another leader saw meanwhile is not in these tracks, and a
            # clock kept from before would fail a rollout early.
            self._term = term
            self._tracks.clear()
            self._settled.clear()
            self._revisions.clear()  # another leader may have written them meanwhile
            self._clock.forget()
        cached = self._cache.index.workload(name)
        if cached is not None and not cached.row.deleting:
            settled = self._settled.get(name)
            if settled is not None and settled[:2] == (cached.row.generation, cached.row.paused):
                self._state(name, settled[2], cached.row, keel_rollback=settled[3])
                return IDLE
        return await self._judge(name, cached, term=term, confirmed=False)

    async def _moved(
        self, name: str, entry: WorkloadEntry[WorkloadRow], *, term: Term
    ) -> Result | None:
        """Before a write: None when the cache held the workload as the database has it now
        (`cache.current`: its version checked), so what was judged on `entry` may be written;
        else the outcome of the pass made again on the workload read again."""
        fresh = await self._cache.current(name)
        if fresh is entry:  # entries are never changed in place: the same one, the same data
            return None
        return await self._judge(name, fresh, term=term, confirmed=True)

    async def _judge(
        self,
        name: str,
        entry: WorkloadEntry[WorkloadRow] | None,
        *,
        term: Term,
        confirmed: bool,
    ) -> Result:
        """`_pass` on the workload, or nothing to judge (and it is forgotten) when it is gone
        or being deleted."""
        if entry is None or entry.row.deleting:
            self._forget(name)
            return IDLE
        return await self._pass(name, entry, term=term, confirmed=confirmed)

    async def _pass(
        self, name: str, entry: WorkloadEntry[WorkloadRow], *, term: Term, confirmed: bool
    ) -> Result:
        """Judges the workload's current revision and writes what it decides. Unless
        `confirmed`, `entry` is the cache's as it stands (kept current by the notifications,
        each of which wakes this key again): enough to wait on, not to write on."""
        row = entry.row
        revision = await self._revision(name, row)
        if revision is None:
            return IDLE  # deleted meanwhile, or a revision not yet visible: the next change
        keel_rollback = is_keel_rollback(revision.actor, revision.same_as)
        if row.paused and row.paused_by == ACTOR and revision.state != State.FAILED:
            if not confirmed:
                again = await self._moved(name, entry, term=term)
                if again is not None:
                    return again
                confirmed = True
            if await self._wrote(name, self._store.lift_hold(name, epoch=term.epoch)):
                log.info("rollout hold lifted", workload=name, revision=row.generation)
                return requeue_after(0)  # judged on the row as it is now
        if revision.state in SETTLED or (revision.state == State.FAILED and row.paused):
            # A held rollout too: only a resume (the pause) or a new revision moves it.
            self._settled[name] = (row.generation, row.paused, revision.state, keel_rollback)
            self._tracks.pop(name, None)
            self._state(name, revision.state, row, keel_rollback=keel_rollback)
            return IDLE
        self._settled.pop(name, None)
        now = await self._clock.now()
        facts = self._facts(entry, revision, now=now, keel_rollback=keel_rollback)
        judgement = judge(facts, self._tracks.get(name))
        action = judgement.action
        if action is not None and not confirmed:
            again = await self._moved(name, entry, term=term)
            if again is not None:
                return again
        self._tracks[name] = judgement.track
        self._state(name, revision.state, row, keel_rollback=keel_rollback)
        bound = log.bind(workload=name, revision=row.generation)
        if isinstance(action, Complete):
            ready = sum(1 for m in facts.members if m.ready)
            complete = self._store.complete_revision(
                name, row.generation, ready=ready, epoch=term.epoch
            )
            if await self._wrote(name, complete):
                bound.info("rollout complete", ready=ready)
                self._settled[name] = (row.generation, row.paused, State.COMPLETE, keel_rollback)
                self._state(name, State.COMPLETE, row, keel_rollback=keel_rollback)
            return requeue_after(0)  # looked at again: settled, or judged on what moved
        if isinstance(action, Fail):
            await self._wrote(name, self._fail(name, row, revision, action, epoch=term.epoch))
            return requeue_after(0)
        if isinstance(action, Promote):
            try:
                await self._wrote(
                    name,
                    self._store.promote(
                        name, actor=ACTOR, revision=row.generation, epoch=term.epoch
                    ),
                )
            except FailedPrecondition:
                # Promoted, aborted or replaced meanwhile: that write wakes the key again.
                return IDLE
            bound.info("canaries promoted", canaries=len(facts.members))
            return requeue_after(0)
        waits = [s for s in (judgement.recheck_s, self._verdict_due_s(entry, now)) if s]
        if waits:
            return requeue_after(min(waits), idle=True)
        return IDLE

    async def _revision(self, name: str, row: WorkloadRow) -> CurrentRevision | None:
        """The current revision's row: as kept, unless the workload moved since it was read."""
        at = (row.generation, row.desired_version)
        kept = self._revisions.get(name)
        if kept is not None and kept[0] == at:
            return kept[1]
        revision = await self._store.current_revision(name, row.generation)
        if revision is not None:
            self._revisions[name] = (at, revision)
        return revision

    async def _wrote(self, name: str, write: Awaitable[T]) -> T:
        """One of the controller's own writes: the revision is read again at the next pass,
        whatever the write did (written, refused, or failed midway)."""
        try:
            return await write
        finally:
            self._revisions.pop(name, None)

    def _facts(
        self,
        entry: WorkloadEntry[WorkloadRow],
        revision: CurrentRevision,
        *,
        now: datetime,
        keel_rollback: bool,
    ) -> Facts:
        row = entry.row
        own = list(entry.instances.values())
        live = [i for i in own if i.view.live]
        deadline_s = row.workload.deadline_ms / 1000
        members = []
        for i in live:
            if not row.is_current(i.generation):
                continue
            verdict = judge_instance(i, self._cache.host(i.host), deadline_s=deadline_s, now=now)
            members.append(
                Member(
                    id=i.id,
                    host=i.host,
                    ready=i.view.ready,
                    stuck=verdict.reason.value if verdict is not None else "",
                    message=verdict.message if verdict is not None else i.message,
                )
            )
        converged = False
        if not surely_unconverged(entry.view, own):
            plan = plan_workload(
                entry.view, [i.view for i in own], self._cache.hosts, self._cache.usage
            )
            converged = workload_converged(row, plan, own)
        w = row.workload
        desired = (
            len(daemon_hosts(entry.view, self._cache.hosts.values()))
            if w.kind is Kind.DAEMON
            else w.replicas
        )
        return Facts(
            revision=row.generation,
            state=revision.state,
            since=revision.since,
            now=now,
            converged=converged,
            members=tuple(sorted(members, key=lambda m: m.id)),
            old_live=len(live) - len(members),
            desired=desired,
            paused=row.paused,
            canary_pending=row.canary_pending,
            policy=w.rollout,
            min_ready_s=w.spec.min_ready_ms / 1000,
            keel_rollback=keel_rollback,
        )

    async def _fail(
        self,
        name: str,
        row: WorkloadRow,
        revision: CurrentRevision,
        fail: Fail,
        *,
        epoch: int | None,
    ) -> None:
        failed = await self._store.fail_revision(
            name, row.generation, fail, judged_in=revision.state, epoch=epoch
        )
        bound = log.bind(workload=name, revision=row.generation, reason=fail.reason,
                         instances=[m.id for m in fail.evidence])  # fmt: skip
        if failed is None:
            bound.info("rollout failure not written: the revision moved meanwhile")
            return
        # Counted as it is now, before the pass that follows reads it back.
        self._states_now(name, "ROLLED_BACK" if failed.rolled_back_to is not None else "FAILED")
        if failed.rolled_back_to is not None:
            self._metrics.rollouts.count_rollback(fail.reason)
            bound.warning("rollout failed; rolled back", to_revision=failed.rolled_back_to,
                          new_revision=failed.new_revision)  # fmt: skip
        else:
            bound.warning("rollout failed; holding", next_command=failed.record["next_command"])

    def _verdict_due_s(self, entry: WorkloadEntry[WorkloadRow], now: datetime) -> float | None:
        """Seconds until the first unready instance of the current spec passes the workload's
        deadline (its verdict may become HEALTH_CHECK_FAILING then), if any is waiting."""
        row = entry.row
        deadline_s = row.workload.deadline_ms / 1000
        waits = [
            deadline_s - (now - _since(i)).total_seconds()
            for i in _unready_current(row, entry.instances.values())
        ]
        future = [w for w in waits if w > 0]
        return min(future) if future else None

    def _state(self, name: str, state: str, row: WorkloadRow, *, keel_rollback: bool) -> None:
        self._states_now(name, rollout_state(state, paused=row.paused, keel_rollback=keel_rollback))

    def _states_now(self, name: str, counted: str | None) -> None:
        before = self._states.get(name)
        if counted == before:
            return
        if before is not None:
            self._counts[before] -= 1
        if counted is None:
            self._states.pop(name, None)
        else:
            self._states[name] = counted
            self._counts[counted] += 1

    def _forget(self, name: str) -> None:
        self._tracks.pop(name, None)
        self._settled.pop(name, None)
        self._revisions.pop(name, None)
        before = self._states.pop(name, None)
        if before is not None:
            self._counts[before] -= 1

    def counts(self) -> Mapping[str, int]:
        """Workloads by keel_rollouts state, while this replica leads (else none: what it
        counted as leader is nobody's rollout any more)."""
        try:
            self._cache.index  # noqa: B018 (raises NotLoaded while not leading)
        except NotLoaded:
            return {}
        return {state: n for state, n in self._counts.items() if n}


def _unready_current(row: WorkloadRow, instances: Iterable[InstanceRecord]) -> list[InstanceRecord]:
    return [
        i for i in instances if i.view.live and row.is_current(i.generation) and not i.view.ready
    ]


def _since(i: InstanceRecord) -> datetime:
    return i.unconverged_since or i.desired_changed_at
