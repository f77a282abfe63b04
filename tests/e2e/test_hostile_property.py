"""Property: no generated hostile input makes a running control plane answer UNKNOWN or
INTERNAL, leak its internals, or change its database, on a fleet that has state to lose.

The fleet: a host with a live agent (fake driver) running two instances of workload `web`, a
host that registered with a bare Hello and left, and the events all that wrote. The agent is
frozen (SIGSTOP) once everything has settled, so nothing but a call under test can write.

Every FleetService RPC gets requests with one field made hostile and the others valid (existing
names where the field names something): variants of existing names (a NUL inside, oversized,
upper case, path or pattern syntax appended), generated text and out-of-range integers; or the
request replaced by arbitrary bytes. ApplyWorkload gets manifests that would update `web` with
one field made hostile (generated values, and plausible ones: resources beyond int64, reserved
env names, duplicate ports, durations out of range), duplicate keys, and any text. The Sync
stream's Hello claims an existing host with one field made hostile. Each answer must carry a
clear code (never UNKNOWN or INTERNAL; UNAVAILABLE neither, since the database is up and that is
how an unexpected failure is answered); an INVALID_ARGUMENT must name the field made hostile;
an input that breaks a rule must be INVALID_ARGUMENT; no message may carry a class name, a
stack or SQL; the database (every row and sequence) must be exactly as before; and the live
agent's stream must never be replaced. Hypothesis runs derandomized with a bounded number of
examples, so the run is the same every time and takes seconds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from harness import Fleet, hold_for, wait_for
from hostile import AGENT, FLEET, Answer, Database, call, database, hello, sync_first
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.fields import shown
from keel.v1 import agent_pb2, fleet_pb2

pytestmark = pytest.mark.e2e

DatabaseFactory = Callable[[], AbstractContextManager[str]]

EXAMPLES = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,  # derandomized: nothing worth keeping between runs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# ApplyWorkload and Hello have the most ways to be wrong.
MORE_EXAMPLES = settings(EXAMPLES, max_examples=200)
# The codes a hostile request may get. UNAVAILABLE is not among them: the database is up, and
# it is what the server answers when a handler fails unexpectedly.
ALLOWED = {
    grpc.StatusCode.OK,
    # A valid Hello naming another host than the credential's (controlplane.auth).
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Internals a message must not carry, looked for once the echoed input is taken out of it.
LEAKS = re.compile(
    r"Traceback|File \"|line \d+, in |<class |object at 0x"
    r"|\b[A-Z][A-Za-z0-9]*(?:Error|Exception|Warning)\b"
    r"|\b(?:builtins|asyncpg|psycopg|grpc|google|controlplane|keel)\.[a-z_]"
    r"|\b(?:SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|VALUES|RETURNING|JOIN)\b"
    r"|duplicate key|violates|relation \"|syntax error at|ERROR:|DETAIL:|SQLSTATE"
)

WORKLOAD = "web"
AGENT_HOST = "host-1"
LONELY_HOST = "lonely"  # registered by a bare Hello, then gone
SETTLED = [
    # Nothing judges the frozen agent's host while the properties run.
    "--liveness-grace",
    "10m",
    "--unknown-after",
    "10m",
    "--reschedule-after",
    "10m",
    # GetLogs of an instance on the frozen agent names the agent at once.
    "--log-wait",
    "300ms",
]

# A valid manifest of the existing workload `web`: every case made from it would update `web`.
BASE: dict[str, Any] = {
    "name": WORKLOAD,
    "kind": "service",
    "replicas": 2,
    "selector": {"role": "web"},
    "deadline": "60s",
    "spec": {
        "command": ["sleep", "100"],
        "env": {"GREETING": "hello"},
        "ports": ["http"],
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "stop_grace": "2s",
        "min_ready": "1s",
    },
}


@dataclass(frozen=True)
class State:
    """What the fleet holds: the names a hostile input aims at."""

    fleet: Fleet
    db: Database
    workloads: tuple[str, ...]
    hosts: tuple[str, ...]
    instances: tuple[str, ...]

    @property
    def objects(self) -> tuple[str, ...]:
        return (
            *(f"workload/{w}" for w in self.workloads),
            *(f"host/{h}" for h in self.hosts),
            *(f"instance/{i}" for i in self.instances),
        )


@dataclass(frozen=True)
class Case:
    """One request, the fields an INVALID_ARGUMENT may name, and whether it must be one."""

    request: bytes
    fields: tuple[str, ...]
    refuse: bool
    echoes: tuple[str, ...] = ()  # input text a message may quote back


# --------------------------------------------------------------------------- the fleet


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[State]:
    """The fleet with state, settled, its agent frozen for the module."""
    root = tmp_path_factory.mktemp("property_fleet")
    args = {1: ["--driver", "fake", "--label", "role=web"]}
    with (
        database_factory() as url,
        Fleet(root, database_url=url, agents=1, agent_args=args, controlplane_args=SETTLED) as f,
        database(url) as db,
    ):
        f.apply_ok(BASE)

        def running() -> list[str] | None:
            found = f.instances(WORKLOAD)
            ok = len(found) == 2 and all(i.phase == "RUNNING" and i.pid > 0 for i in found)
            return sorted(i.id for i in found) if ok else None

        instances = wait_for(running, message="2 instances of web RUNNING")
        with f.channel(f.join(LONELY_HOST)) as channel:
            answer = sync_first(channel, hello(host=LONELY_HOST), timeout=10)
        assert answer.code == grpc.StatusCode.OK, answer
        with f.freeze_agent(1):
            wait_for(lambda: _settled(db), timeout=30, message="the database to settle")
            hosts = {h.name for h in f.hosts_status()}
            assert hosts == {AGENT_HOST, LONELY_HOST}, hosts
            assert len(f.keelctl_json("events").get("events", [])) >= 3
            yield State(f, db, (WORKLOAD,), (AGENT_HOST, LONELY_HOST), tuple(instances))


def _credential(state: State) -> str:
    """The credential of the fleet's agent (host-1), which it keeps in its state dir."""
    return (state.fleet.root / AGENT_HOST / "credential").read_text().strip()


