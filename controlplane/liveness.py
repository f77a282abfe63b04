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
  service instances are fenced (tombstoned). Their replacements are placed by the workload
  controller within the budget (`disruption`): a fenced instance still counts as possibly
  running until its agent reports it STOPPED, or, for a workload with
  `on_disconnect.stop_after`, until that long (plus its stop grace and `self_fence_margin`)
  has passed since the host's last heartbeat (`self_fence_due`): its agent has stopped it by
  itself by then, and the fence marks it so. The agent stops fenced instances if it comes back
  before it may report READY (`hosts.HostStore.write_heartbeats`).
- The mass-failure brake (`controlplane.brake`): when more than `max_unready_share` of the hosts
  are not READY, or none is, the fault is more likely on the control plane's side of the network
  than on that many hosts at once: nothing is fenced (and nothing marked self-fenced, so nothing
  is replaced) until the share recovers. The controller records the pause and the resume as
  events and sets `keel_liveness_brake_engaged` (alert `KeelMassHostFailure`). Hosts GONE
  (`gone`: not READY for longer than `--gone-after`) are left out of the share: long-dead hosts
  nobody removed say nothing about the network now, and must not make the brake hold for one
  more failure. When no host at all is READY, it holds whatever is gone. When it lets go, the
  hosts still down get `reschedule_after` again from then.

`LivenessController` is the leader's periodic pass, run by `reconcile.Runner`: it takes the
facts from the leader's cache (`HostSource`: `cache.FleetCache`, no fleet-wide query) and
writes the decision through `LivenessStore` (`hosts.HostStore` and `fencing.FencingStore`
implement it: the SQL writes decisions, it decides nothing). The cache's heartbeat is never
newer than the database's, so a decision on it can only come too early; the write refuses a
transition or a fence whose host has heartbeated since
(`keel_cache_stale_writes_total{controller="liveness"}`), and the pass reads those hosts
again. A heartbeat makes a host READY again (`hosts.HostStore.write_heartbeats`, called by
`sync`); the stuck detector (`stuck`) names instances of hosts that stay unreachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from controlplane.brake import Brake, after_release, brake_beside_gone
from controlplane.errors import Unavailable
from controlplane.metrics import Metrics
from controlplane.reconcile import Result, Term, requeue_after
from keel.model import Change, HostState, Kind

log = structlog.get_logger("keel.liveness")

# The one key of the liveness controller: every pass judges every host.
KEY = "hosts"


@dataclass(frozen=True)
class SelfFencing:
    """A service instance whose agent stops it by itself after losing the control plane
    (`on_disconnect.stop_after`), not yet counted as stopped."""

    instance_id: str
    stop_after_s: float
    stop_grace_s: float


@dataclass(frozen=True)
class HostFacts:
    """What liveness knows of a host, in database time."""

    name: str
    state: HostState
    state_since: datetime
    last_heartbeat: datetime | None
    has_service_instances: bool  # service instances placed on it and not yet REMOVED
    self_fencing: tuple[SelfFencing, ...] = ()


@dataclass(frozen=True)
class Timings:
    grace_s: float  # no heartbeat this long: NOT_READY (and a new leader's wait)
    unknown_after_s: float  # NOT_READY this long more: UNKNOWN
    reschedule_after_s: float  # not READY this long: service instances fenced
    # More than this share of the hosts not READY (or none READY): fence nothing.
    max_unready_share: float = 0.55
    # What the agent may take past `stop_after` to begin its stop (its reconcile pass, a late
    # event loop) on top of the stop grace.
    self_fence_margin_s: float = 5.0
    # Not READY this long: GONE, and left out of the brake's share (`--gone-after`).
    gone_after_s: float = 24 * 3600.0


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
class Fence:
    """A lost host to fence: its service instances are tombstoned (if not yet), and those in
    `self_fenced` are from now on counted as stopped by their agent. Written only if the host
    is still down since `down_since` with no heartbeat after `last_heartbeat`."""

    host: str
    down_since: datetime
    last_heartbeat: datetime | None
    self_fenced: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    transitions: tuple[Transition, ...] = ()
    fence: tuple[Fence, ...] = ()  # lost hosts whose service instances are fenced
    wait_s: float | None = None  # a new leader: judge nothing for this long yet
    brake: Brake | None = None  # engaged: nothing is fenced
    down: int = 0  # hosts not READY after this decision, GONE ones left out
    gone: int = 0  # hosts GONE (left out of the brake's share)


def self_fence_due(
    last_heartbeat: datetime, inst: SelfFencing, *, now: datetime, margin_s: float
) -> bool:
    """Whether the agent has stopped the instance by itself by `now`: it stops it once it has
    had no recorded heartbeat for `stop_after` (it counts from the sending of its last
    acknowledged heartbeat, never later than its recording), and the stop takes at most the
    stop grace; `margin_s` covers its reaction."""
    allowed_s = inst.stop_after_s + inst.stop_grace_s + margin_s
    return (now - last_heartbeat).total_seconds() > allowed_s


