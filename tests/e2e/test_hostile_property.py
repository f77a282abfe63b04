"""Property: no generated hostile input makes a running control plane answer UNKNOWN or
INTERNAL, leak its internals, or change its database.

Every FleetService RPC (each request field filled with hostile strings and integers, or the
request replaced by arbitrary bytes; ApplyWorkload also gets valid manifests with one field
made hostile, and duplicate keys) and the Sync stream's Hello (one field made hostile) are
sent to the real control plane. Each answer must carry a clear code; an INVALID_ARGUMENT must
name the field (the one made hostile where the test knows it); and the database must be
exactly as before. Hypothesis runs derandomized with a bounded number of examples, so the run
is the same every time and takes seconds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from harness import Fleet
from hostile import FLEET, Answer, Database, call, database, hello, sync_first
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.v1 import fleet_pb2

pytestmark = pytest.mark.e2e

EXAMPLES = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,  # derandomized: nothing worth keeping between runs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
LEAKS = re.compile(r"Traceback|File \"|Error\(|Exception|asyncpg|psycopg|SELECT |INSERT |UPDATE ")
# A field name as messages start with it: `name`, `spec.env.A`, `hello.labels.'a\x00'`.
FIELD = re.compile(r"^[^\s:]+(?: [^\s:]+)?:")


@pytest.fixture(scope="module")
def db(quiet_fleet: Fleet) -> Iterator[Database]:
    assert quiet_fleet.database_url is not None
    with database(quiet_fleet.database_url) as d:
        yield d


@pytest.fixture(scope="module")
def channel(quiet_fleet: Fleet) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(quiet_fleet.address) as ch:
        yield ch


def check(answer: Answer, *, fields: tuple[str, ...] | None) -> None:
    """A clear code, no internals; INVALID_ARGUMENT names one of fields (any field if None)."""
    assert answer.code not in NEVER, answer
    assert not LEAKS.search(answer.details), answer
    if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert FIELD.match(answer.details), f"no field named: {answer}"
        if fields is not None:
            assert answer.details.startswith(fields), f"expected one of {fields}: {answer}"


# --------------------------------------------------------------------------- strategies

SPECIAL_TEXT = [
    "",
    "web",
    "Web",
    "-web",
    "web-",
    "a" * 64,
    "h" * 254,
    "x" * 9000,
    "web\x00",
    "\x00",
    "line\nbreak",
    "\u202eevil",
    "é",
    "../../etc/passwd",
    "'; DROP TABLE workload; --",
    "%s%n",
    "${KEEL_HOST}",
    "workload/web",
    "instance/(.*)",
    "host/a" + "b" * 300,
]
text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40))
int32 = st.one_of(
    st.sampled_from([-(2**31), -1, 0, 1, 10**6, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1)
)
int64 = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 2**62, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1)
)


def _field_value(field: Any) -> st.SearchStrategy[Any]:
    if field.type == field.TYPE_STRING:
        return text
    if field.type == field.TYPE_BOOL:
        return st.booleans()
    if field.type in (field.TYPE_INT32, field.TYPE_SINT32):
        return int32
    return int64


@st.composite
def request_of(draw: st.DrawFn, method: str) -> tuple[bytes, tuple[str, ...] | None]:
    """(request bytes, the fields an INVALID_ARGUMENT may name)."""
    desc = FLEET.methods_by_name[method]
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64)), None  # any bytes: decodable or not
    cls = getattr(fleet_pb2, desc.input_type.name)
    msg = cls()
    for field in desc.input_type.fields:
        setattr(msg, field.name, draw(_field_value(field)))
    return msg.SerializeToString(), None


# Valid manifest, and values invalid wherever they are put in it.
BASE: dict[str, Any] = {
    "name": "prop",
    "kind": "service",
    "replicas": 1,
    "selector": {"role": "web"},
    "deadline": "60s",
    "spec": {
        "command": ["sleep", "100"],
        "env": {"GREETING": "hello"},
        "ports": ["http"],
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "health": {"tcp": "http"},
        "stop_grace": "2s",
        "min_ready": "1s",
    },
}
PATHS = [
    "name",
    "kind",
    "replicas",
    "max_surge",
    "selector",
    "selector.role",
    "deadline",
    "spec",
    "spec.command",
    "spec.command[0]",
    "spec.env",
    "spec.env.GREETING",
    "spec.resources",
    "spec.resources.cpu",
    "spec.resources.memory",
    "spec.health",
    "spec.stop_grace",
]
with_nul = st.tuples(st.text(max_size=20), st.text(max_size=20)).map(lambda p: f"{p[0]}\x00{p[1]}")
deep = st.integers(17, 200).map(lambda n: json.loads("[" * n + "]" * n))
hostile_json = st.one_of(
    with_nul,
    st.integers(min_value=10**12),
    st.integers(max_value=-1),
    st.booleans(),
    deep,
    st.just(math.nan),
)


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.replace("[0]", ".0").split(".")
    node: Any = doc
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


@st.composite
def manifest(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...] | None]:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # any text at all
        body = draw(text)
        fields: tuple[str, ...] | None = None
    elif kind == 1:  # a key given twice
        key = draw(st.sampled_from(sorted(BASE)))
        rest = json.dumps(BASE)[1:]
        body = "{" + json.dumps(key) + ": " + json.dumps(BASE[key]) + ", " + rest
        fields = (key,)
    else:  # one field made hostile
        path = draw(st.sampled_from(PATHS))
        value = draw(hostile_json)
        doc = json.loads(json.dumps(BASE))
        _put(doc, path, value)
        body = json.dumps(doc)
        nan_or_deep = isinstance(value, float | list)
        fields = ("manifest_json",) if nan_or_deep else (path,)
    request = fleet_pb2.ApplyWorkloadRequest(manifest_json=body)
    return request.SerializeToString(), fields


@st.composite
def hostile_hello(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    which = draw(
        st.sampled_from(["host", "labels", "cpu_millis", "memory_mib", "agent_version", "revision"])
    )
    if which == "host":
        value: Any = draw(
            st.one_of(
                with_nul,
                st.text(max_size=20).map(lambda t: "Upper" + t),
                st.integers(254, 9000).map(lambda n: "h" * n),
                st.sampled_from(["", "-h", "h-", "h h", "h/1"]),
            )
        )
        field = "hello.host"
    elif which == "labels":
        value = draw(
            st.one_of(
                st.tuples(with_nul, st.just("v")).map(lambda kv: {kv[0]: kv[1]}),
                st.tuples(st.just("k"), with_nul).map(lambda kv: {kv[0]: kv[1]}),
                st.integers(254, 2000).map(lambda n: {"k" * n: "v"}),
                st.integers(254, 2000).map(lambda n: {"k": "v" * n}),
                st.sampled_from([{"a b": "v"}, {"k": "two\nlines"}, {"": "v"}]),
                st.integers(65, 200).map(lambda n: {f"k{i}": "v" for i in range(n)}),
            )
        )
        field = "hello.labels"
    elif which in ("cpu_millis", "memory_mib"):
        value = draw(st.one_of(st.integers(-(2**63), -1), st.integers(10**15, 2**63 - 1)))
        field = f"hello.capacity.{which}"
    elif which == "agent_version":
        value = draw(st.one_of(with_nul, st.integers(129, 5000).map(lambda n: "v" * n)))
        field = "hello.agent_version"
    else:
        value = draw(st.integers(-(2**63), -1))
        field = "hello.revision"
    return hello(**{which: value}), (field,)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("method", sorted(FLEET.methods_by_name))
def test_no_fleet_rpc_answers_unknown_leaks_or_writes_for_hostile_input(
    method: str, channel: grpc.Channel, db: Database
) -> None:
    """Generated requests to one RPC: clear codes, fields named, database unchanged."""

    @EXAMPLES
    @given(case=manifest() if method == "ApplyWorkload" else request_of(method))
    def prop(case: tuple[bytes, tuple[str, ...] | None]) -> None:
        request, fields = case
        before = db.snapshot()
        answer = call(channel, method, request, timeout=10)
        check(answer, fields=fields)
        if method == "ApplyWorkload" and fields is not None:
            assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
        assert db.snapshot() == before, f"{method} changed the database: {answer}"

    prop()


def test_no_hostile_hello_is_accepted_leaks_or_writes(channel: grpc.Channel, db: Database) -> None:
    """Generated Hellos with one bad field: INVALID_ARGUMENT naming it, no host registered."""

    @EXAMPLES
    @given(case=hostile_hello())
    def prop(case: tuple[bytes, tuple[str, ...]]) -> None:
        first, fields = case
        before = db.snapshot()
        answer = sync_first(channel, first, timeout=10)
        check(answer, fields=fields)
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
        assert db.snapshot() == before

    prop()


def test_arbitrary_bytes_opening_a_sync_stream_are_refused_cleanly(
    channel: grpc.Channel, db: Database
) -> None:
    """Any bytes as the first stream message: a clear code, nothing registered unless valid."""

    @EXAMPLES
    @given(first=st.binary(max_size=64))
    def prop(first: bytes) -> None:
        before = db.snapshot()
        answer = sync_first(channel, first, timeout=10)
        check(answer, fields=None)
        if answer.code != grpc.StatusCode.OK:
            assert db.snapshot() == before

    prop()
