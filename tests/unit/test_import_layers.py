"""The import-layering contracts in pyproject.toml bite: a forbidden import breaks `lint-imports`.

`make test` runs `lint-imports` on the tree. These tests run it on a copy of the three packages
with a forbidden import added, and check that the contract it breaks says BROKEN: every pure
module named in the contract (so a module added there is covered at once), the control plane and
the agent importing each other, a library module importing an operator tool, and a cycle. The
pure modules' tests share one run per forbidden import, added to every pure module at once: each
test finds its module named, with its own direct import as the chain (a run is most of a second
of CPU, and there are four imports for each of some twenty modules).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("keel", "controlplane", "agent")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c["name"] for c in CONFIG["contracts"]}
PURE_MODULES = sorted(next(c for c in CONFIG["contracts"] if c["id"] == "pure")["source_modules"])


def lint_copy(tmp_path: Path, modules: Sequence[str] = (), line: str = "") -> tuple[int, str]:
    """Runs lint-imports on a copy of the packages, with `line` appended to each of `modules`."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module in modules:
        path = tmp_path / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = tmp_path / module.replace(".", "/") / "__init__.py"
        path.write_text(path.read_text() + f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "400", "NO_COLOR": "1"}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def verdict(output: str, contract: str) -> str:
    """KEPT or BROKEN, as lint-imports reports the contract with this id."""
    match = re.search(re.escape(CONTRACTS[contract]) + r"\s+(KEPT|BROKEN)", output)
    assert match, f"no verdict for {CONTRACTS[contract]!r} in:\n{output}"
    return match.group(1)


def test_the_tree_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    """The unchanged copy passes: a broken contract below is the added import's doing."""
    code, output = lint_copy(tmp_path)
    assert code == 0, output
    assert {verdict(output, c) for c in CONTRACTS} == {"KEPT"}


@pytest.fixture(scope="module")
def every_pure_module_importing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], tuple[int, str]]:
    """lint_copy with `line` appended to every pure module, run once per line."""
    runs: dict[str, tuple[int, str]] = {}

    def run(line: str) -> tuple[int, str]:
        if line not in runs:
            runs[line] = lint_copy(tmp_path_factory.mktemp("pure"), PURE_MODULES, line)
        return runs[line]

    return run


@pytest.mark.parametrize("module", PURE_MODULES)
@pytest.mark.parametrize(
    ("line", "imported"),
    [
        ("import controlplane.store", "controlplane.store"),
        ("import asyncpg", "asyncpg"),
        ("import grpc", "grpc"),
        ("from keel.v1 import types_pb2", "keel.v1.types_pb2"),
    ],
)
def test_a_pure_module_that_imports_io_breaks_the_pure_contract(
    every_pure_module_importing: Callable[[str], tuple[int, str]],
    module: str,
    line: str,
    imported: str,
) -> None:
    """Any pure module importing the store, asyncpg, gRPC or protobuf fails the check."""
    code, output = every_pure_module_importing(line)
    assert code != 0, output
    assert verdict(output, "pure") == "BROKEN"
    assert f"{module} is not allowed to import" in output, output
    # Its own import is the violation, not another pure module's that it imports.
    assert re.search(
        rf"^-\s+{re.escape(module)} -> {re.escape(imported)} \(l\.\d+\)$", output, re.M
    ), output


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("agent.sync", "import controlplane.fleet", "sides"),
        ("controlplane.fleet", "import agent.reconciler", "sides"),
        ("keel.spec", "import controlplane.errors", "sides"),
        ("keel.spec", "import keel.ctl.output", "tools"),
        ("controlplane.main", "import keel.localfleet", "tools"),
        ("controlplane.view", "import controlplane.scheduler", "acyclic"),
    ],
)
def test_an_upward_import_or_a_cycle_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    """The sides never import each other, nothing imports the tools, no cycles."""
    code, output = lint_copy(tmp_path, [module], line)
    assert code != 0, output
    assert verdict(output, contract) == "BROKEN"
