"""End-to-end: input a new user or an attacker sends, against the real control plane.

Each case was once UNKNOWN with a Python or Postgres error (or accepted and stored): it must be
INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for an oversized message) naming the field and the
rule, answered at once, and change nothing in the database. A row stored before these rules
existed must not break a listing for every operator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import Fleet, authorized_channel
from hostile import FLEET, Answer, Database, call, database, hello, sync_first

from keel.v1 import agent_pb2, fleet_pb2

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def db(quiet_fleet: Fleet) -> Iterator[Database]:
    assert quiet_fleet.database_url is not None
    with database(quiet_fleet.database_url) as d:
        yield d


@pytest.fixture(scope="module")
def channel(quiet_fleet: Fleet) -> Iterator[grpc.Channel]:
    with authorized_channel(
        quiet_fleet.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as ch:
        yield ch


@pytest.fixture(scope="module")
def agent_channel(quiet_fleet: Fleet) -> Iterator[grpc.Channel]:
    """A channel carrying the credential of a host joined for these tests (good-host)."""
    with authorized_channel(quiet_fleet.address, quiet_fleet.join("good-host")) as ch:
        yield ch


def manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "web",
        "spec": {"command": ["sleep", "100"], "resources": {"cpu": "10m", "memory": "16Mi"}},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return doc


def apply_raw(channel: grpc.Channel, text: str) -> Answer:
    request = fleet_pb2.ApplyWorkloadRequest(manifest_json=text).SerializeToString()
    return call(channel, "ApplyWorkload", request)


def assert_refused(answer: Answer, field: str, rule: str = "") -> None:
    assert answer.code == INVALID, answer
    assert answer.details.startswith(field), answer
    assert rule in answer.details, answer
    for leak in ("Traceback", "Error(", "asyncpg", "SELECT", "INSERT", "DecodeError"):
        assert leak not in answer.details, answer


@pytest.mark.parametrize(
    ("cpu", "memory", "field"),
    [
        ("99999999999999999999999", "16Mi", "spec.resources.cpu"),
        ("10m", "99999999999999999999Ti", "spec.resources.memory"),
    ],
)
def test_a_poison_workload_is_refused_and_listing_still_works(
    quiet_fleet: Fleet, db: Database, cpu: str, memory: str, field: str
) -> None:
    """Resources beyond what int64 holds: INVALID_ARGUMENT naming the field, nothing stored,
    `keelctl get workloads` works."""
    before = db.snapshot()
    doc = quiet_fleet.manifest("poison")
    doc["spec"]["resources"] = {"cpu": cpu, "memory": memory}

    result = quiet_fleet.apply(doc)

    assert result.returncode == 1, result
    assert field in result.stderr and "(INVALID_ARGUMENT)" in result.stderr, result.stderr
    assert db.snapshot() == before
    quiet_fleet.keelctl_ok("get", "workloads")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "we\u0000b"}, "name"),
        ({"spec__env": {"A": "x\u0000y"}}, "spec.env.A"),
        ({"selector": {"role": "w\u0000"}}, "selector.role"),
        ({"spec__command": ["sleep", "\u0000"]}, "spec.command[1]"),
    ],
)
def test_nul_characters_are_refused_naming_the_field(
    channel: grpc.Channel, db: Database, changes: dict[str, Any], field: str
) -> None:
    """A NUL Postgres cannot store: INVALID_ARGUMENT naming where it is, nothing written."""
    before = db.snapshot()
    assert_refused(apply_raw(channel, json.dumps(manifest(**changes))), field, "NUL")
    assert db.snapshot() == before


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("[" * 100_000 + "]" * 100_000, "manifest_json", "levels deep"),
        ('{"name": "a", "name": "b", "spec": {"command": ["x"]}}', "name", "given twice"),
        ('{"name": "web", "spec": {"command": ["x"]}, "replicas": NaN}', "manifest_json", "NaN"),
        (json.dumps(manifest(name="x" * 9000)), "name", "at most 63"),
        (json.dumps(manifest(spec__command=["\ud800"])), "spec.command[0]", "surrogate"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_rule(
    channel: grpc.Channel, db: Database, text: str, field: str, rule: str
) -> None:
    """Deep nesting, duplicate keys, NaN, huge names, bad Unicode: INVALID_ARGUMENT."""
    before = db.snapshot()
    assert_refused(apply_raw(channel, text), field, rule)
    assert db.snapshot() == before


@pytest.mark.parametrize("method", sorted(FLEET.methods_by_name))
def test_undecodable_request_bytes_are_invalid_argument_for_every_rpc(
    channel: grpc.Channel, db: Database, method: str
) -> None:
    """Bytes that are no protobuf message (grpc decodes before the handler): INVALID_ARGUMENT
    naming the request, not UNKNOWN DecodeError."""
    before = db.snapshot()
    request = FLEET.methods_by_name[method].input_type
    # A lone tag of field number 0; a group end without its start; a 5-byte field 1 with 2
    # bytes present; a string field 1 that is not UTF-8.
    garbage = [b"\x00", b"\x0c", b"\x0a\x05ab"]
    if request.fields and request.fields[0].type == request.fields[0].TYPE_STRING:
        garbage.append(b"\x0a\x02\xff\xfe")
    for data in garbage:
        assert_refused(call(channel, method, data), "request", "not a valid")
    assert db.snapshot() == before


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"host": "h" * 8192}, "hello.host", "at most 253"),
        ({"host": "bad\x00host"}, "hello.host", "lowercase"),
        ({"host": ""}, "hello.host", "required"),
        ({"labels": {"role": "a\x00b"}}, "hello.labels.role", "NUL"),
        ({"labels": {"ro\x00le": "a"}}, "hello.labels", "NUL"),
        ({"labels": {f"k{i}": "v" for i in range(100)}}, "hello.labels", "at most 64"),
        ({"agent_version": "1.0\x00"}, "hello.agent_version", "NUL"),
        ({"agent_version": "v" * 1000}, "hello.agent_version", "at most 128"),
        ({"cpu_millis": -5}, "hello.capacity.cpu_millis", ">= 0"),
        ({"memory_mib": 2**62}, "hello.capacity.memory_mib", "<="),
        ({"revision": -1}, "hello.revision", ">= 0"),
    ],
)
def test_a_hostile_hello_is_refused_naming_the_field(
    agent_channel: grpc.Channel, db: Database, fields: dict[str, Any], field: str, rule: str
) -> None:
    """The Sync stream's Hello is checked like any request, before the host is registered."""
    before = db.snapshot()
    assert_refused(sync_first(agent_channel, hello(**fields)), field, rule)
    assert db.snapshot() == before