def _settled(db: Database) -> bool:
    """Nothing in flight: the database stays exactly as it is for a while."""
    first = db.snapshot()
    hold_for(lambda: db.snapshot() == first, duration=1.5, interval=0.25, message="no write")
    return True


def _sum(samples: Mapping[str, float], name: str, *needles: str) -> float:
    return sum(
        v for k, v in samples.items() if k.split("{")[0] == name and all(n in k for n in needles)
    )


def _assert_fleet_undisturbed(s: State) -> None:
    """The live agent's stream was never replaced, and no call failed inside the server."""
    m = s.fleet.metrics()
    assert m["keel_sync_streams"] == 1, "the agent's stream is not the one open stream"
    replaced = _sum(m, "keel_grpc_requests_total", f'service="{AGENT}"', 'code="ABORTED"')
    assert replaced == 0, "a hostile Hello replaced the live agent's stream"
    log = (s.fleet.logs / "controlplane.log").read_text(errors="replace")
    failed = [x for x in log.splitlines() if '"call failed"' in x]
    assert not failed, f"calls failed inside the control plane: {failed[:3]}"


def _names(details: str, field: str) -> bool:
    """details names field (or a part of it: `spec.env.A`, `spec.ports[1]`) before the rule."""
    return details.startswith(field) and details[len(field) : len(field) + 1] in (":", ".", "[")


def _scrub(details: str, echoes: tuple[str, ...]) -> str:
    """details without the input it quotes back (an SQL-looking name is the caller's text)."""
    for text in sorted({e for e in echoes if e}, key=len, reverse=True):
        for form in (shown(text), repr(text), text):
            details = details.replace(form, "<input>")
    return details


