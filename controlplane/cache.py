"""The leader's informer: an in-memory cache of the fleet, kept current from Postgres, so that a
reconcile costs what its workload has, not what the fleet has.

What it holds (`controlplane.fleet_index`): every workload with its version and its instances,
every host, and per host what its instances hold and how many live instances of each workload
it runs. How it stays current, like an agent's list-then-watch:
- a full list when leadership starts (`start`); every resync period, and after the notification
  connection was lost (`resync_now`), a resync: every host, and every workload whose version
  in the database is not the one the cache holds (every write to what the cache holds of a
  workload takes a new version, so this finds whatever a lost notification left unread, at
  the cost of one row per workload rather than one per instance);
- then changes, woken by the NOTIFY channels (`controlplane.listener`): a `keel_workload`
  payload names a workload and the version its change took, and the workload is re-read (its
  row and its instances, by workload) unless the cache holds that version already; `*` means
  the hosts changed, and they are re-read. Re-reads wait for nothing but the previous one, so
  notifications that arrive meanwhile are read together;
- the leader's own writes (plans, report batches) are applied as their transactions returned
  them (`apply`), when the cache holds the version the write was made over; so are the
  heartbeat batches it writes (`heartbeats_written`: each host's new heartbeat, when newer).
After each re-read the workload controller is woken for what changed (`on_workload`,
`on_hosts`).

Why it cannot make a controller act on old state: a reconcile takes the workload through
`current`, which compares the cached version with the database's (one indexed lookup) and
re-reads the workload when it moved; and the write that carries out the plan is refused when
the workload's version, or the state of a host the plan relied on, changed after the read
(`instance_store.apply_plan`; liveness the same way, `hosts.HostStore.record_liveness`). The
controller then reads again and plans again (`keel_cache_stale_writes_total`). A follower
holds nothing: the cache lives for one leadership term (`leader.Leadership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import structlog

from controlplane.cancelling import end_if_cancelled
from controlplane.errors import KeelError
from controlplane.fleet_index import Delta, FleetIndex, HostRecord, WorkloadEntry
from controlplane.hosts import Beat
from controlplane.liveness import HostFacts, SelfFencing
from controlplane.metrics import Metrics
from controlplane.scheduler import HostUsage
from controlplane.status import ReportOutcome
from controlplane.store import Store, WorkloadRow
from controlplane.view import HostView, StuckState
from keel.model import HostState

log = structlog.get_logger("keel.cache")

# The payload that means "the hosts changed" (`workload.ALL`), not a workload's name.
ALL = "*"
# A full list hands the event loop back after this many workloads, so fresh changes are not
# held behind it.
_YIELD_EVERY = 100
_RETRY_MAX_S = 5.0
# A full list slower than this is logged (every list is counted and timed in the metrics).
SLOW_LIST_S = 1.0


class NotLoaded(KeelError):
    """The fleet cache is not loaded: this replica does not lead."""


class FleetCache:
    """The leader's cache of the fleet for one term: `start` lists it, `run` keeps it current,
    the controllers read it (`current`, `hosts`, `usage`) and tell it what they wrote."""

    def __init__(
        self,
        store: Store,
        *,
        metrics: Metrics,
        resync_period_s: float,
        on_workload: Callable[[str], None] = lambda name: None,
        on_hosts: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._resync_period_s = resync_period_s
        self._on_workload = on_workload
        self._on_hosts = on_hosts
        self._clock = clock
        self._index: FleetIndex[WorkloadRow] | None = None
        self._dirty: set[str] = set()
        self._hosts_dirty = False
        self._resync_due = False
        self._wake = asyncio.Event()
        # Host reads carry no version: they are made one at a time, so a later read is newer.
        self._host_reads = asyncio.Lock()
        metrics.track_cache(lambda: self._index.counts() if self._index is not None else {})

    # -- the term ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Leadership started: the full list, before any controller reads."""
        self._index = FleetIndex()
        self._dirty.clear()
        self._hosts_dirty = self._resync_due = False
        await self._list(first=True)
        # What the list built lives for the term: left out of the garbage collector's full
        # passes, which otherwise walk every cached object and stall the event loop for tens of
        # milliseconds per pass at 50,000 instances (reference counting still frees what is
        # replaced).
        gc.freeze()

    def stop(self) -> None:
        """Leadership ended: hold nothing (a follower's notifications are ignored)."""
        self._index = None
        self._dirty.clear()
        gc.unfreeze()  # what `start` froze is garbage now, to be collected as usual

    async def run(self) -> None:
        """Keeps the cache current while leading; returns only when cancelled."""
        next_list = self._clock() + self._resync_period_s
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_list - self._clock())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync_due or self._clock() >= next_list:
                    self._resync_due = True  # until it succeeds
                    await self._list()
                    self._resync_due = False
                    next_list = self._clock() + self._resync_period_s
                if self._hosts_dirty:
                    # Cleared before the read: a notification arriving during it reads again.
                    self._hosts_dirty = False
                    try:
                        await self.refresh_hosts()
                    except BaseException:
                        self._hosts_dirty = True
                        raise
                    self._on_hosts()
                if self._dirty:
                    names, self._dirty = sorted(self._dirty), set()
                    try:
                        await self.refresh(names)
                    except BaseException:
                        self._dirty.update(names)
                        raise
                    for name in names:
                        self._on_workload(name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                end_if_cancelled()  # a cancel the read swallowed (see `cancelling`)
                # The database is away, or a read failed: what was due stays due.
                failures += 1
                delay = min(0.1 * 2**failures, _RETRY_MAX_S) * (0.5 + random.random() / 2)
                log.warning("cache read failed; will retry", error=str(exc),
                            retry_in_s=round(delay, 3))  # fmt: skip
                await asyncio.sleep(delay)
                self._wake.set()

    # -- what wakes it ----------------------------------------------------------------------

    def notified(self, payload: str) -> None:
        """A `keel_workload` notification: `NAME VERSION`, `NAME`, or `*` (hosts changed)."""
        index = self._index
        if index is None:
            return
        if payload == ALL:
            self._hosts_dirty = True
        else:
            name, _, version = payload.partition(" ")
            entry = index.workload(name)
            if entry is not None and version.isdigit() and entry.version >= int(version):
                return  # the cache holds it already: the leader's own write
            self._dirty.add(name)
        self._wake.set()

    def resync_now(self) -> None:
        """Notifications may have been lost (the listener reconnected): list everything."""
        self._resync_due = True
        self._wake.set()

    def reported(self, outcome: ReportOutcome) -> None:
        """A report batch this replica wrote: applied as written, then the workloads whose
        instances changed phase or readiness are woken."""
        index = self._index
        if index is None:
            return
        for delta in outcome.deltas:
            self.apply(delta)
        for name in outcome.workloads:
            if name not in self._dirty:
                self._on_workload(name)

    def heartbeats_written(self, beats: Sequence[Beat]) -> None:
        """A heartbeat batch this replica wrote: liveness judges from these heartbeats, not
        from the last read (nothing while following: the leader learns of hosts streaming to
        another replica by reading them)."""
        index = self._index
        if index is None:
            return
        index.heartbeats((b.host, b.state, b.state_since, b.last_heartbeat) for b in beats)

    # -- reading ----------------------------------------------------------------------------

    @property
    def index(self) -> FleetIndex[WorkloadRow]:
        if self._index is None:
            raise NotLoaded()
        return self._index

    @property
    def hosts(self) -> Mapping[str, HostView]:
        return self.index.hosts

    @property
    def usage(self) -> Mapping[str, HostUsage]:
        return self.index.usage

    async def current(self, name: str) -> WorkloadEntry[WorkloadRow] | None:
        """The workload as it is in the database now (None: it does not exist): the cached
        entry when its version is the database's, else the workload read again."""
        index = self.index
        read = index.begin_read()
        version = await self._store.workload_version(name)
        entry = index.workload(name)
        if version is None:
            index.absent(name, read=read)
            return None
        if entry is not None and entry.version >= version:
            return entry
        await self.refresh([name])
        return index.workload(name)

    async def refresh(self, names: Sequence[str]) -> None:
        """Reads the named workloads and their instances again (by workload)."""
        index = self.index
        read = index.begin_read()
        found = set()
        for r in await self._store.read_workloads(names):
            index.put_workload(r.row, r.view, r.row.version, r.instances, read=read)
            found.add(r.view.name)
        for name in names:
            if name not in found:
                index.absent(name, read=read)

    async def refresh_hosts(self, names: Sequence[str] | None = None) -> None:
        """Reads the named hosts (None: every host) again."""
        async with self._host_reads:
            records = await self._store.read_hosts(names)
            self.index.put_hosts(records, complete=names is None)

    async def refresh_placements(self, hosts: Sequence[str]) -> None:
        """Reads the hosts again and every workload with instances on them: what they hold
        changed in a way the cache did not see (their revision moved)."""
        await self.refresh_hosts(hosts)
        # After the hosts: what is read of their instances is at least as new as the revision.
        await self.refresh(await self._store.workloads_on(hosts))

    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        """The heartbeat facts of every host, as liveness judges them (`liveness.judge`); with
        `silent_before`, only of the hosts a judgement at that grace can change: those not
        READY, and the READY ones whose last heartbeat is not after it (a fleet that
        heartbeats costs a pass a comparison per host, not a record)."""
        index = self.index
        return [
            HostFacts(
                name=h.name,
                state=h.state,
                state_since=h.state_since,
                last_heartbeat=h.last_heartbeat,
                has_service_instances=index.has_service_instances(h.name),
                self_fencing=()
                if h.view.state is HostState.READY
                else tuple(
                    SelfFencing(i.id, i.stop_after_disconnect_ms / 1000, i.stop_grace_ms / 1000)
                    for i in index.self_fencing_on(h.name)
                ),
            )
            for h in index.host_records()
            if silent_before is None
            or h.view.state is not HostState.READY
            or (h.last_heartbeat or h.state_since) <= silent_before
        ]

    def host(self, name: str) -> HostRecord | None:
        return self.index.host(name)

    def host_count(self) -> int:
        return len(self.index.hosts)

    # -- the leader's own writes ------------------------------------------------------------

    def apply(self, delta: Delta | None) -> None:
        """A write this leader committed: applied as written, or the workload re-read."""
        index = self._index
        if delta is None or index is None:
            return
        if not index.apply(delta):
            self._dirty.add(delta.workload)
            self._wake.set()
        elif (entry := index.workload(delta.workload)) is not None:
            # The row says the versions it is current at, as a row read now would.
            desired = delta.desired_version or entry.row.desired_version
            pending = entry.row.desired_pending and not delta.settled
            row = dataclasses.replace(
                entry.row, version=entry.version, desired_version=desired, desired_pending=pending
            )
            index.replace_row(delta.workload, row)

    def settled(self, name: str) -> None:
        """The workload's desired change is no longer pending (`store.settle_desired`)."""
        if self._index is not None and (entry := self._index.workload(name)) is not None:
            self._index.replace_row(name, dataclasses.replace(entry.row, desired_pending=False))

    def deleted(self, name: str, *, version: int) -> None:
        if self._index is not None:
            self._index.drop_workload(name, version=version)

    def stuck_recorded(
        self,
        recorded: Mapping[tuple[str, str], StuckState | None],
        *,
        instance_workloads: Mapping[str, str],
    ) -> None:
        """The stuck detector's marks, as `status.mark_stuck` recorded them."""
        index = self._index
        if index is None:
            return
        for (kind, name), stuck in recorded.items():
            if kind == "instance" and name in instance_workloads:
                index.set_instance_stuck(instance_workloads[name], name, stuck)
            elif kind == "workload" and (entry := index.workload(name)) is not None:
                index.replace_row(name, dataclasses.replace(entry.row, stuck=stuck))

    def unconverged_recorded(self, since: Mapping[str, datetime | None]) -> None:
        """Workloads' unconverged_since, as `status.record_unconverged` recorded it."""
        index = self._index
        if index is None:
            return
        for name, value in since.items():
            entry = index.workload(name)
            if entry is not None:
                index.replace_row(name, dataclasses.replace(entry.row, unconverged_since=value))

    # -- the full list ----------------------------------------------------------------------

    async def _list(self, *, first: bool = False) -> None:
        index = self.index
        started = self._clock()
        await self.refresh_hosts()
        read = index.begin_read()
        if first:
            reads = await self._store.read_workloads(None)
            for n, r in enumerate(reads, start=1):
                index.put_workload(r.row, r.view, r.row.version, r.instances, read=read)
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            names = [r.view.name for r in reads]
        else:
            versions = await self._store.workload_versions()
            names = list(versions)
            behind = []
            for name, version in versions.items():
                entry = index.workload(name)
                if entry is None or entry.version < version:
                    behind.append(name)
            for at in range(0, len(behind), _YIELD_EVERY):
                await self.refresh(behind[at : at + _YIELD_EVERY])
            if behind:
                log.info("cache resync read workloads it had missed", workloads=len(behind))
        gone = index.retain(names, read=read)
        elapsed = self._clock() - started
        self._metrics.observe_cache_resync(elapsed)
        if first or gone or elapsed > SLOW_LIST_S:
            log.info("fleet cache listed", seconds=round(elapsed, 3), dropped=len(gone),
                     first=first, **index.counts())  # fmt: skip
