"""Liveness: when a host becomes NOT_READY, then UNKNOWN, and when its instances are fenced.

`judge` is the rule, pure and table-tested (tests/unit/test_liveness.py): from each host's
heartbeat facts in database time it decides which hosts change state and which are fenced.
- A new leader judges nobody for one liveness grace, so agents have time to reconnect to it;
  nor does a leader whose database was away (heartbeats could not be recorded meanwhile),
  for one grace from its return.
- READY with no heartbeat for longer than the grace: NOT_READY, from now.
- NOT_READY for longer than `unknown_after`: UNKNOWN. `state_since` keeps when the host stopped
  being READY, so fencing and HOST_UNREACHABLE count from the first missed deadline.
- Not READY for longer than `reschedule_after`, with service instances still placed on it: its
  service instances are fenced (tombstoned) so they are replaced elsewhere; the agent stops
  them if it comes back, before it reports READY.

`LivenessController` is the leader's periodic pass, run by `reconcile.Runner`: it takes the
facts from the leader's cache (`HostSource`: `cache.FleetCache`, no fleet-wide query) and
writes the decision through `LivenessStore` (`hosts.HostStore` implements it: the SQL writes
decisions, it decides nothing). The cache's heartbeat is never newer than the database's, so a
decision on it can only come too early; the write refuses a transition or a fence whose host
has heartbeated since (`keel_cache_stale_writes_total{controller="liveness"}`), and the pass
reads those hosts again. A heartbeat makes a host READY again (`hosts.HostStore.heartbeat`,
called by `sync`); the stuck detector (`stuck`) names instances of hosts that stay unreachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from controlplane.errors import Unavailable
from controlplane.metrics import Metrics
from controlplane.reconcile import Result, Term, requeue_after
from keel.model import Change, HostState, Kind

log = structlog.get_logger("keel.liveness")

# The one key of the liveness controller: every pass judges every host.
KEY = "hosts"


@dataclass(frozen=True)
class HostFacts:
    """What liveness knows of a host, in database time."""

    name: str
    state: HostState
    state_since: datetime
    last_heartbeat: datetime | None
    has_service_instances: bool  # service instances placed on it and not yet REMOVED


@dataclass(frozen=True)
class Timings:
    grace_s: float  # no heartbeat this long: NOT_READY (and a new leader's wait)
    unknown_after_s: float  # NOT_READY this long more: UNKNOWN
    reschedule_after_s: float  # not READY this long: service instances fenced


@dataclass(frozen=True)
class Transition:
    """A host's new state. Written only if the host is still as judged (`was`, and no
    heartbeat after `last_heartbeat`), so a heartbeat that races the pass wins."""

    host: str
    was: HostState
    to: HostState
    since: datetime
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class Decision:
    transitions: tuple[Transition, ...] = ()
    fence: tuple[str, ...] = ()  # hosts whose service instances are to be replaced elsewhere
    wait_s: float | None = None  # a new leader: judge nothing for this long yet


def judge(
    hosts: Iterable[HostFacts], *, now: datetime, term_age_s: float, timings: Timings
) -> Decision:
    """Which hosts change state and which are fenced now."""
    if term_age_s < timings.grace_s:
        return Decision(wait_s=timings.grace_s - term_age_s)
    transitions: list[Transition] = []
    fence: list[str] = []
    for h in hosts:
        state, since = h.state, h.state_since
        if state is HostState.READY:
            # A READY host always has a heartbeat; without one it is silent since it became so.
            silent_s = (now - (h.last_heartbeat or h.state_since)).total_seconds()
            if silent_s > timings.grace_s:
                state, since = HostState.NOT_READY, now
        elif (
            state is HostState.NOT_READY
            and (now - h.state_since).total_seconds() > timings.unknown_after_s
        ):
            state = HostState.UNKNOWN
        if state is not h.state:
            transitions.append(Transition(h.name, h.state, state, since, h.last_heartbeat))
        down_s = (now - since).total_seconds()
        if (
            state is not HostState.READY
            and down_s > timings.reschedule_after_s
            and h.has_service_instances
        ):
            fence.append(h.name)
    return Decision(transitions=tuple(transitions), fence=tuple(fence))


def gone(state: HostState, state_since: datetime, *, now: datetime, gone_after_s: float) -> bool:
    """Not READY for longer than `gone_after_s` (`--gone-after`): the host is listed GONE and
    may be removed (`host_delete`). Nothing is done to a gone host by itself."""
    return state is not HostState.READY and (now - state_since).total_seconds() > gone_after_s


class LivenessStore(Protocol):
    async def now(self) -> datetime:
        """Database time: the clock heartbeats are stamped with."""
        ...

    async def record_liveness(
        self, transitions: Sequence[Transition], *, epoch: int | None
    ) -> list[Transition]:
        """Writes the transitions still valid (with their events); returns those written."""
        ...

    async def fence_host(
        self,
        host: str,
        kinds: Iterable[Kind],
        *,
        epoch: int | None,
        down_since: datetime | None = None,
    ) -> int:
        """Fences the host's instances of `kinds` if it is still down since `down_since`."""
        ...