def check(answer: Answer, case: Case) -> None:
    """A clear code, no internals; a refused input is INVALID_ARGUMENT naming its field."""
    assert answer.code in ALLOWED, answer
    leak = LEAKS.search(_scrub(answer.details, case.echoes))
    assert leak is None, f"{answer} carries {leak.group()!r}"
    if case.refuse:
        assert answer.code == INVALID, f"{answer} for an input that breaks a rule"
    if answer.code == INVALID:
        assert any(_names(answer.details, f) for f in case.fields), (
            f"{answer} names none of {case.fields}"
        )


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
# Generated text: it may happen to be valid, so only its errors are checked, not that it is one.
text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40))
with_nul = st.tuples(st.text(max_size=20), st.text(max_size=20)).map(lambda p: f"{p[0]}\x00{p[1]}")
# Not a message of any type: a tag of field 0, a group end without its start, a 5-byte field
# with 2 bytes present.
GARBAGE = [b"\x00", b"\x0c", b"\x0a\x05ab"]

# What each request field names, by RPC (test_every_request_field_is_covered keeps it whole).
KINDS: dict[str, dict[str, str]] = {
    "GetWorkload": {"name": "workload"},
    "DeleteWorkload": {"name": "workload"},
    "DeleteHost": {"name": "host", "force": "bool"},
    "GetHost": {"name": "host"},
    "GetInstance": {"id": "instance"},
    "ListInstances": {
        "workload": "workload",
        "host": "host",
        "page_size": "page_size",
        "page_token": "token",
    },
    "ListEvents": {"object": "object", "limit": "limit"},
    "GetLogs": {"instance_id": "instance", "tail_lines": "tail_lines", "follow": "bool"},
    "ListWorkloads": {"page_size": "page_size", "page_token": "token"},
    "ListHosts": {"page_size": "page_size", "page_token": "token"},
    "ListStuck": {},
    "Cordon": {"hosts": "hosts", "selector": "selector", "reason": "reason"},
    "Uncordon": {"hosts": "hosts", "selector": "selector"},
    "Drain": {
        "hosts": "hosts",
        "selector": "selector",
        "deadline_ms": "deadline_ms",
        "on_deadline": "on_deadline",
        "max_parallel": "max_parallel",
        "ignore_daemons": "bool",
        "reason": "reason",
    },
    "PlanDrain": {
        "hosts": "hosts",
        "selector": "selector",
        "max_parallel": "max_parallel",
        "ignore_daemons": "bool",
    },
    "GetOperation": {"id": "operation"},
    "ListOperations": {"all": "bool"},
    "CancelOperation": {"id": "operation", "uncordon": "bool"},
    "WatchOperation": {"id": "operation"},
    "ListTokens": {},
    # Token names follow workload names' rules closely enough for their hostile variants.
    "RevokeToken": {"name": "workload"},
    "ResetHostCredential": {"host": "host"},
    # With no freeze (the state has none), Unfreeze changes nothing, whatever it lifts.
    "Unfreeze": {"alert": "alert", "all": "bool"},
    "GetFreeze": {},
    "GetRolloutHistory": {"workload": "workload"},
    "GetRolloutStatus": {"workload": "workload"},
    "PauseRollout": {"workload": "workload", "reason": "reason"},
    "ResumeRollout": {"workload": "workload", "reason": "reason"},
    "UndoRollout": {"workload": "workload", "to_revision": "revision", "reason": "reason"},
    "PromoteRollout": {"workload": "workload", "reason": "reason"},
    "AbortRollout": {"workload": "workload", "reason": "reason"},
}
# Valid requests of these would change the fleet (a workload or host deleted, a token revoked,
# a host's credential reset, a rollout paused, undone, promoted or aborted), so their valid
# values name nothing that exists.
SPARING = {"DeleteWorkload", "DeleteHost", "RevokeToken", "ResetHostCredential", "PauseRollout",
           "ResumeRollout", "UndoRollout", "PromoteRollout", "AbortRollout"}  # fmt: skip
