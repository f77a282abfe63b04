"""The liveness rule: when a host becomes NOT_READY, then UNKNOWN, and when it is fenced (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.errors import Unavailable
from controlplane.liveness import (
    KEY,
    Decision,
    HostFacts,
    LivenessController,
    Timings,
    Transition,
    judge,
)
from controlplane.metrics import Metrics
from controlplane.reconcile import Term
from keel.model import HostState, Kind

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TIMINGS = Timings(grace_s=40, unknown_after_s=60, reschedule_after_s=300)
LEADING_FOR_S = 3600.0

READY, NOT_READY, UNKNOWN = HostState.READY, HostState.NOT_READY, HostState.UNKNOWN


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def host(
    state: HostState = READY,
    *,
    since_s: float = 3600,
    heartbeat_s: float | None = 1,
    services: bool = True,
) -> HostFacts:
    return HostFacts(
        name="host-1",
        state=state,
        state_since=ago(since_s),
        last_heartbeat=None if heartbeat_s is None else ago(heartbeat_s),
        has_service_instances=services,
    )


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
        Decision(fence=("host-1",)),
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
    assert judge([facts], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS) == expected


def test_a_new_leader_judges_no_one_for_one_grace() -> None:
    """Agents get one grace period to reconnect to a new leader: nothing changes until then."""
    decision = judge([SILENT, DOWN_PAST_RESCHEDULE], now=NOW, term_age_s=10, timings=TIMINGS)
    assert decision == Decision(wait_s=30)


def test_hosts_are_judged_each_on_its_own_facts() -> None:
    """Several hosts in one pass: each gets its own decision, in the order given."""
    a = HostFacts("a", READY, ago(3600), ago(41), True)
    b = HostFacts("b", READY, ago(3600), ago(1), True)
    c = HostFacts("c", UNKNOWN, ago(400), ago(440), True)
    decision = judge([a, b, c], now=NOW, term_age_s=LEADING_FOR_S, timings=TIMINGS)
    assert decision == Decision(
        transitions=(Transition("a", READY, NOT_READY, NOW, ago(41)),), fence=("c",)
    )


class _Store:
    """Database time and the writes, or the database away; the hosts' facts as the cache
    holds them."""

    def __init__(self) -> None:
        self.away = False
        self.written: list[Transition] = []
        self.refreshed: list[str] = []

    async def now(self) -> datetime:
        if self.away:
            raise Unavailable("the database is away")
        return NOW

    def liveness_facts(self, *, silent_before: datetime | None = None) -> list[HostFacts]:
        return [SILENT]

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
