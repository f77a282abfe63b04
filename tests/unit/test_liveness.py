"""The liveness rule: when a host becomes NOT_READY, then UNKNOWN, and when it is fenced (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.brake import Brake, brake_of
from controlplane.errors import Unavailable
from controlplane.liveness import (
    KEY,
    Decision,
    Fence,
    HostFacts,
    LivenessController,
    SelfFencing,
    Timings,
    Transition,
    judge,
    self_fence_due,
)
from controlplane.metrics import Metrics
from controlplane.reconcile import Term
from keel.model import HostState, Kind

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TIMINGS = Timings(grace_s=40, unknown_after_s=60, reschedule_after_s=300)
LEADING_FOR_S = 3600.0
# The one-host cases are judged as one host of a large fleet, so the brake stays released.
FLEET = 10

READY, NOT_READY, UNKNOWN = HostState.READY, HostState.NOT_READY, HostState.UNKNOWN


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def host(
    state: HostState = READY,
    *,
    since_s: float = 3600,
    heartbeat_s: float | None = 1,
    services: bool = True,
    self_fencing: tuple[SelfFencing, ...] = (),
    name: str = "host-1",
) -> HostFacts:
    return HostFacts(
        name=name,
        state=state,
        state_since=ago(since_s),
        last_heartbeat=None if heartbeat_s is None else ago(heartbeat_s),
        has_service_instances=services,
        self_fencing=self_fencing,
    )


def fence(h: HostFacts, *self_fenced: str) -> Fence:
    return Fence(h.name, h.state_since, h.last_heartbeat, self_fenced)


def becomes(was: HostFacts, to: HostState, since: datetime) -> Transition:
    return Transition("host-1", was.state, to, since, was.last_heartbeat)


SILENT = host(heartbeat_s=41)
LONG_NOT_READY = host(NOT_READY, since_s=61, heartbeat_s=101)
DOWN_PAST_RESCHEDULE = host(UNKNOWN, since_s=301, heartbeat_s=341)

CASES = [
    pytest.param(host(), Decision(), id="heartbeating host stays READY"),
    pytest.param(host(heartbeat_s=40), Decision(), id="silent exactly the grace: still READY"),
    pytest.param(
        SILENT,
        Decision(transitions=(becomes(SILENT, NOT_READY, NOW),)),
        id="silent past the grace: NOT_READY from now",
    ),
    pytest.param(
        host(heartbeat_s=None, since_s=50),
        Decision(transitions=(becomes(host(heartbeat_s=None, since_s=50), NOT_READY, NOW),)),
        id="never heartbeated: silent since it became READY",
    ),
    pytest.param(host(NOT_READY, since_s=60, heartbeat_s=100), Decision(), id="NOT_READY 60s"),
    pytest.param(
        LONG_NOT_READY,
        Decision(transitions=(becomes(LONG_NOT_READY, UNKNOWN, ago(61)),)),
        id="NOT_READY past unknown-after: UNKNOWN, keeping since",
    ),
    pytest.param(host(UNKNOWN, since_s=200, heartbeat_s=240), Decision(), id="UNKNOWN stays"),
    pytest.param(
        DOWN_PAST_RESCHEDULE,
        Decision(fence=(fence(DOWN_PAST_RESCHEDULE),)),
        id="not READY past reschedule-after: fenced",
    ),
    pytest.param(
        host(UNKNOWN, since_s=301, heartbeat_s=341, services=False),
        Decision(),
        id="nothing left to fence: no fence",
    ),
    pytest.param(
        host(UNKNOWN, since_s=300, heartbeat_s=340), Decision(), id="exactly reschedule-after"
    ),
    pytest.param(
        host(heartbeat_s=3600),
        Decision(transitions=(becomes(host(heartbeat_s=3600), NOT_READY, NOW),)),
        id="silent for an hour: NOT_READY now, not fenced in the same pass",
    ),
]


@pytest.mark.parametrize(("facts", "expected"), CASES)
def test_liveness_rule(facts: HostFacts, expected: Decision) -> None:
    """One host's facts in database time give its transition and whether it is fenced."""
    got = judge([facts], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=FLEET)
    assert (got.transitions, got.fence, got.brake) == (expected.transitions, expected.fence, None)


# Self-fencing: stop_after 30s, stop grace 10s, margin 5s: presumed stopped past 45s of silence.
WEB = SelfFencing("web-1", stop_after_s=30, stop_grace_s=10)


@pytest.mark.parametrize(
    ("silent_s", "due"),
    [(10, False), (30, False), (45, False), (46, True), (3600, True)],
    ids=["just-silent", "at-stop-after", "at-the-margin", "past-it", "an-hour"],
)
def test_self_fence_is_due_after_stop_after_grace_and_margin(silent_s: float, due: bool) -> None:
    """An instance is presumed stopped by its agent only once stop_after, its stop grace and
    the margin have all passed since the host's last heartbeat."""
    assert self_fence_due(ago(silent_s), WEB, now=NOW, margin_s=5) is due


SELF_TIMINGS = Timings(grace_s=40, unknown_after_s=60, reschedule_after_s=20, self_fence_margin_s=5)