# CreateToken and Freeze write whenever their request is valid: their refusals are checked in
# tests/integration/test_tokens.py and tests/integration/test_freeze.py instead.
UNCOVERED = {"ApplyWorkload", "CreateToken", "Freeze"}
# Verbs that change the hosts they select: every list of hosts their cases send names a host
# that does not exist too, so the call changes nothing (all or none) whatever else it names.
SELECTING = {"Cordon", "Uncordon", "Drain", "PlanDrain"}
LIMITS = {"workload": 63, "host": 253, "instance": 253, "object": 262}
RANGES = {
    "limit": (0, 10_000),
    "tail_lines": (0, 1_000_000),
    "page_size": (0, 1000),
    "deadline_ms": (0, 7 * 24 * 3600 * 1000),
    "max_parallel": (0, 100_000),
}
# Page tokens no list gave: not base64, not JSON, another list's, a key of the wrong shape.
BAD_TOKENS = [
    "x",
    "%%%",
    "e30=",  # {}
    "eyJsaXN0Ijoibm9wZSIsImFmdGVyIjpbImgiXX0=",  # {"list":"nope","after":["h"]}
    "eyJsaXN0IjoiaW5zdGFuY2VzIiwiYWZ0ZXIiOlsxLDIsM119",  # instances after [1,2,3]
    "t" * 5000,
]
# Operation ids that break the id rule (the fleet has no operation to vary).
HOSTILE_OPERATIONS = ["OP-1", "op 1", "op/1", "-op-1", "op-1-", "o" * 254, "op-1\n"]
# Alert names that break Prometheus's rule (or its bound): `keelctl unfreeze --alert`.
HOSTILE_ALERTS = ["1Keel", "Keel Burn", "Keel-Burn", "Keel/Burn", "K" * 201, "Keel\u202e"]


def variants(name: str, kind: str) -> list[str]:
    """An existing name made hostile: each breaks the rule of every field that names one."""
    over = name + "x" * (LIMITS[kind] + 1 - len(name))
    out = [
        name + "\x00",
        "\x00" + name,
        name[:1] + "\x00" + name[1:],
        name.upper(),
        " " + name,
        name + " ",
        name + "\t",
        "\n" + name,
        name + "\r",
        "-" + name,
        name + "/",
        name + "/..",
        "../" + name,
        name + "%00",
        name + "'; --",
        name + "*",
        name + "(.*)",
        name + "\u202e",
        name + "\u00e9",
        over,
        name + "x" * 9000,
        name + "\n",
    ]
    if kind != "object":  # an event's object may end in '-'
        out.append(name + "-")
    return out


def _existing(s: State, kind: str) -> tuple[str, ...]:
    return {
        "workload": s.workloads,
        "host": s.hosts,
        "instance": s.instances,
        "object": s.objects,
    }[kind]


def hostile_value(s: State, kind: str) -> st.SearchStrategy[Any]:
    """Values that break the field's rule: it must be INVALID_ARGUMENT."""
    if kind == "token":  # any text but "" (the first page): no list gave it
        return st.one_of(st.sampled_from(BAD_TOKENS), st.text(min_size=1, max_size=60))
    if kind == "hosts":
        bad = hostile_value(s, "host")
        return st.one_of(
            st.tuples(st.lists(st.sampled_from(s.hosts), max_size=2), bad).map(
                lambda p: [*p[0], p[1], "nope"]
            ),
            st.just(["nope"] * 1025),
        )
    if kind == "selector":
        return st.one_of(
            st.tuples(with_nul, st.just("v")).map(lambda kv: {kv[0]: kv[1]}),
            st.tuples(st.just("role"), with_nul).map(lambda kv: {kv[0]: kv[1]}),
            st.sampled_from([{"a b": "v"}, {"role": "two\nlines"}, {"role": "v" * 300}]),
        )
    if kind == "reason":
        # One line of text: no newline, nor what a terminal takes for one (U+0085, U+2028)
        # or what turns the line around (U+202E, U+2066).
        return st.one_of(
            with_nul,
            st.just("x" * 1025),
            st.sampled_from(["two\nlines", "a\u2028b", "a\u0085b", "evil\u202e", "x\u2066y"]),
        )
    if kind == "on_deadline":
        return st.one_of(with_nul, st.sampled_from(["Force", "kill", "fail ", "x" * 300]))
    if kind == "operation":
        return st.one_of(with_nul, st.sampled_from(HOSTILE_OPERATIONS))
    if kind == "alert":
        return st.one_of(with_nul, st.sampled_from(HOSTILE_ALERTS))
    if kind == "revision":  # a revision number, or 0 for the default: never negative
        return st.integers(-(2**63), -1)
    if kind in RANGES:
        low, high = RANGES[kind]
        return st.one_of(
            st.sampled_from([-(2**31), -1, high + 1, 2**31 - 1]),
            st.integers(-(2**31), low - 1),
            st.integers(high + 1, 2**31 - 1),
        )
    names = [v for name in _existing(s, kind) for v in variants(name, kind)]
    return st.one_of(st.sampled_from(names), with_nul)


