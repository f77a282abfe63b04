"""The agent's layering holds: protobuf is converted in `agent/convert.py` only, gRPC stays in
the sync client, and the pure decision modules import no I/O at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
MODULES = sorted(p for p in AGENT.rglob("*.py"))

# Where each edge may be crossed.
PROTOBUF = ("keel.v1", "keel.convert", "google.protobuf")
PROTOBUF_ALLOWED = {"convert.py"}
# The sync client needs the generated stub to open the stream, and nothing else from keel.v1.
STUB = {"keel.v1", "keel.v1.agent_pb2_grpc"}
GRPC_ALLOWED = {"sync.py", "convert.py"}
# Decisions that are pure functions of their inputs (the clock passed in): table-tested.
PURE = ("planner.py", "restart.py", "stuck.py", "status.py", "convergence.py", "backoff.py")
IMPURE = (
    *("asyncio", "grpc", "subprocess", "socket", "psutil", "time", "os", "structlog"),
    *PROTOBUF,
    *("agent.sync", "agent.reconciler", "agent.runtime.process"),
)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute (`from . import x` does not occur here)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def crosses(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def rel(path: Path) -> str:
    return path.relative_to(AGENT).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_protobuf_is_converted_in_one_module(path: Path) -> None:
    """Only agent/convert.py touches protobuf messages or keel.convert."""
    if rel(path) in PROTOBUF_ALLOWED:
        return
    allowed = STUB if rel(path) == "sync.py" else set()
    assert [n for n in crosses(imports(path), PROTOBUF) if n not in allowed] == []


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_grpc_stays_in_the_sync_client(path: Path) -> None:
    """Only the sync client opens gRPC channels."""
    if rel(path) not in GRPC_ALLOWED:
        assert crosses(imports(path), ("grpc",)) == []


@pytest.mark.parametrize("name", PURE)
def test_decision_modules_are_pure(name: str) -> None:
    """Planner, restart, stuck, status, convergence and back-off import no I/O."""
    assert crosses(imports(AGENT / name), IMPURE) == []
