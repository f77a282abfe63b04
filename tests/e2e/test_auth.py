"""Fault test: credentials. No token, a wrong one, a revoked one, a role too low, a host's
credential used for another host or for FleetService, the join token used for a host that has a
credential, and a second agent joining an existing host name: each is refused UNAUTHENTICATED
or PERMISSION_DENIED, and the database is exactly as it was (every row of every table and every
sequence, `hostile.Database.snapshot`).

The real control plane and agents (`harness.Fleet`), the agents frozen so that nothing else
writes while the refusals are checked. `MATRIX` is the auth matrix: credential x RPC -> result.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness import Fleet, hold_for, wait_for
from hostile import AGENT, FLEET, Answer, Database, database, hello, sync_first

from keel.v1 import agent_pb2, fleet_pb2

pytestmark = pytest.mark.e2e

# Nothing judges the frozen agents' hosts while the refusals are checked.
SETTLED = ["--liveness-grace", "10m", "--unknown-after", "10m", "--reschedule-after", "10m"]

OK, U, P = "OK", "UNAUTHENTICATED", "PERMISSION_DENIED"
# Allowed, and not called here: it would change the fleet (other tests cover these paths; the
# operator's cordon is done in the fixture, with its token's name as the actor).
ALLOWED = "allowed"
_CODE = {"OK": OK, "U": U, "P": P, "-": ALLOWED}

COLUMNS = (
    "ListHosts", "ApplyWorkload", "DeleteWorkload", "Cordon", "Uncordon", "Drain",
    "CancelOperation", "DeleteHost", "CreateToken", "RevokeToken", "ResetHostCredential",
    "Join host-1", "Join new-host", "Sync host-1", "Sync host-2",
)  # fmt: skip
# credential -> the result of each call in COLUMNS (U: UNAUTHENTICATED, P: PERMISSION_DENIED,
# -: allowed and not called).
MATRIX = {
    "no token":        "U  U U U U U U U  U U U  U U  U U",
    "malformed token": "U  U U U U U U U  U U U  U U  U U",
    "wrong secret":    "U  U U U U U U U  U U U  U U  U U",
    "revoked token":   "U  U U U U U U U  U U U  U U  U U",
    "viewer":          "OK P P P P P P P  P P P  P P  P P",
    "operator":        "OK - - - - - - -  P P P  P P  P P",
    "admin":           "OK - - - - - - -  - - -  P P  P P",
    "join token":      "P  P P P P P P P  P P P  P -  P P",
    "host-1 credential": "P  P P P P P P P  P P P  P P  - P",
}  # fmt: skip

WEB = {
    "name": "web",
    "replicas": 2,
    "spec": {"command": ["sleep", "1000"], "resources": {"cpu": "10m", "memory": "16Mi"}},
}


def _requests() -> dict[str, tuple[str, bytes]]:
    """Each call: (method path, request bytes), each one that would change the fleet if it
    were allowed (Uncordon: host-2 is cordoned; RevokeToken: the viewer token exists)."""
    fleet = f"/{FLEET.full_name}/"
    scaled = json.dumps({**WEB, "replicas": 3})
    calls = {
        "ListHosts": fleet_pb2.ListHostsRequest(),
        "ApplyWorkload": fleet_pb2.ApplyWorkloadRequest(manifest_json=scaled),
        "DeleteWorkload": fleet_pb2.DeleteWorkloadRequest(name="web"),
        "Cordon": fleet_pb2.CordonRequest(hosts=["host-1"]),
        "Uncordon": fleet_pb2.UncordonRequest(hosts=["host-2"]),
        "Drain": fleet_pb2.DrainRequest(hosts=["host-1"]),
        "CancelOperation": fleet_pb2.CancelOperationRequest(id="op-0001"),
        "DeleteHost": fleet_pb2.DeleteHostRequest(name="host-2", force=True),
        "CreateToken": fleet_pb2.CreateTokenRequest(name="intruder", role="admin"),
        "RevokeToken": fleet_pb2.RevokeTokenRequest(name="viewer"),
        "ResetHostCredential": fleet_pb2.ResetHostCredentialRequest(host="host-1"),
    }
    out = {name: (fleet + name, req.SerializeToString()) for name, req in calls.items()}
    agent = f"/{AGENT.full_name}/"
    for host in ("host-1", "new-host"):
        out[f"Join {host}"] = (agent + "Join", agent_pb2.JoinRequest(host=host).SerializeToString())
    for host in ("host-1", "host-2"):
        out[f"Sync {host}"] = (agent + "Sync", hello(host=host, labels={}))
    return out


REQUESTS = _requests()


def call(channel: grpc.Channel, name: str) -> Answer:
    path, request = REQUESTS[name]
    if name.startswith("Sync"):
        return sync_first(channel, request, timeout=10)
    try:
        channel.unary_unary(path)(request, timeout=10)
    except grpc.RpcError as err:
        return Answer(err.code(), err.details() or "")
    return Answer(grpc.StatusCode.OK, "")


@dataclass
class State:
    fleet: Fleet
    db: Database
    tokens: dict[str, str]


def _settled(db: Database) -> bool:
    first = db.snapshot()
    hold_for(lambda: db.snapshot() == first, duration=1.5, interval=0.25, message="no write")
    return True


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory,
    database_factory: Callable[[], AbstractContextManager[str]],
) -> Iterator[State]:
    root = tmp_path_factory.mktemp("auth")
    with (
        database_factory() as url,
        Fleet(root, database_url=url, agents=2, controlplane_args=SETTLED) as f,
        database(url) as db,
    ):
        f.apply_ok(WEB)
        f.wait_running("web", 2)
        tokens = {}
        for role in ("viewer", "operator", "gone"):
            made = f.keelctl_ok(
                "token", "create", "--role", "operator" if role == "gone" else role, "--name", role
            )
            tokens[role] = made.stdout.splitlines()[0]
        f.keelctl_ok("token", "revoke", "gone")
        # The operator's token works for what its role allows, and names the actor.
        operator = f.keelctl("cordon", "host-2", token=tokens["operator"])
        assert operator.returncode == 0, operator.stderr
        cordons = [e for e in f.keelctl_json("events")["events"] if e["kind"] == "HostCordoned"]
        assert [e["actor"] for e in cordons] == ["operator"]

        admin = f.admin_token()
        tokens = {
            "no token": "",
            "malformed token": "not-a-token",
            "wrong secret": admin.split(".")[0] + "." + secrets.token_urlsafe(32),
            "revoked token": tokens["gone"],
            "viewer": tokens["viewer"],
            "operator": tokens["operator"],
            "admin": admin,
            "join token": f.join_token_file.read_text().strip(),
            "host-1 credential": (f.root / "host-1" / "credential").read_text().strip(),
        }
        with f.freeze_agent(1), f.freeze_agent(2):
            wait_for(lambda: _settled(db), timeout=30, message="the database to settle")
            yield State(f, db, tokens)


CASES = [
    (who, column, _CODE[code])
    for who, row in MATRIX.items()
    for column, code in zip(COLUMNS, row.split(), strict=True)
    if _CODE[code] != ALLOWED
]


@pytest.mark.parametrize(("who", "rpc", "expected"), CASES)
def test_auth_matrix_refuses_and_changes_nothing(
    state: State, who: str, rpc: str, expected: str
) -> None:
    """Each credential x call of the matrix gets its code, a message without the token, and
    leaves every row of the database as it was."""
    before = state.db.snapshot()
    token = state.tokens[who]
    with state.fleet.channel(token) as channel:
        answer = call(channel, rpc)
    assert answer.code.name == expected, f"{who} calling {rpc}: {answer}"
    if token:
        assert token not in answer.details and token.split(".")[-1] not in answer.details
    if expected == P and who in ("viewer", "operator") and not rpc.startswith(("Join", "Sync")):
        assert "needs role" in answer.details and "keelctl token create" in answer.details
    assert state.db.snapshot() == before, f"{who} calling {rpc} changed the database: {answer}"


def test_a_second_agent_cannot_take_a_host_over(state: State) -> None:
    """Another machine saying it is host-2, with the join token, is refused at Join: it gets
    no credential, the real host keeps its own, and nothing in the database changes."""
    before = state.db.snapshot()
    impostor = state.fleet.start_agent_as("host-2", "impostor")
    log = state.fleet.logs / "impostor.log"
    wait_for(
        lambda: "already has a credential" in log.read_text(),
        timeout=30,
        message="the impostor's Join refused",
    )
    impostor.stop()
    assert "PERMISSION_DENIED" in log.read_text()
    assert not (state.fleet.root / "impostor" / "credential").exists()
    assert state.tokens["join token"] not in log.read_text()
    assert state.db.snapshot() == before


def test_refusals_are_counted_by_reason_and_no_token_reaches_the_log(state: State) -> None:
    """keel_auth_denied_total counts each kind of refusal; no token or secret is in any log."""
    samples = state.fleet.metrics()

    def denied(reason: str) -> float:
        return samples.get(f'keel_auth_denied_total{{reason="{reason}"}}', 0.0)

    for reason in ("missing", "malformed", "unknown", "revoked", "role", "host"):
        assert denied(reason) > 0, reason
    logs = "".join(p.read_text() for p in Path(state.fleet.logs).glob("*.log"))
    for who, token in state.tokens.items():
        if token and who != "malformed token":
            assert token.split(".")[-1] not in logs, f"the {who}'s secret is in a log"


def test_health_and_reflection_need_no_token(state: State) -> None:
    """Load balancers and grpcurl find the service without a credential."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with state.fleet.channel("") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_request_id_is_one_callers_request(state: State) -> None:
    """Another credential sending the same request id is refused (it would otherwise read the
    first caller's recorded answer); the first caller's retry is answered from the record."""
    f, tokens = state.fleet, state.tokens
    first = f.keelctl("--request-id", "auth-rid-1", "cordon", "host-2", token=tokens["admin"])
    assert first.returncode == 0, first.stderr
    other = f.keelctl("--request-id", "auth-rid-1", "cordon", "host-2", token=tokens["operator"])
    assert other.returncode == 1
    assert "keel-request-id: auth-rid-1 was already used for a different request" in other.stderr
    again = f.keelctl("--request-id", "auth-rid-1", "cordon", "host-2", token=tokens["admin"])
    assert (again.returncode, again.stdout) == (0, first.stdout), again.stderr


def test_a_reset_host_rejoins_with_the_join_token(tmp_path: Path) -> None:
    """After `keelctl host reset-credential`, the host's agent is refused with its old
    credential at its next connection, joins again with the join token, and is READY; the
    old credential no longer works."""
    with Fleet(tmp_path, database_url=None, agents=1, start_timeout=120) as fleet:
        credential = tmp_path / "host-1" / "credential"
        old = credential.read_text().strip()
        reset = fleet.keelctl_ok("host", "reset-credential", "host-1")
        assert "credential revoked" in reset.stdout
        fleet.restart_agent(1)
        wait_for(
            lambda: credential.exists() and credential.read_text().strip() != old,
            timeout=30,
            message="host-1 joined again",
        )
        fleet.wait_hosts_ready()
        with fleet.channel(old) as channel:
            assert call(channel, "Sync host-1").code == grpc.StatusCode.UNAUTHENTICATED
        kinds = [e["kind"] for e in fleet.keelctl_json("events", "--for", "host/host-1")["events"]]
        assert kinds.count("HostJoined") == 2 and "HostCredentialReset" in kinds