def valid_value(s: State, method: str, kind: str) -> st.SearchStrategy[Any]:
    """Values that break no rule: existing names (not for the deletes) and unknown ones."""
    if kind == "bool":
        return st.booleans()
    if kind == "token":
        return st.just("")
    if kind in RANGES:
        return st.integers(RANGES[kind][0], min(RANGES[kind][1], 1000))
    if kind == "hosts":
        return st.lists(st.sampled_from(s.hosts), max_size=2).map(lambda h: [*h, "nope"])
    if kind == "selector":
        return st.sampled_from([{}, {"role": "web"}, {"role": "nope"}])
    if kind == "reason":
        return st.sampled_from(["", "kernel upgrade"])
    if kind == "on_deadline":
        return st.sampled_from(["", "fail", "force"])
    if kind == "operation":
        return st.just("op-999999")
    if kind == "alert":
        return st.sampled_from(["", "NoSuchAlert"])
    if kind == "revision":
        return st.integers(0, 1000)
    unknown = {"workload": "nope", "host": "nope", "instance": "web-1-000000"}
    known = () if method in SPARING else _existing(s, kind)
    return st.sampled_from([*known, unknown.get(kind, "workload/nope")])


def any_value(s: State, method: str, kind: str) -> st.SearchStrategy[Any]:
    """Anything of the field's type: only its errors are checked."""
    if kind == "bool":
        return st.booleans()
    if kind == "token":
        return st.one_of(text, st.sampled_from(BAD_TOKENS))
    if kind in RANGES:
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "revision":
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "hosts":
        return st.lists(st.one_of(text, st.sampled_from(s.hosts)), max_size=3).map(
            lambda h: [*h, "nope"]
        )
    if kind == "selector":
        return st.dictionaries(text, text, max_size=2)
    if kind in ("reason", "on_deadline", "operation", "alert"):
        return text
    spare = set(_existing(s, kind)) if method in SPARING else set()
    return st.one_of(text, valid_value(s, method, kind)).filter(lambda v: v not in spare)


def _strings(cls: Any, data: bytes) -> tuple[str, ...]:
    """The text fields of data read as a cls message (what a message may quote back)."""
    try:
        msg = cls.FromString(data)
    except (DecodeError, ValueError):
        return ()
    found: list[Any] = []
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.type == f.TYPE_STRING:
            found.append(list(value) if f.is_repeated else value)
        elif f.message_type is not None and f.message_type.GetOptions().map_entry:
            found.append(dict(value))  # a map<string, string>: its keys and values
    return tuple(_texts(found))


@st.composite
def fleet_request(draw: st.DrawFn, s: State, method: str) -> Case:
    kinds = KINDS[method]
    cls = getattr(fleet_pb2, FLEET.methods_by_name[method].input_type.name)
    targets = sorted(f for f, k in kinds.items() if k != "bool")
    branch = draw(st.integers(0, 5))
    if branch == 0 or not targets:
        if draw(st.booleans()):
            return Case(draw(st.sampled_from(GARBAGE)), ("request",), refuse=True)
        data = draw(st.binary(max_size=64))  # any bytes: decodable or not
        return Case(data, ("request", *kinds), refuse=False, echoes=_strings(cls, data))
    target = draw(st.sampled_from(targets))
    values = {f: draw(valid_value(s, method, k)) for f, k in kinds.items() if f != target}
    refuse = branch >= 3
    pick = hostile_value if refuse else lambda s, k: any_value(s, method, k)
    values[target] = draw(pick(s, kinds[target]))
    echoes = tuple(_texts(values.values()))
    return Case(cls(**values).SerializeToString(), (target,), refuse=refuse, echoes=echoes)


