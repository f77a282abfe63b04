"""End-to-end: bad input through keelctl — a clear one-line error, exit 1, nothing written.

These tests change nothing, so they share one fleet per module (`quiet_fleet`) holding one
valid workload, `web`; every invalid document is also named `web`, so a partial write would
show in `get workloads`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from harness import Fleet

pytestmark = pytest.mark.e2e

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


def _snapshot(fleet: Fleet) -> list[tuple[str, int, int, Any]]:
    return sorted((w.name, w.generation, w.replicas, w.raw.get("spec")) for w in fleet.workloads())


@pytest.fixture(scope="module")
def with_web(quiet_fleet: Fleet) -> Fleet:
    """The shared fleet with one valid workload, web, applied."""
    quiet_fleet.apply_ok(quiet_fleet.manifest("web", replicas=1, env={"GREETING": "hello"}))
    return quiet_fleet


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        pytest.param(_set("replicas", -1), "replicas", id="negative-replicas"),
        pytest.param(_set("max_unavailable", -1), "max_unavailable", id="negative-budget"),
        pytest.param(_set("replicaz", 2), "replicaz", id="unknown-field"),
        pytest.param(_set("spec.colour", "blue"), "colour", id="unknown-spec-field"),
        pytest.param(_set("spec.stop_grace", "10"), "stop_grace", id="duration-without-unit"),
        pytest.param(_set("deadline", 120), "deadline", id="number-as-duration"),
        pytest.param(_set("spec.health", {"tcp": "admin"}), "health", id="undeclared-port"),
        pytest.param(_drop("spec.command"), "command", id="missing-command"),
    ],
)
def test_an_invalid_workload_is_refused_naming_the_field_and_nothing_changes(
    with_web: Fleet, mutate: Mutation, field: str
) -> None:
    """An invalid document: exit 1, one stderr line naming the field, workloads unchanged."""
    before = _snapshot(with_web)
    doc = with_web.manifest("web", replicas=2, env={"GREETING": "changed"})
    mutate(doc)

    result = with_web.apply(doc)

    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert field in lines[0], f"error does not name {field!r}: {lines[0]!r}"
    assert _snapshot(with_web) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["describe", "workload", "no-such-workload"], id="describe-workload"),
        pytest.param(["describe", "host", "no-such-host"], id="describe-host"),
        pytest.param(["describe", "instance", str(uuid.uuid4())], id="describe-instance"),
        pytest.param(["delete", "workload", "no-such-workload"], id="delete-workload"),
    ],
)
def test_an_unknown_name_is_not_found_and_named(with_web: Fleet, args: list[str]) -> None:
    """Asking for something that does not exist: exit 1, NOT_FOUND with its name."""
    before = _snapshot(with_web)

    result = with_web.keelctl(*args)

    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert args[-1] in lines[0]
    assert "not found" in lines[0].lower().replace("_", " ")
    assert _snapshot(with_web) == before


def test_a_usage_error_exits_2_without_calling_the_control_plane(quiet_fleet: Fleet) -> None:
    """An unknown keelctl verb is a usage error: exit 2."""
    result = quiet_fleet.keelctl("frobnicate", "workloads")

    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
