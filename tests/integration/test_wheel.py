"""The wheel built from the tree is complete: installed (not editable) in a fresh venv, its
`keel-controlplane migrate` brings a real Postgres to the newest schema.

The wheel is built from a copy of what it is made of (setuptools writes build/ beside the
sources, and a stale one there could ship a deleted module), without build isolation (the dev
venv's pinned setuptools: offline, about a second), and installed with --no-deps into a venv of
its own. That venv finds the third-party dependencies through a .pth line naming the dev venv's
site-packages, read after its own, so the keel packages come from the wheel, never from the
source tree or the editable install. Everything runs from a directory outside the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import asyncpg
import pytest

from controlplane import migrate

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("keel", "controlplane", "agent")


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_and_install(tmp_path: Path) -> Path:
    """Builds the wheel from the tree, installs it into a fresh venv; returns that venv's bin."""
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    run(
        [
            *(sys.executable, "-m", "pip", "wheel", str(source), "--wheel-dir", str(dist)),
            *("--no-deps", "--no-build-isolation", "--no-index", "--quiet"),
        ],
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("keel-*.whl")
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", str(wheel)),
            *("--no-deps", "--no-index", "--quiet"),
        ],
        cwd=tmp_path,
    )
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        cwd=tmp_path,
    ).strip()
    # A plain path line: appended after the venv's own site-packages, and the dev venv's own
    # .pth files (the editable install's finder among them) are not run.
    (Path(site) / "keel-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return target / "bin"


async def test_an_installed_wheel_migrates_a_database(tmp_path: Path, fresh_database: str) -> None:
    """keel-controlplane from the wheel's venv finds its migrations and applies them all."""
    bin_dir = build_and_install(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "PYTHON"))}

    where = run(
        [str(bin_dir / "python"), "-c", "import controlplane; print(controlplane.__file__)"],
        cwd=tmp_path,
        env=env,
    ).strip()
    assert Path(where).is_relative_to(bin_dir.parent), f"controlplane imported from {where}"

    latest = migrate.load()[-1].version
    out = run(
        [str(bin_dir / "keel-controlplane"), "--database-url", fresh_database, "migrate"],
        cwd=tmp_path,
        env=env,
    )
    assert f"schema at version {latest} (was 0)" in out, out

    conn = await asyncpg.connect(fresh_database)
    try:
        assert await migrate.current_version(conn) == latest
    finally:
        await conn.close()