def _texts(values: Any) -> Iterator[str]:
    """Every string in request values (lists and maps included): what a message may quote."""
    for v in values:
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            yield from _texts(v)
        elif isinstance(v, dict):
            yield from _texts([*v, *v.values()])


# Valid-looking updates of `web` with one value a rule refuses: (path, value, field named).
PLAUSIBLE: list[tuple[str, Any, str]] = [
    ("name", "web\x00", "name"),
    ("name", "WEB", "name"),
    ("name", "web" * 30, "name"),
    ("name", "web-", "name"),
    ("name", "web/..", "name"),
    ("kind", "Service", "kind"),
    ("kind", "daemon\x00", "kind"),
    ("replicas", 100_001, "replicas"),
    ("replicas", 2**31, "replicas"),
    ("replicas", 2**63, "replicas"),
    ("replicas", -1, "replicas"),
    ("replicas", "3", "replicas"),
    ("replicas", 2.5, "replicas"),
    ("replicas", True, "replicas"),
    ("max_surge", 10**9, "max_surge"),
    ("max_unavailable", -5, "max_unavailable"),
    ("deadline", "0s", "deadline"),
    ("deadline", "-1s", "deadline"),
    ("deadline", "99999999999999999h", "deadline"),
    ("deadline", "1 fortnight", "deadline"),
    ("deadline", 60, "deadline"),
    ("spec.resources.cpu", "99999999999999999999999", "spec.resources.cpu"),
    ("spec.resources.cpu", "-1", "spec.resources.cpu"),
    ("spec.resources.cpu", "1e400", "spec.resources.cpu"),
    ("spec.resources.cpu", "NaN", "spec.resources.cpu"),
    ("spec.resources.memory", "99999999999999999999Ti", "spec.resources.memory"),
    ("spec.resources.memory", "16MiB", "spec.resources.memory"),
    ("spec.resources.memory", -16, "spec.resources.memory"),
    ("spec.env", {"KEEL_HOST": "x"}, "spec.env.KEEL_HOST"),
    ("spec.env", {"A=B": "x"}, "spec.env"),
    ("spec.env", {"": "x"}, "spec.env"),
    ("spec.env", {"A": "x\x00y"}, "spec.env.A"),
    ("spec.env", {"A": 5}, "spec.env.A"),
    ("spec.ports", ["http", "http"], "spec.ports[1]"),
    ("spec.ports", ["HTTP"], "spec.ports[0]"),
    ("spec.ports", [f"p{i}" for i in range(65)], "spec.ports"),
    ("spec.command", [], "spec.command"),
    ("spec.command", [""], "spec.command[0]"),
    ("spec.command", ["sleep", "${NOPE}"], "spec.command[1]"),
    ("spec.command", ["x"] * 1025, "spec.command"),
    ("spec.command", ["sleep", "x" * 40_000], "spec.command[1]"),
    ("spec.stop_grace", "1000000000h", "spec.stop_grace"),
    ("spec.min_ready", "-1s", "spec.min_ready"),
    ("spec.health", {"tcp": "nope"}, "spec.health"),
    ("spec.health", {"http": {"port": "http", "path": "no-slash"}}, "spec.health.http.path"),
    ("spec.health", {}, "spec.health"),
    ("spec.health", {"tcp": "http", "exec": ["true"]}, "spec.health"),
    ("selector", {"role": "w\x00"}, "selector.role"),
    ("selector", {"bad key!": "v"}, "selector"),
    ("selector", {"role": "x" * 300}, "selector.role"),
    ("spec.surprise", 1, "spec.surprise"),
    ("surprise", 1, "surprise"),
]
# Paths a generated hostile value is put at.
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
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_json_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _manifest_case(body: str, fields: tuple[str, ...], *, refuse: bool) -> Case:
    request = fleet_pb2.ApplyWorkloadRequest(manifest_json=body).SerializeToString()
    try:
        strings = _json_strings(json.loads(body))
    except (ValueError, RecursionError):
        strings = []
    return Case(request, fields, refuse=refuse, echoes=(body, *strings))