class HostSource(Protocol):
    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        """Every host's facts, as last read; with `silent_before`, only those of hosts not
        READY or READY without a heartbeat after it (the others `judge` leaves as they are)."""
        ...

    async def refresh_hosts(self, names: Sequence[str] | None = None) -> None:
        """Reads the named hosts again."""
        ...


class LivenessController:
    """Judges every host each `interval_s` (a keyed periodic reconcile)."""

    name = "liveness"
    key_label = "pass"

    def __init__(
        self,
        store: LivenessStore,
        *,
        hosts: HostSource,
        timings: Timings,
        interval_s: float,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._hosts = hosts
        self._timings = timings
        self._interval_s = interval_s
        self._metrics = metrics
        # Set while the database is away; then when it came back (term clock). Heartbeats
        # that arrived meanwhile could not be recorded, so hosts are not judged silent by
        # them: agents get one grace period from the database's return, as from a new term.
        self._blind = False
        self._sighted_at: float | None = None

    async def keys(self) -> list[str]:
        return [KEY]

    async def reconcile(self, key: str, *, term: Term) -> Result:
        try:
            now = await self._store.now()
        except Unavailable:
            self._blind = True
            raise
        if self._blind:
            self._blind = False
            self._sighted_at = term.clock()
            log.info("database back: hosts get one liveness grace before they are judged")
        watched_s = term.age_s()
        if self._sighted_at is not None:
            watched_s = min(watched_s, max(0.0, term.clock() - self._sighted_at))
        # A READY host that heartbeated within the grace keeps its state whatever else holds,
        # so the pass looks only at the others: a few records, not one per host of the fleet.
        silent_before = now - timedelta(seconds=self._timings.grace_s)
        hosts = self._hosts.liveness_facts(silent_before=silent_before)
        decision = judge(hosts, now=now, term_age_s=watched_s, timings=self._timings)
        if decision.wait_s is not None:
            return requeue_after(decision.wait_s, idle=True)
        written = await self._store.record_liveness(decision.transitions, epoch=term.epoch)
        for t in written:
            log.warning("host stopped heartbeating", host=t.host, state=t.to.value)
        for _ in range(len(decision.transitions) - len(written)):
            # Judged on a heartbeat the cache had not read yet: the host spoke since.
            self._metrics.count_stale_write(self.name)
        since = {h.name: h.state_since for h in hosts}
        fenced = 0
        for host in decision.fence:
            n = await self._store.fence_host(
                host, [Kind.SERVICE], epoch=term.epoch, down_since=since[host]
            )
            self._metrics.count_changes(Change.REMOVE, n)
            if n:
                # Their workloads are woken by the fence's NOTIFY: the replacements are
                # fresh changes, clocked from this decision.
                log.warning("fenced instances of an unreachable host", host=host, instances=n)
            fenced += n
        judged = sorted({t.host for t in decision.transitions} | set(decision.fence))
        if judged:
            # What was written, or what refused it, is read now rather than at the next
            # notification: the next pass judges from it.
            await self._hosts.refresh_hosts(judged)
        return requeue_after(self._interval_s, idle=not written and not fenced)