def test_a_stream_that_does_not_open_with_hello_or_is_undecodable_is_refused(
    agent_channel: grpc.Channel, db: Database
) -> None:
    """A heartbeat first, or bytes that are no AgentMessage: INVALID_ARGUMENT."""
    before = db.snapshot()
    heartbeat = agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()).SerializeToString()
    assert_refused(sync_first(agent_channel, heartbeat), "hello", "must be Hello")
    assert_refused(sync_first(agent_channel, b"\x0a\x05ab"), "request", "not a valid")
    assert db.snapshot() == before


def test_an_oversized_manifest_is_refused_at_once_naming_the_limit(
    quiet_fleet: Fleet, channel: grpc.Channel, db: Database, tmp_path: Path
) -> None:
    """10 MB: keelctl refuses it before reading it as YAML; a raw call is refused by the
    server's message limit; both at once."""
    before = db.snapshot()
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n# " + "x" * (10 * 1024 * 1024) + "\n")
    started = time.monotonic()
    result = quiet_fleet.keelctl("apply", "-f", str(big))
    assert time.monotonic() - started < 5
    assert result.returncode == 2, result
    assert "at most 262144 bytes" in result.stderr, result.stderr

    started = time.monotonic()
    answer = apply_raw(channel, json.dumps(manifest(spec__env={"BIG": "x" * 10_000_000})))
    assert time.monotonic() - started < 5
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, answer
    assert "4194304" in answer.details, answer
    assert db.snapshot() == before