@st.composite
def manifest(draw: st.DrawFn) -> Case:
    """An ApplyWorkload request aimed at `web` that every rule-abiding server refuses."""
    branch = draw(st.integers(0, 5))
    if branch == 0:  # any text at all, or any bytes
        if draw(st.booleans()):
            data = draw(st.binary(max_size=64))
            echoes = _strings(fleet_pb2.ApplyWorkloadRequest, data)
            return Case(data, ("request", "manifest_json"), refuse=False, echoes=echoes)
        body = draw(text)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        keys = tuple(doc) if isinstance(doc, dict) else ()
        return _manifest_case(body, ("manifest_json", "name", "spec", *keys), refuse=True)
    if branch == 1:  # a key given twice, with the same value or not
        key = draw(st.sampled_from(sorted(BASE)))
        again = BASE[key] if draw(st.booleans()) else "other"
        body = "{" + json.dumps(key) + ": " + json.dumps(again) + ", " + json.dumps(BASE)[1:]
        return _manifest_case(body, (key,), refuse=True)
    doc = json.loads(json.dumps(BASE))
    if branch <= 3:  # a plausible value a rule refuses
        path, value, field = draw(st.sampled_from(PLAUSIBLE))
        _put(doc, path, value)
        return _manifest_case(json.dumps(doc), (field,), refuse=True)
    path = draw(st.sampled_from(PATHS))  # a generated hostile value
    value = draw(hostile_json)
    _put(doc, path, value)
    field = "manifest_json" if isinstance(value, float | list) else path  # NaN or too deep
    return _manifest_case(json.dumps(doc), (field,), refuse=True)


@st.composite
def hostile_hello(draw: st.DrawFn, s: State) -> Case:
    """A Hello claiming an existing host, with one field that breaks a rule."""
    host = draw(st.sampled_from(s.hosts))
    which = draw(
        st.sampled_from(["host", "labels", "cpu_millis", "memory_mib", "agent_version", "revision"])
    )
    fields: dict[str, Any] = {"host": host, "labels": {"role": "web"}}
    if which == "host":
        fields["host"] = draw(
            st.one_of(
                st.sampled_from([v for h in s.hosts for v in variants(h, "host")]),
                with_nul,
                st.text(max_size=20).map(lambda t: "Upper" + t),
                st.integers(254, 9000).map(lambda n: "h" * n),
                st.sampled_from(["", "-h", "h-", "h h", "h/1"]),
            )
        )
        field = "hello.host"
    elif which == "labels":
        fields["labels"] = draw(
            st.one_of(
                st.tuples(with_nul, st.just("v")).map(lambda kv: {kv[0]: kv[1]}),
                st.tuples(st.just("role"), with_nul).map(lambda kv: {kv[0]: kv[1]}),
                st.integers(254, 2000).map(lambda n: {"k" * n: "v"}),
                st.integers(254, 2000).map(lambda n: {"role": "v" * n}),
                st.sampled_from([{"a b": "v"}, {"role": "two\nlines"}, {"": "v"}]),
                st.integers(65, 200).map(lambda n: {f"k{i}": "v" for i in range(n)}),
            )
        )
        field = "hello.labels"
    elif which in ("cpu_millis", "memory_mib"):
        fields[which] = draw(st.one_of(st.integers(-(2**63), -1), st.integers(10**15, 2**63 - 1)))
        field = f"hello.capacity.{which}"
    elif which == "agent_version":
        fields[which] = draw(
            st.one_of(with_nul, st.integers(129, 5000).map(lambda n: "v" * n), st.just("1.0\n2"))
        )
        field = "hello.agent_version"
    else:
        fields[which] = draw(st.integers(-(2**63), -1))
        field = "hello.revision"
    labels: dict[str, str] = fields["labels"]
    echoes = [str(fields["host"]), str(fields.get("agent_version", "")), *labels, *labels.values()]
    return Case(hello(**fields), (field,), refuse=True, echoes=tuple(echoes))