@pytest.mark.parametrize(
    ("facts", "self_fenced"),
    [
        (host(NOT_READY, since_s=25, heartbeat_s=40, self_fencing=(WEB,)), ()),
        (host(NOT_READY, since_s=25, heartbeat_s=46, self_fencing=(WEB,)), ("web-1",)),
        (host(NOT_READY, since_s=15, heartbeat_s=60, self_fencing=(WEB,)), None),
    ],
    ids=["fenced-not-yet-self-stopped", "fenced-and-self-stopped", "not-fenced-before-reschedule"],
)
def test_fence_marks_instances_past_their_self_fencing_time(
    facts: HostFacts, self_fenced: tuple[str, ...] | None
) -> None:
    """The fence names the instances whose agent has stopped them by now; none before the
    host is past reschedule-after."""
    got = judge([facts], now=NOW, term_age_s=LEADING_FOR_S, timings=SELF_TIMINGS, fleet_size=10)
    assert got.fence == (() if self_fenced is None else (fence(facts, *self_fenced),))


@pytest.mark.parametrize(
    ("down", "hosts", "engaged"),
    [
        (0, 0, False),
        (0, 5, False),
        (1, 1, True),
        (1, 2, False),
        (2, 3, True),
        (5, 10, False),
        (6, 10, True),
        (10, 10, True),
        (55, 100, False),
        (56, 100, True),
    ],
    ids=[
        "no-hosts",
        "all-ready",
        "the-only-host-down",
        "half-of-two",
        "two-of-three",
        "half-of-ten",
        "six-of-ten",
        "all-of-ten",
        "exactly-the-share",
        "just-past-the-share",
    ],
)
def test_brake_engages_past_the_share_or_with_none_ready(
    down: int, hosts: int, engaged: bool
) -> None:
    """More than 55% of the hosts not READY, or none READY: the brake holds."""
    assert (brake_of(down, hosts, max_share=0.55) is not None) is engaged


def test_brake_fences_nothing_while_most_hosts_are_silent() -> None:
    """Every host silent past reschedule-after: nothing is fenced, the states still change."""
    hosts = [
        host(UNKNOWN, since_s=301, heartbeat_s=341, name=f"h{n}", self_fencing=(WEB,))
        for n in range(3)
    ]
    got = judge(hosts, now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=3)
    assert (got.fence, got.brake, got.down) == ((), Brake(3, 3), 3)
    # One host back: 2 of 3 still down, above 55%: still held.
    got = judge(hosts[:2], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=3)
    assert (got.fence, got.brake) == ((), Brake(2, 3))
    # Two back: one of three down is a host failure, not a partition: it is fenced.
    got = judge(hosts[:1], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=3)
    assert got.brake is None and [f.host for f in got.fence] == ["h0"]


DAY_S = 24 * 3600.0


def test_hosts_gone_for_days_do_not_make_the_brake_hold() -> None:
    """Five of ten hosts GONE (not READY for longer than --gone-after) and never removed: one
    more host lost is one of five, a host failure, so it is fenced. Counted with the gone
    ones it would be six of ten, and the brake would hold its instances forever."""
    long_dead = [host(UNKNOWN, since_s=3 * DAY_S, heartbeat_s=3 * DAY_S, name=f"dead{n}")
                 for n in range(5)]  # fmt: skip
    lost = host(UNKNOWN, since_s=301, heartbeat_s=341, name="lost")
    got = judge([*long_dead, lost], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                fleet_size=10)  # fmt: skip
    assert (got.brake, got.down, got.gone) == (None, 1, 5)
    assert "lost" in [f.host for f in got.fence]


def test_a_partition_beside_gone_hosts_still_brakes() -> None:
    """Three of the five hosts that are not GONE go silent at once: 60% of those that count,
    past the share, so nothing is fenced."""
    long_dead = [host(UNKNOWN, since_s=3 * DAY_S, heartbeat_s=3 * DAY_S, name=f"dead{n}")
                 for n in range(5)]  # fmt: skip
    silent = [host(UNKNOWN, since_s=301, heartbeat_s=341, name=f"cut{n}") for n in range(3)]
    got = judge([*long_dead, *silent], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                fleet_size=10)  # fmt: skip
    assert (got.fence, got.brake, got.gone) == ((), Brake(3, 5), 5)


def test_with_no_host_ready_the_brake_holds_however_long_they_are_gone() -> None:
    """A partition longer than --gone-after leaves every host GONE: with not one READY, the
    brake still holds (fencing everything would replace nothing and stop it all on return)."""
    hosts = [host(UNKNOWN, since_s=2 * DAY_S, heartbeat_s=2 * DAY_S, name=f"h{n}")
             for n in range(3)]  # fmt: skip
    got = judge(hosts, now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=3)
    assert (got.fence, got.brake, got.gone) == ((), Brake(3, 3), 3)


