"""The one table of who may call what (`controlplane.auth.REQUIRED`) covers every RPC and
gives each role what the operator guide says."""

from __future__ import annotations

import pytest

from controlplane.auth import OPEN_SERVICES, REQUIRED, permits
from keel.v1 import agent_pb2, fleet_pb2

SERVICES = [
    fleet_pb2.DESCRIPTOR.services_by_name["FleetService"],
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
]
EVERY_METHOD = sorted(f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods)


def test_every_rpc_has_a_row() -> None:
    """A new RPC without a row would be refused to everyone: add it to REQUIRED."""
    assert sorted(REQUIRED) == EVERY_METHOD


def test_health_and_reflection_are_open() -> None:
    assert "/grpc.health.v1.Health/" in OPEN_SERVICES
    assert "/grpc.reflection.v1alpha.ServerReflection/" in OPEN_SERVICES


# What each role may do, as the operator guide (README) lists it.
ROLES = {
    "viewer": {
        "GetWorkload", "ListWorkloads", "GetHost", "ListHosts", "GetInstance", "ListInstances",
        "ListStuck", "ListEvents", "GetLogs", "PlanDrain", "GetOperation", "ListOperations",
        "WatchOperation", "GetRolloutHistory", "GetRolloutStatus", "GetFreeze",
    },
    "operator": {
        "ApplyWorkload", "DeleteWorkload", "Cordon", "Uncordon", "Drain", "CancelOperation",
        "DeleteHost", "PauseRollout", "ResumeRollout", "UndoRollout", "PromoteRollout",
        "AbortRollout", "Freeze", "Unfreeze",
    },
    "admin": {"CreateToken", "ListTokens", "RevokeToken", "ResetHostCredential"},
}  # fmt: skip
LADDER = ("viewer", "operator", "admin")


@pytest.mark.parametrize("role", [*LADDER, "join", "host"])
def test_each_role_may_call_exactly_what_it_should(role: str) -> None:
    """viewer < operator < admin, each with the ones below; join only Join; host only Sync."""
    allowed = {m.rsplit("/", 1)[1] for m, need in REQUIRED.items() if permits(need, role)}
    if role in LADDER:
        expected = set().union(*(ROLES[r] for r in LADDER[: LADDER.index(role) + 1]))
    else:
        expected = {"join": {"Join"}, "host": {"Sync"}}[role]
    assert allowed == expected


def test_a_host_credential_cannot_call_fleet_service() -> None:
    fleet = [m for m in REQUIRED if m.startswith("/keel.v1.FleetService/")]
    assert fleet and not any(permits(REQUIRED[m], "host") for m in fleet)