# --------------------------------------------------------------------------- properties


def test_every_request_field_is_covered() -> None:
    """A new RPC or request field must say here what it names, or the property misses it."""
    assert set(KINDS) | UNCOVERED == set(FLEET.methods_by_name)
    for method, kinds in KINDS.items():
        fields = {f.name for f in FLEET.methods_by_name[method].input_type.fields}
        assert set(kinds) == fields, method


@pytest.mark.parametrize(
    "method", sorted(set(FLEET.methods_by_name) - (UNCOVERED - {"ApplyWorkload"}))
)
def test_no_fleet_rpc_answers_unknown_leaks_or_writes_for_hostile_input(
    method: str, state: State
) -> None:
    """Generated requests to one RPC: clear codes, the field named, database unchanged."""
    with state.fleet.channel() as channel:

        @MORE_EXAMPLES if method == "ApplyWorkload" else EXAMPLES
        @given(case=manifest() if method == "ApplyWorkload" else fleet_request(state, method))
        def prop(case: Case) -> None:
            before = state.db.snapshot()
            answer = call(channel, method, case.request, timeout=10)
            check(answer, case)
            assert state.db.snapshot() == before, f"{method} changed the database: {answer}"

        prop()
    _assert_fleet_undisturbed(state)


def test_every_plausible_update_of_an_existing_workload_is_refused(state: State) -> None:
    """Each valid-looking update of `web` with one value a rule refuses, not only a sample of
    them: INVALID_ARGUMENT naming the field, `web` and everything else as it was."""
    with state.fleet.channel() as channel:
        for path, value, field in PLAUSIBLE:
            doc = json.loads(json.dumps(BASE))
            _put(doc, path, value)
            case = _manifest_case(json.dumps(doc), (field,), refuse=True)
            before = state.db.snapshot()
            answer = call(channel, "ApplyWorkload", case.request, timeout=10)
            check(answer, case)
            assert state.db.snapshot() == before, f"{path}={value!r} changed the database"
    _assert_fleet_undisturbed(state)


def test_no_hostile_hello_for_an_existing_host_is_accepted_leaks_or_writes(state: State) -> None:
    """Generated Hellos claiming an existing host with one bad field: INVALID_ARGUMENT naming
    it, the host's row as it was, the live agent's stream not replaced."""
    with state.fleet.channel(_credential(state)) as channel:

        @MORE_EXAMPLES
        @given(case=hostile_hello(state))
        def prop(case: Case) -> None:
            before = state.db.snapshot()
            answer = sync_first(channel, case.request, timeout=10)
            check(answer, case)
            assert state.db.snapshot() == before, f"a refused Hello changed the database: {answer}"

        prop()
    _assert_fleet_undisturbed(state)


def test_arbitrary_bytes_opening_a_sync_stream_are_refused_cleanly(state: State) -> None:
    """Any bytes as the first stream message: a clear code, nothing written unless valid."""
    cls = agent_pb2.AgentMessage
    with state.fleet.channel(_credential(state)) as channel:

        @EXAMPLES
        @given(first=st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=64)))
        def prop(first: bytes) -> None:
            before = state.db.snapshot()
            answer = sync_first(channel, first, timeout=10)
            try:
                opened = cls.FromString(first)
                echoes = (opened.hello.host, opened.hello.agent_version, *opened.hello.labels)
            except DecodeError:
                echoes = ()
            check(answer, Case(first, ("request", "hello"), refuse=first in GARBAGE, echoes=echoes))
            if answer.code == grpc.StatusCode.OK:
                # A valid Hello of a new host registered it; let that settle.
                wait_for(lambda: _settled(state.db), timeout=30, message="the database to settle")
            else:
                assert state.db.snapshot() == before

        prop()
    _assert_fleet_undisturbed(state)