def test_hosts_silent_while_the_brake_held_get_a_fresh_reschedule_after_its_release() -> None:
    """A partition heals host by host: the moment two of three are back the share falls and
    the brake lets go, but the third (silent past --reschedule-after, all of it under the
    brake) is not fenced then: it gets --reschedule-after from the release. A host that went
    down after the release counts from its own start."""
    straggler = host(UNKNOWN, since_s=400, heartbeat_s=440, name="h0")
    back = [host(READY, name=f"h{n}") for n in (1, 2)]
    released = judge([straggler, *back], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                     braked=True)  # fmt: skip
    assert (released.brake, released.fence) == (None, ())
    later = judge([straggler, *back], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                  released_at=ago(100))  # fmt: skip
    assert later.fence == ()
    due = judge([straggler, *back], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                released_at=ago(301))  # fmt: skip
    assert [f.host for f in due.fence] == ["h0"]
    fresh = host(UNKNOWN, since_s=301, heartbeat_s=341, name="h0")
    own = judge([fresh, *back], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS,
                released_at=ago(400))  # fmt: skip
    assert [f.host for f in own.fence] == ["h0"]


def test_a_new_leader_judges_no_one_for_one_grace() -> None:
    """Agents get one grace period to reconnect to a new leader: nothing changes until then."""
    decision = judge([SILENT, DOWN_PAST_RESCHEDULE], now=NOW, term_age_s=10, timings=TIMINGS)
    assert decision == Decision(wait_s=30)


def test_hosts_are_judged_each_on_its_own_facts() -> None:
    """Several hosts in one pass: each gets its own decision, in the order given."""
    a = HostFacts("a", READY, ago(3600), ago(41), True)
    b = HostFacts("b", READY, ago(3600), ago(1), True)
    c = HostFacts("c", UNKNOWN, ago(400), ago(440), True)
    decision = judge([a, b, c], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS, fleet_size=5)
    assert decision == Decision(
        transitions=(Transition("a", READY, NOT_READY, NOW, ago(41)),),
        fence=(Fence("c", ago(400), ago(440)),),
        down=2,
    )


class _Store:
    """Database time and the writes, or the database away; the hosts' facts as the cache
    holds them."""

    def __init__(self) -> None:
        self.away = False
        self.written: list[Transition] = []
        self.refreshed: list[str] = []
        self.brakes: list[tuple[bool, str]] = []

    async def now(self) -> datetime:
        if self.away:
            raise Unavailable("the database is away")
        return NOW

    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        return [SILENT]

    def host_count(self) -> int:
        return FLEET

    async def record_brake(self, engaged: bool, message: str, *, epoch: int | None) -> None:
        self.brakes.append((engaged, message))

    async def refresh_hosts(self, names: Sequence[str] | None = None) -> None:
        self.refreshed += names or []

    async def record_liveness(
        self, transitions: Sequence[Transition], *, epoch: int | None
    ) -> list[Transition]:
        self.written += transitions
        return list(transitions)

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
        return 0


async def test_after_a_database_outage_hosts_get_one_grace_before_they_are_judged() -> None:
    """Heartbeats that came while the database was away were never recorded: a host silent by
    the database's word is not marked NOT_READY until one grace after the database is back."""
    clock = [10_000.0]
    term = Term(epoch=1, started_at=0.0, clock=lambda: clock[0])
    store = _Store()
    controller = LivenessController(
        store, hosts=store, timings=TIMINGS, interval_s=1.0, metrics=Metrics()
    )
    store.away = True
    with pytest.raises(Unavailable):
        await controller.reconcile(KEY, term=term)
    store.away = False
    clock[0] += 5
    waiting = await controller.reconcile(KEY, term=term)
    assert waiting.requeue_after_s == TIMINGS.grace_s and store.written == []
    clock[0] += TIMINGS.grace_s
    await controller.reconcile(KEY, term=term)
    assert [t.to for t in store.written] == [NOT_READY]


class _OneHostStore(_Store):
    """A fleet of one host, silent past reschedule-after, until it is back."""

    def __init__(self) -> None:
        super().__init__()
        self.facts = [DOWN_PAST_RESCHEDULE]
        self.fenced: list[str] = []

    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        return self.facts

    def host_count(self) -> int:
        return 1

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
        self.fenced.append(host)
        return 1


async def test_the_brake_is_recorded_once_when_it_engages_and_once_when_it_lets_go() -> None:
    """With no host READY nothing is fenced; the pause and the resume are one event each, and
    the gauges say so."""
    store = _OneHostStore()
    metrics = Metrics()
    term = Term(epoch=1, started_at=0.0, clock=lambda: 10_000.0)
    controller = LivenessController(
        store, hosts=store, timings=TIMINGS, interval_s=1.0, metrics=metrics
    )
    for _ in range(3):
        await controller.reconcile(KEY, term=term)
    assert store.fenced == []
    [(engaged, message)] = store.brakes
    assert engaged and message.startswith("1 of 1 hosts are not READY (100%")
    assert "runbooks/alerts/KeelMassHostFailure.md" in message
    assert metrics.liveness_brake._value.get() == 1
    assert metrics.hosts_unready_share._value.get() == 1.0
    store.facts = []  # the host heartbeats again
    await controller.reconcile(KEY, term=term)
    await controller.reconcile(KEY, term=term)
    assert [e for e, _ in store.brakes] == [True, False]
    assert metrics.liveness_brake._value.get() == 0