def judge(
    hosts: Iterable[HostFacts],
    *,
    now: datetime,
    term_age_s: float,
    timings: Timings,
    fleet_size: int | None = None,
    braked: bool = False,
    released_at: datetime | None = None,
) -> Decision:
    """Which hosts change state and which are fenced now. `hosts` may leave out READY hosts
    that heartbeated within the grace (they keep their state); `fleet_size` counts every host
    (None: `hosts` is the whole fleet). `braked`: the brake held at the last pass;
    `released_at`: when it last let go. Hosts silent while it held are fenced only
    `reschedule_after` past its release: after a partition heals its hosts come back one by
    one, and the last ones are not fenced the moment the first ones make the share fall."""
    if term_age_s < timings.grace_s:
        return Decision(wait_s=timings.grace_s - term_age_s)
    hosts = list(hosts)
    transitions: list[Transition] = []
    fence: list[Fence] = []
    down = long_gone = 0
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
        if state is HostState.READY:
            continue
        if gone(state, since, now=now, gone_after_s=timings.gone_after_s):
            long_gone += 1
        else:
            down += 1
        if (now - since).total_seconds() <= timings.reschedule_after_s:
            continue
        heard = h.last_heartbeat or h.state_since
        due = tuple(
            i.instance_id
            for i in h.self_fencing
            if self_fence_due(heard, i, now=now, margin_s=timings.self_fence_margin_s)
        )
        if h.has_service_instances or due:
            fence.append(Fence(h.name, since, h.last_heartbeat, due))
    size = len(hosts) if fleet_size is None else max(fleet_size, len(hosts))
    brake = brake_beside_gone(down, long_gone, size, max_share=timings.max_unready_share)
    if brake is None and braked:
        released_at = now  # it lets go in this pass
    if released_at is not None:
        fence = [
            f
            for f in fence
            if after_release(f.down_since, released_at, now=now, wait_s=timings.reschedule_after_s)
        ]
    return Decision(
        transitions=tuple(transitions),
        fence=() if brake is not None else tuple(fence),
        brake=brake,
        down=down,
        gone=long_gone,
    )


def _gone_left_out(n: int) -> str:
    return f"; {n} GONE host(s) left out" if n else ""


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
        last_heartbeat: datetime | None = None,
        self_fenced: Sequence[str] = (),
    ) -> int:
        """Fences the host's instances of `kinds` if it is still down since `down_since` and
        marks `self_fenced` as stopped by their agent if it has not heartbeated since
        `last_heartbeat`; returns the instances newly fenced."""
        ...

    async def record_brake(self, engaged: bool, message: str, *, epoch: int | None) -> None:
        """Records the mass-failure brake engaging or releasing (an event)."""
        ...


class HostSource(Protocol):
    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        """Every host's facts, as last read; with `silent_before`, only those of hosts not
        READY or READY without a heartbeat after it (the others `judge` leaves as they are)."""
        ...

    def host_count(self) -> int:
        """How many hosts there are."""
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
        # Whether the brake was engaged at the last pass whose event was recorded (a new
        # leader starts released: an engaged brake is recorded again by whoever leads).
        self._braked = False
        # When it last let go (database time): hosts silent while it held get a fresh
        # reschedule-after from then (`judge`).
        self._released_at: datetime | None = None

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
        decision = judge(
            hosts,
            now=now,
            term_age_s=watched_s,
            timings=self._timings,
            fleet_size=self._hosts.host_count(),
            braked=self._braked,
            released_at=self._released_at,
        )
        if decision.wait_s is not None:
            return requeue_after(decision.wait_s, idle=True)
        written = await self._store.record_liveness(decision.transitions, epoch=term.epoch)
        for t in written:
            log.warning("host stopped heartbeating", host=t.host, state=t.to.value)
        for _ in range(len(decision.transitions) - len(written)):
            # Judged on a heartbeat the cache had not read yet: the host spoke since.
            self._metrics.count_stale_write(self.name)
        await self._brake(decision, now=now, epoch=term.epoch)
        fenced = 0
        for f in decision.fence:
            n = await self._store.fence_host(
                f.host,
                [Kind.SERVICE],
                epoch=term.epoch,
                down_since=f.down_since,
                last_heartbeat=f.last_heartbeat,
                self_fenced=f.self_fenced,
            )
            self._metrics.count_changes(Change.REMOVE, n)
            if n or f.self_fenced:
                # Their workloads are woken by the fence's NOTIFY: the replacements are
                # fresh changes, clocked from this decision.
                log.warning(
                    "fenced instances of an unreachable host",
                    host=f.host,
                    instances=n,
                    self_fenced=len(f.self_fenced),
                )
            fenced += n
        judged = sorted({t.host for t in decision.transitions} | {f.host for f in decision.fence})
        if judged:
            # What was written, or what refused it, is read now rather than at the next
            # notification: the next pass judges from it.
            await self._hosts.refresh_hosts(judged)
        return requeue_after(self._interval_s, idle=not written and not fenced)

    async def _brake(self, decision: Decision, *, now: datetime, epoch: int | None) -> None:
        """Sets the brake's gauges; records its engaging and its release once each."""
        brake = decision.brake
        size = self._hosts.host_count() - decision.gone
        share = decision.down / size if size else float(brake is not None)
        self._metrics.set_liveness_brake(brake is not None, share)
        max_share = self._timings.max_unready_share
        if brake is not None and not self._braked:
            message = (
                f"{brake.describe(max_share)}{_gone_left_out(decision.gone)}: fencing and "
                "replacing paused; the fault is more "
                "likely on the control plane's side of the network "
                "(runbooks/alerts/KeelMassHostFailure.md)"
            )
            await self._store.record_brake(True, message, epoch=epoch)
            self._braked = True
            log.error("mass host failure: fencing paused", down=brake.down, hosts=brake.hosts)
        elif brake is None and self._braked:
            message = (
                f"{decision.down} of {size} hosts are not READY (at most {max_share:.0%} with "
                f"one READY{_gone_left_out(decision.gone)}): fencing resumed; a host still not "
                f"READY is fenced {self._timings.reschedule_after_s:g}s (--reschedule-after) "
                "from now"
            )
            await self._store.record_brake(False, message, epoch=epoch)
            self._braked = False
            self._released_at = now
            log.warning("mass host failure over: fencing resumed", down=decision.down, hosts=size)
