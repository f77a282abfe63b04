"""The workload controller's planner beside a drain: a drain's replacement and the instance it
replaces count as one replica, and a drained host runs no daemon."""

from __future__ import annotations

from drainfleet import host, inst, workload

from controlplane.rollout import plan_workload
from controlplane.scheduler import daemon_hosts, usage_of
from keel.model import Kind, Phase

H1, H2, H3 = "host-1", "host-2", "host-3"


def test_a_replacement_and_the_instance_it_replaces_are_one_replica() -> None:
    """Neither the starting replacement nor the instance it replaces is surplus, and nothing
    more is created: the drain stops the old one when the new one is ready."""
    hosts = {h.name: h for h in (host(H1, schedulable=False), host(H2), host(H3))}
    views = [
        inst("web-a", H1).view,
        inst("web-b", H2).view,
        inst("web-c", H3).view,
        inst("web-r", H2, replaces="web-a", phase=Phase.STARTING).view,
    ]
    plan = plan_workload(workload(), views, hosts, usage_of(views))
    assert plan.empty, plan


def test_without_its_replacement_an_instance_on_a_drained_host_counts_as_before() -> None:
    """Once the replacement is gone (scaled away, say), the old instance is a replica again."""
    hosts = {h.name: h for h in (host(H1, schedulable=False), host(H2), host(H3))}
    views = [inst("web-a", H1).view, inst("web-b", H2).view, inst("web-c", H3).view]
    assert plan_workload(workload(), views, hosts, usage_of(views)).empty


def test_a_drained_host_is_no_daemon_host_and_its_daemon_is_removed() -> None:
    """A cordoned host keeps its daemons; a drained one has them removed and gets none."""
    hosts = {
        H1: host(H1, schedulable=False, drained=True),
        H2: host(H2, schedulable=False),
        H3: host(H3),
    }
    agent = workload("agent", kind=Kind.DAEMON)
    assert daemon_hosts(agent, hosts.values()) == [H2, H3]
    views = [
        inst("agent-1", H1, workload="agent").view,
        inst("agent-2", H2, workload="agent").view,
        inst("agent-3", H3, workload="agent").view,
    ]
    plan = plan_workload(agent, views, hosts, usage_of(views))
    assert (plan.remove, plan.create) == (("agent-1",), ())
