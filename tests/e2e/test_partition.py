"""End-to-end: a network cut between the agents and the control plane (fault 4 of the reliability
issue), through a TCP proxy on loopback in front of each agent's stream (`tcpproxy`).

- One host cut past the reschedule time: as a frozen agent (test_frozen_agent), its instances
  are replaced within replicas + max_surge, and when the cut heals it stops them before it is
  READY; a singleton with `on_disconnect.stop_after` stops by itself on the cut host first, and
  its replacement starts only after that, never two at once.
- A slow network (every chunk 500 ms late each way), below the liveness grace: nothing changes.
- Every host cut past the reschedule time: the mass-failure brake holds (nothing fenced,
  `keel_liveness_brake_engaged` 1, a LivenessPaused event), and when the cut heals nothing
  restarts (same pids), except what chose `on_disconnect.stop_after`: stopped by itself during
  the cut, started again once its agent hears the control plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
from harness import Fleet, hold_for, pids_of, wait_for
from partition import LIVENESS_ARGS, ProcessWatch, event_time, events, place_on
from procs import process_alive
from tcpproxy import TcpProxy
from views import InstanceView

pytestmark = pytest.mark.e2e


class CutFleet:
    """A fleet whose agents reach the control plane through one proxy each."""

    def __init__(self, fleet: Fleet, proxies: dict[int, TcpProxy]) -> None:
        self.fleet = fleet
        self.proxies = proxies

    def cut(self, *hosts: int) -> None:
        for i in hosts or self.proxies:
            self.proxies[i].cut()

    def heal(self, *hosts: int) -> None:
        for i in hosts or self.proxies:
            self.proxies[i].resume()


@pytest.fixture
def cut_fleet(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> Iterator[CutFleet]:
    proxies: dict[int, TcpProxy] = {}
    with ExitStack() as stack:

        def route(i: int, address: str) -> str:
            proxies[i] = stack.enter_context(TcpProxy(address))
            return proxies[i].address

        url = stack.enter_context(database_factory())
        fleet = stack.enter_context(
            Fleet(
                tmp_path,
                database_url=url,
                agents=3,
                controlplane_args=LIVENESS_ARGS,
                agent_route=route,
            )
        )
        yield CutFleet(fleet, proxies)


def _guarded(fleet: Fleet, name: str, stop_after: str, **kwargs: object) -> dict[str, object]:
    """A workload that stops on a host cut off from the control plane for `stop_after`."""
    doc = fleet.manifest(name, **kwargs)
    doc["spec"]["on_disconnect"] = {"stop_after": stop_after}  # type: ignore[index]
    return doc


def _on(fleet: Fleet, workload: str, host: str) -> list[InstanceView]:
    return [i for i in fleet.instances(workload) if i.host == host]


def test_one_host_cut_is_replaced_within_the_surge_and_a_guarded_singleton_never_runs_twice(
    cut_fleet: CutFleet,
) -> None:
    """host-1 cut past the reschedule time: web is replaced within replicas + max_surge; the
    singleton with on_disconnect stops on host-1 by itself before its replacement starts; when
    the cut heals, host-1 stops what was fenced before it is READY."""
    fleet = cut_fleet.fleet
    fleet.apply_ok(fleet.manifest("web", replicas=3, max_surge=1))
    fleet.wait_running("web", 3)
    # stop_after 9 s, past the fence (3 s grace + 4 s): the replacement must wait for it, then
    # for its stop grace (2 s) and the margin (1 s).
    single_doc = _guarded(fleet, "single", "9s", replicas=1, max_surge=0)
    place_on(fleet, "host-1", single_doc, 1)
    [old_web] = _on(fleet, "web", "host-1")
    [old_single] = _on(fleet, "single", "host-1")

    with ProcessWatch(fleet) as watch:
        cut_at = time.time()
        cut_fleet.cut(1)
        # Fenced at about 7 s, but its replacement waits while it may still run.
        wait_for(
            lambda: [i.desired for i in fleet.instances("single")] == ["REMOVED"],
            timeout=20,
            message="the singleton fenced",
        )
        # The cut host stops the singleton by itself, while it is still cut off.
        wait_for(
            lambda: not process_alive(old_single.pid),
            timeout=20,
            message="the singleton stopped by its cut-off agent",
        )
        self_stopped_s = watch.gone_at.get(old_single.pid, time.time()) - cut_at
        # From its last acknowledged heartbeat, at most a heartbeat (500 ms) before the cut.
        assert 8 < self_stopped_s < 12, self_stopped_s

        def replaced() -> bool:
            web = [i for i in fleet.instances("web") if i.desired == "RUNNING"]
            single = [i for i in fleet.instances("single") if i.desired == "RUNNING"]
            return (
                len(web) == 3
                and all(i.host != "host-1" and i.serving for i in web)
                and len(single) == 1
                and single[0].host != "host-1"
                and single[0].serving
            )

        wait_for(replaced, timeout=40, message="web and single replaced off the cut host-1")
        replaced_s = time.time() - cut_at
        assert process_alive(old_web.pid), "web on host-1 was not guarded: it keeps running"
        healed_at = time.time()
        cut_fleet.heal(1)

        def ready_again() -> dict[str, str] | None:
            back = [
                e
                for e in events(fleet, "host/host-1")
                if e["kind"] == "HostReady" and event_time(e).timestamp() > healed_at
            ]
            return back[0] if back else None

        ready = wait_for(ready_again, timeout=30, message="host-1 READY after the cut healed")
        watch.sample()
        gone = watch.gone_at.get(old_web.pid)
        assert gone is not None and gone - 0.1 <= event_time(ready).timestamp(), (gone, ready)
        assert watch.most["web"] <= 3 + 1, watch.most
        assert watch.most["single"] <= 1, watch.most
    print(
        f"fault 4 (one host cut): singleton stopped by its agent {self_stopped_s:.1f}s after the "
        f"cut; web and single replaced {replaced_s:.1f}s after it; host READY "
        f"{event_time(ready).timestamp() - healed_at:.1f}s after the heal; most processes at once: "
        f"{dict(watch.most)}"
    )


def test_every_host_cut_fences_nothing_and_nothing_restarts_when_it_heals(
    cut_fleet: CutFleet,
) -> None:
    """Every host cut past the reschedule time: the brake holds, nothing is fenced, the metric
    and the event say so; when the cut heals the same pids run (the guarded workload excepted:
    it stopped by itself and starts again)."""
    fleet = cut_fleet.fleet
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    fleet.apply_ok(_guarded(fleet, "guarded", "2s", replicas=2))
    before = fleet.wait_running("web", 3)
    guarded_before = fleet.wait_running("guarded", 2)

    with ProcessWatch(fleet) as watch:
        cut_at = time.time()
        cut_fleet.cut()
        wait_for(
            lambda: not any(process_alive(i.pid) for i in guarded_before),
            timeout=15,
            message="the guarded instances stopped by their cut-off agents",
        )

        def braked() -> bool:
            m = fleet.metrics()
            return m.get("keel_liveness_brake_engaged") == 1 and m["keel_hosts_unready_share"] == 1

        wait_for(braked, timeout=20, message="the brake engaged, every host not READY")
        # Past the reschedule time (3 s grace + 4 s): still nothing fenced.
        hold_for(
            lambda: all(i.desired == "RUNNING" for i in fleet.instances()),
            duration=max(0.0, cut_at + 3 + 4 + 2 - time.time()),
            message="nothing fenced while every host is cut",
        )
        assert all(h.state != "READY" for h in fleet.hosts_status())
        paused = [e for e in events(fleet, "fleet/liveness") if e["kind"] == "LivenessPaused"]
        assert len(paused) == 1 and "of 3 hosts are not READY" in paused[0]["message"], paused
        assert "KeelMassHostFailure" in paused[0]["message"]
        assert all(process_alive(i.pid) for i in before)
        healed_at = time.time()
        cut_fleet.heal()
        fleet.wait_hosts_ready()
        recovered_s = time.time() - healed_at
        wait_for(
            lambda: fleet.metrics().get("keel_liveness_brake_engaged") == 0.0,
            timeout=10,
            message="the brake released",
        )
        resumed = [e for e in events(fleet, "fleet/liveness") if e["kind"] == "LivenessResumed"]
        assert resumed, events(fleet, "fleet/liveness")
        after = fleet.wait_running("web", 3)
        assert pids_of(after) == pids_of(before)
        assert all(i.restart_count == 0 for i in after)
        # The guarded ones start again, as the same instances (they were never fenced).
        guarded_after = fleet.wait_running("guarded", 2)
        assert {i.id for i in guarded_after} == {i.id for i in guarded_before}
        assert not [
            e for h in fleet.hosts for e in events(fleet, f"host/{h}") if "Fenced" in e["kind"]
        ]
        assert watch.most["web"] == 3, watch.most
    print(
        f"fault 4 (every host cut): nothing fenced; hosts READY {recovered_s:.1f}s after the "
        f"heal; web pids unchanged; most processes at once: {dict(watch.most)}"
    )


def test_a_slow_network_below_the_grace_changes_nothing(cut_fleet: CutFleet) -> None:
    """Every chunk between agents and control plane 500 ms late each way: hosts stay READY,
    nothing is fenced or restarted, and a change still reaches the agents."""
    fleet = cut_fleet.fleet
    fleet.apply_ok(fleet.manifest("web", replicas=3))
    before = fleet.wait_running("web", 3)
    for proxy in cut_fleet.proxies.values():
        proxy.delay(0.5)
    hold_for(
        lambda: all(h.state == "READY" for h in fleet.hosts_status()),
        duration=3 + 4 + 1,  # past the grace and the reschedule time
        message="every host READY on a slow network",
    )
    fleet.apply_ok(fleet.manifest("web", replicas=4))
    after = fleet.wait_running("web", 4)
    assert {i.id: i.pid for i in after if i.id in pids_of(before)} == pids_of(before)
    assert fleet.metrics().get("keel_liveness_brake_engaged") == 0.0
