"""The fleet as the leader's cache holds it: workloads with their instances, and hosts, indexed
by workload and by host, with what each host's instances hold kept one change at a time.

Pure bookkeeping, no I/O: `controlplane.cache` (the informer) reads rows from Postgres and
hands them here; the workload controller, liveness and the stuck detector read the indexes.
Rules are called, not restated: which instances hold a host's resources is
`InstanceView.holds_resources` (`keel.model.holds_resources`), summed per host by
`scheduler.HostUsage`; what converged means is `keel.model.converged`.

Reads race (a notification's refresh, the periodic full list, a controller refreshing after a
refused write), so every entry remembers what it was read at:
- its workload's `version` (Postgres, migration 0006: taken anew by every write to the
  workload or its instances). A read never replaces an entry with an older version; at equal
  versions the read that began later wins (stuck marks carry no version).
- the local sequence number of the read (`begin_read`). A full list that began after an entry
  was read, and did not find it, removes it (deleted since).
A workload this leader deleted leaves a tombstone, so a read that began before the delete
cannot bring it back; the next incarnation of the name has a larger version and replaces it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from controlplane.scheduler import NO_USAGE, HostUsage
from controlplane.view import HostView, InstanceView, StuckState, WorkloadView
from keel.model import Desired, HostState, Kind, Phase, converged

W = TypeVar("W")  # the store's workload row, carried as is (plans are written from it)

# `live_on` of a host with nothing live: one shared empty mapping, not a Counter per call.
_NOTHING_LIVE: Mapping[str, int] = {}


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance as the cache holds it: what the planners read (`view`) and what the stuck
    detector judges it by."""

    view: InstanceView
    desired_changed_at: datetime
    unconverged_since: datetime | None
    observed: bool  # the agent has reported it at least once
    reason: str
    message: str
    agent_stuck: bool
    stop_grace_ms: int
    stuck: StuckState | None = None
    stop_after_disconnect_ms: int = 0  # its spec's on_disconnect.stop_after; 0: none
    # When it first converged since its last desired change (ready, for a RUNNING one).
    converged_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def workload(self) -> str:
        return self.view.workload

    @property
    def host(self) -> str:
        return self.view.host

    @property
    def generation(self) -> int:
        return self.view.generation

    @property
    def desired(self) -> Desired:
        return self.view.desired

    @property
    def phase(self) -> Phase:
        return self.view.phase

    @property
    def converged(self) -> bool:
        return converged(self.view.desired, self.view.phase, self.view.ready)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host as the cache holds it: what the planners read (`view`) and the heartbeat facts
    liveness and the stuck detector judge it by. The heartbeat is the one the cache last read:
    never newer than the database's, so a judgement on it can only come too early, and the
    write that carries it out is refused then (`hosts.HostStore.record_liveness`)."""

    view: HostView
    state_since: datetime
    last_heartbeat: datetime | None
    connected: bool
    # Bumped by every write of a desired change on the host (`sql.bump_revisions`): what its
    # instances hold can only have grown past what the cache holds if this moved.
    revision: int = 0

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def state(self) -> HostState:
        return self.view.state

    @property
    def schedulable(self) -> bool:
        return self.view.schedulable


@dataclass(frozen=True)
class WorkloadEntry(Generic[W]):
    """A workload and its instances, as read together at `version`. Never changed in place: a
    controller may hold one across an await."""

    row: W
    view: WorkloadView
    version: int
    instances: Mapping[str, InstanceRecord]  # by id


@dataclass(frozen=True)
class HostSeen:
    """What a plan read of a host, checked by the write that carries it out: its state and
    cordon, and (for a host it places on) its revision, so that what the host's instances
    hold is what the plan counted."""

    state: HostState
    schedulable: bool
    revision: int | None = None


@dataclass(frozen=True)
class Delta:
    """One committed write to a workload's instances as its writer saw it, in the write's
    transaction: the version it was made over, the version it took, the instances it changed
    (as they are now) and those it deleted."""

    workload: str
    from_version: int
    to_version: int
    upserts: tuple[InstanceRecord, ...] = ()
    deletes: tuple[str, ...] = ()
    revisions: tuple[tuple[str, int], ...] = ()  # (host, revision) the write took
    desired_version: int | None = None  # the workload's, if the write changed what should run
    settled: bool = False  # the write left the workload's desired change no longer pending


class FleetIndex(Generic[W]):
    """Workloads, instances and hosts, with per-host usage and per-host live counts."""

    def __init__(self) -> None:
        self._workloads: dict[str, WorkloadEntry[W]] = {}
        self._read_at: dict[str, int] = {}  # the read each entry came from
        self._tombstones: dict[str, tuple[int, int]] = {}  # name -> (version, read number)
        self._hosts: dict[str, HostRecord] = {}
        self._host_views: dict[str, HostView] = {}
        self._usage: dict[str, HostUsage] = {}
        self._live: dict[str, Counter[str]] = {}  # host -> workload -> live instances
        # host -> workload -> instances in any desired state (a drain waits for removed ones)
        self._present: dict[str, Counter[str]] = {}
        # Instances not converged or marked stuck (by id: their workload), which the stuck
        # detector judges; every other one is converged and unmarked.
        self._attention: dict[str, str] = {}
        self._instances = 0
        self._reads = 0
        self._last_list = 0
        # Moves whenever a host's view (what the planners read of it) changes.
        self.hosts_generation = 0

    # -- reading ----------------------------------------------------------------------------

    def workload(self, name: str) -> WorkloadEntry[W] | None:
        return self._workloads.get(name)

    def workloads(self) -> Iterator[WorkloadEntry[W]]:
        return iter(list(self._workloads.values()))

    def workload_names(self) -> list[str]:
        return list(self._workloads)

    @property
    def hosts(self) -> Mapping[str, HostView]:
        """Every host by name, as the planners read them (not a copy)."""
        return self._host_views

    def host(self, name: str) -> HostRecord | None:
        return self._hosts.get(name)

    def host_records(self) -> list[HostRecord]:
        return list(self._hosts.values())

    @property
    def usage(self) -> Mapping[str, HostUsage]:
        """What every host's instances hold (not a copy; absent: nothing)."""
        return self._usage

    def live_on(self, host: str) -> Mapping[str, int]:
        """Live instances (desired RUNNING or STOPPED) on the host, by workload."""
        return self._live.get(host, _NOTHING_LIVE)

    def workloads_on(self, host: str) -> list[str]:
        """The workloads with any instance on the host, removed ones not yet gone included."""
        return sorted(self._present.get(host, ()))

    def needing_attention(self) -> list[InstanceRecord]:
        """The instances not converged or marked stuck: the only ones, with those on hosts
        that are not READY (`live_on_host`), that can have or lose a stuck verdict."""
        return [self._workloads[w].instances[i] for i, w in self._attention.items()]

    def live_on_host(self, host: str) -> list[InstanceRecord]:
        """The host's live instances (by the workloads that have some there)."""
        return [
            i
            for name in self.live_on(host)
            for i in self._workloads[name].instances.values()
            if i.host == host and i.view.live
        ]

    def self_fencing_on(self, host: str) -> list[InstanceRecord]:
        """The host's service instances that set on_disconnect.stop_after and are not known
        STOPPED yet: those liveness may presume stopped by their agent."""
        out: list[InstanceRecord] = []
        for name in self._present.get(host, ()):
            entry = self._workloads.get(name)
            if entry is None or entry.view.kind is not Kind.SERVICE:
                continue
            out.extend(
                i
                for i in entry.instances.values()
                if i.host == host and i.stop_after_disconnect_ms and i.phase is not Phase.STOPPED
            )
        return out

    def has_service_instances(self, host: str) -> bool:
        """Service instances are placed on the host and not yet removed (what fencing takes)."""
        for name, count in self.live_on(host).items():
            entry = self._workloads.get(name)
            if count > 0 and entry is not None and entry.view.kind is Kind.SERVICE:
                return True
        return False

    def counts(self) -> dict[str, int]:
        """Objects held, by kind (keel_cache_objects)."""
        return {
            "workload": len(self._workloads),
            "instance": self._instances,
            "host": len(self._hosts),
        }

    # -- workloads ----------------------------------------------------------------------------

    def begin_read(self) -> int:
        """Numbers a read about to start; pass the number back with what it read."""
        self._reads += 1
        return self._reads

    def put_workload(
        self,
        row: W,
        view: WorkloadView,
        version: int,
        instances: Iterable[InstanceRecord],
        *,
        read: int,
    ) -> bool:
        """Sets a workload and all its instances from one read; False (nothing changed) when
        the entry held is newer, or the name was deleted after the read began."""
        name = view.name
        tomb = self._tombstones.get(name)
        if tomb is not None and (version <= tomb[0] or read < tomb[1]):
            return False
        current = self._workloads.get(name)
        if current is not None and (
            current.version > version or (current.version == version and self._read_at[name] > read)
        ):
            return False
        self._tombstones.pop(name, None)
        entry = WorkloadEntry(row, view, version, {i.id: i for i in instances})
        self._swap(current, entry)
        self._read_at[name] = read
        return True

    def apply(self, delta: Delta) -> bool:
        """Applies a write as its writer saw it, only onto the version it was made over (the
        entry then equals what the write changed). False, and nothing changed, otherwise: the
        caller reads the workload again. A host revision the write took is applied with it, over
        the one before it; not when the write is not applied: the host's usage would then lack
        what the write placed there, and the cached revision must not vouch for it (the next
        plan placing there is refused and reads the host and its instances again)."""
        current = self._workloads.get(delta.workload)
        if current is None or current.version != delta.from_version:
            return False
        for name, revision in delta.revisions:
            host = self._hosts.get(name)
            if host is not None and host.revision == revision - 1:
                self._hosts[name] = dataclasses.replace(host, revision=revision)
        instances = dict(current.instances)
        for inst in delta.upserts:
            instances[inst.id] = inst
        for inst_id in delta.deletes:
            instances.pop(inst_id, None)
        self._swap(current, WorkloadEntry(current.row, current.view, delta.to_version, instances))
        return True

    def replace_row(self, name: str, row: W) -> None:
        """A change to the workload's row that carries no version (the stuck detector's own
        marks): the instances and the version stay."""
        current = self._workloads.get(name)
        if current is not None:
            self._workloads[name] = WorkloadEntry(
                row, current.view, current.version, current.instances
            )
            self._written_now(name)

    def _written_now(self, name: str) -> None:
        """A write of the leader's own that takes no version landed on the entry: a read that
        began before it (numbered up to now) and finds the same version does not overwrite
        it; one that begins after it (it committed first) does."""
        self._read_at[name] = max(self._read_at.get(name, 0), self._reads + 1)

    def set_instance_stuck(self, workload: str, instance: str, stuck: StuckState | None) -> None:
        """The stuck detector's own mark on an instance (no version: usage does not change)."""
        current = self._workloads.get(workload)
        if current is None or instance not in current.instances:
            return
        instances = dict(current.instances)
        instances[instance] = dataclasses.replace(instances[instance], stuck=stuck)
        self._swap(current, WorkloadEntry(current.row, current.view, current.version, instances))
        self._written_now(workload)

    def absent(self, name: str, *, read: int) -> None:
        """A read that began at `read` did not find the workload: it was deleted, unless what
        the cache holds was read after that read began."""
        if name in self._workloads and self._read_at[name] < read:
            self._swap(self._workloads[name], None)
            del self._read_at[name]

    def drop_workload(self, name: str, *, version: int) -> None:
        """This leader deleted the workload (at `version`): forget it, and refuse any read of it
        that began before now or carries no newer version."""
        self._swap(self._workloads.get(name), None)
        self._read_at.pop(name, None)
        self._tombstones[name] = (version, self.begin_read())

    def retain(self, names: Iterable[str], *, read: int) -> list[str]:
        """After a full list that began at `read` and found `names`: drops the workloads it did
        not find that were read before it began (deleted since); returns them."""
        found = set(names)
        gone = [n for n in self._workloads if n not in found and self._read_at[n] < read]
        for name in gone:
            self._swap(self._workloads[name], None)
            del self._read_at[name]
        # Tombstones outlive the reads that began before them: every such read has ended by
        # the time a second full list begins.
        self._tombstones = {n: t for n, t in self._tombstones.items() if t[1] >= self._last_list}
        self._last_list = read
        return gone

    # -- hosts --------------------------------------------------------------------------------

    def put_hosts(self, records: Iterable[HostRecord], *, complete: bool) -> None:
        """Sets hosts from a read; `complete` (every host was read) drops the others. Moves
        `hosts_generation` when what the planners read of a host changed."""
        records = list(records)
        changed = any(self._host_views.get(r.name) != r.view for r in records)
        if complete:
            names = {r.name for r in records}
            changed = changed or any(name not in names for name in self._host_views)
            self._hosts.clear()
            self._host_views.clear()
        for r in records:
            self._hosts[r.name] = r
            self._host_views[r.name] = r.view
        if changed:
            self.hosts_generation += 1

    def heartbeats(self, beats: Iterable[tuple[str, HostState, datetime, datetime]]) -> None:
        """Heartbeats this replica wrote: (host, state, since, heartbeat), as their statement
        returned them. Applied only over an older heartbeat: a host read since the write
        committed holds it already (and perhaps more)."""
        changed = False
        for name, state, since, heartbeat in beats:
            host = self._hosts.get(name)
            if host is None or (
                host.last_heartbeat is not None and host.last_heartbeat >= heartbeat
            ):
                continue
            view = host.view
            if view.state is not state:
                view = dataclasses.replace(view, state=state)
                self._host_views[name] = view
                changed = True
            # Built, not dataclasses.replace: this runs for every heartbeat the leader writes.
            self._hosts[name] = HostRecord(
                view=view,
                state_since=since,
                last_heartbeat=heartbeat,
                connected=True,
                revision=host.revision,
            )
        if changed:
            self.hosts_generation += 1

    # -- the incremental part -------------------------------------------------------------------

    def _swap(self, old: WorkloadEntry[W] | None, new: WorkloadEntry[W] | None) -> None:
        """Replaces one workload's entry, moving each changed instance's share of its host's
        usage and live counts (an instance unchanged between the two moves nothing)."""
        before = old.instances if old is not None else {}
        after = new.instances if new is not None else {}
        for inst_id, inst in before.items():
            if after.get(inst_id) is not inst:
                self._remove(inst)
        for inst_id, inst in after.items():
            if before.get(inst_id) is not inst:
                self._add(inst)
        if new is not None:
            self._workloads[new.view.name] = new
        elif old is not None:
            del self._workloads[old.view.name]

    def _add(self, record: InstanceRecord) -> None:
        inst = record.view
        self._instances += 1
        if record.stuck is not None or not record.converged:
            self._attention[inst.id] = inst.workload
        if inst.holds_resources:
            self._usage[inst.host] = self._usage.get(inst.host, NO_USAGE).plus(inst)
        if inst.live:
            self._live.setdefault(inst.host, Counter())[inst.workload] += 1
        self._present.setdefault(inst.host, Counter())[inst.workload] += 1

    def _remove(self, record: InstanceRecord) -> None:
        inst = record.view
        self._instances -= 1
        self._attention.pop(inst.id, None)
        if inst.holds_resources:
            usage = self._usage[inst.host].minus(inst)
            if usage.holding:
                self._usage[inst.host] = usage
            else:
                del self._usage[inst.host]
        if inst.live:
            live = self._live[inst.host]
            live[inst.workload] -= 1
            if live[inst.workload] <= 0:
                del live[inst.workload]
            if not live:
                del self._live[inst.host]
        present = self._present[inst.host]
        present[inst.workload] -= 1
        if present[inst.workload] <= 0:
            del present[inst.workload]
        if not present:
            del self._present[inst.host]