def test_keelctl_refuses_a_key_given_twice(quiet_fleet: Fleet) -> None:
    """keelctl re-encodes the manifest, so it checks duplicates itself, naming the key."""
    result = quiet_fleet.apply("name: a\nname: b\nspec: {command: [sleep, '1']}\n")
    assert result.returncode == 2, result
    assert "name: given twice" in result.stderr, result.stderr


def test_a_stored_row_that_cannot_be_presented_does_not_break_the_list(
    tmp_path: Path, database_factory: Callable[[], AbstractContextManager[str]]
) -> None:
    """A workload stored before the range checks (cpu beyond int64): `keelctl get workloads`
    still lists the others, and the control plane logs which row it left out."""
    with database_factory() as url, Fleet(tmp_path, database_url=url, agents=0) as fleet:
        fleet.apply_ok(fleet.manifest("good", replicas=0))
        with database(url) as db:
            db.execute(
                """INSERT INTO workload (name, kind, replicas, max_unavailable, max_surge,
                                         deadline_ms, spec)
                   VALUES ('poison', 'service', 0, 0, 1, 60000,
                           '{"command": ["x"], "resources":
                             {"cpu_millis": 100000000000000000000000, "memory_mib": 1}}')"""
            )

        listed = [w.name for w in fleet.workloads()]
        assert listed == ["good"]
        lines = [json.loads(x) for x in (fleet.logs / "controlplane.log").read_text().splitlines()
                 if x.startswith("{")]  # fmt: skip
        assert any(x.get("workload") == "poison" and "left out" in x["event"] for x in lines)


# A name rule anchored with `$` also matches before a final "\n" ("web\n" passed every name
# rule once): the rules anchor with \Z, and these keep them so.
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "web\n"}, "name"),
        ({"spec__env": {"A\n": "x"}}, "spec.env"),
        ({"spec__ports": ["http\n"]}, "spec.ports[0]"),
        ({"selector": {"role\n": "web"}}, "selector"),
    ],
)
def test_a_trailing_newline_in_a_manifest_is_refused(
    channel: grpc.Channel, db: Database, changes: dict[str, Any], field: str
) -> None:
    """A name that ends in a line break is no name: INVALID_ARGUMENT, nothing stored."""
    before = db.snapshot()
    answer = apply_raw(channel, json.dumps(manifest(**changes)))
    assert db.snapshot() == before, f"stored: {answer}"
    assert answer.code == INVALID and answer.details.startswith(field), answer


@pytest.mark.parametrize(
    ("method", "message", "field"),
    [
        ("GetWorkload", fleet_pb2.GetWorkloadRequest(name="web\n"), "name"),
        ("GetHost", fleet_pb2.GetHostRequest(name="good-host\n"), "name"),
        ("GetInstance", fleet_pb2.GetInstanceRequest(id="web-1-000000\n"), "id"),
        ("ListEvents", fleet_pb2.ListEventsRequest(object="workload/web\n"), "object"),
    ],
)
def test_a_trailing_newline_in_a_request_name_is_refused(
    channel: grpc.Channel, method: str, message: Any, field: str
) -> None:
    answer = call(channel, method, message.SerializeToString())
    assert answer.code == INVALID and answer.details.startswith(field), answer


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"host": "good-host\n"}, "hello.host"), ({"labels": {"role\n": "a"}}, "hello.labels")],
)
def test_a_trailing_newline_in_a_hello_is_refused(
    agent_channel: grpc.Channel, db: Database, fields: dict[str, Any], field: str
) -> None:
    before = db.snapshot()
    answer = sync_first(agent_channel, hello(**fields))
    assert db.snapshot() == before, f"registered: {answer}"
    assert answer.code == INVALID and answer.details.startswith(field), answer
