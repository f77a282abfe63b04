"""End-to-end: the control plane's embedded Postgres never outlives the control plane for good.

The real `keel-controlplane` without a database URL runs its own Postgres under its state dir
(`controlplane.embedded`). Killed with SIGKILL, it leaves that server running; the next start
must stop it and come up on a fresh one with the data intact, and the next SIGTERM must leave no
postgres process of that data dir. A postmaster.pid whose pid is some other live process is
stale: the start must not signal that process, and must come up all the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import KEEL_CONTROLPLANE, KEELCTL, wait_for
from procs import Proc, kill_processes_mentioning, process_alive

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 60.0  # the first start runs initdb


def postgres_of(pgdata: Path) -> list[psutil.Process]:
    """Every live postgres process (postmaster and children) working in pgdata."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == pgdata:
                found.append(proc)
    return found


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


class ControlPlane:
    """keel-controlplane on its embedded Postgres in state_dir, restartable, always stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "controlplane"
        self.pgdata = self.state_dir / "postgres"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        argv = [
            str(KEEL_CONTROLPLANE),
            "--state-dir",
            str(self.state_dir),
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--log-format",
            "json",
        ]
        self.proc = Proc("controlplane", argv, root / "controlplane.log", env)
        self.address = ""

    def start(self) -> None:
        addresses = self.state_dir / "addresses.json"
        addresses.unlink(missing_ok=True)
        self.proc.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            # Not wait_for: a control plane that exits must fail the test at once, with its log.
            assert self.proc.running(), f"keel-controlplane exited:\n{self.proc.tail(30)}"
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = str(json.loads(addresses.read_text())["grpc"])
                return
            assert time.monotonic() < deadline, f"no {addresses} after {START_TIMEOUT_S}s"
            time.sleep(0.05)

    def keelctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        # The admin token the control plane wrote under its state dir on first start.
        token = ["--token-file", str(self.state_dir / "admin.token")]
        return subprocess.run(
            [str(KEELCTL), "--controlplane", self.address, "--timeout", "10s", *token, *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def close(self) -> None:
        """Stops the control plane, then every process of its state dir or its data dir."""
        with contextlib.suppress(Exception):
            self.proc.stop()
        kill_processes_mentioning(str(self.root) + os.sep)
        leftovers = postgres_of(self.pgdata)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)


@pytest.fixture
def controlplane() -> Iterator[ControlPlane]:
    # Not under pytest's tmp dir: as root the embedded server runs as another user that must
    # traverse every parent, and concurrent pytest sessions chmod that tree back to 0700.
    root = Path(tempfile.mkdtemp(prefix="keel-test-embedded-")).resolve()
    cp = ControlPlane(root)
    try:
        yield cp
    finally:
        cp.close()
        shutil.rmtree(root, ignore_errors=True)


MANIFEST = """\
name: kept
replicas: 1
spec:
  command: [sleep, "3600"]
"""


def test_a_killed_control_plane_does_not_orphan_its_embedded_postgres(
    controlplane: ControlPlane,
) -> None:
    """kill -9, start, SIGTERM: the start stops the old server, the stop leaves none behind."""
    cp = controlplane
    cp.start()
    manifest = cp.root / "kept.yaml"
    manifest.write_text(MANIFEST)
    applied = cp.keelctl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    first_server = postmaster_pid(cp.pgdata)

    os.kill(cp.proc.pid, signal.SIGKILL)
    assert cp.proc.wait(15), "keel-controlplane outlived SIGKILL"
    # The fault as it happens: the server is still there, with nobody to stop it.
    assert process_alive(first_server)

    cp.start()
    got = cp.keelctl("-o", "json", "get", "workloads")
    assert got.returncode == 0, got.stderr
    assert "kept" in got.stdout, "the workload written before the kill is gone"
    assert not process_alive(first_server), "the old server still runs beside the new one"
    assert postgres_of(cp.pgdata), "no server serves the restarted control plane"

    cp.proc.signal_group(signal.SIGTERM)
    assert cp.proc.wait(30), "keel-controlplane did not exit on SIGTERM"
    assert cp.proc.popen is not None and cp.proc.popen.returncode == 0, cp.proc.tail(30)
    wait_for(
        lambda: not postgres_of(cp.pgdata),
        timeout=15,
        message=f"every postgres of {cp.pgdata} to exit",
    )


def test_a_stale_postmaster_pid_is_not_taken_for_the_server(controlplane: ControlPlane) -> None:
    """postmaster.pid naming an unrelated live process: that process is spared, the start works."""
    cp = controlplane
    cp.start()
    cp.proc.signal_group(signal.SIGTERM)
    assert cp.proc.wait(30), "keel-controlplane did not exit on SIGTERM"
    wait_for(lambda: not postgres_of(cp.pgdata), timeout=15, message="the server to stop")

    # A process that is alive, but not Postgres: as after a reboot that reused the pid.
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pgdata = str(cp.pgdata)
        lines = [str(bystander.pid), pgdata, "0", "5432", pgdata, "", "0 0", "ready"]
        pid_file = cp.pgdata / "postmaster.pid"
        pid_file.write_text("\n".join(lines) + "\n")
        shutil.copymode(cp.pgdata / "PG_VERSION", pid_file)
        with contextlib.suppress(PermissionError):
            st = (cp.pgdata / "PG_VERSION").stat()
            os.chown(pid_file, st.st_uid, st.st_gid)

        cp.start()
        got = cp.keelctl("-o", "json", "get", "workloads")
        assert got.returncode == 0, got.stderr
        assert postmaster_pid(cp.pgdata) != bystander.pid
        assert bystander.poll() is None, "the unrelated process was signalled"
        cp.proc.signal_group(signal.SIGTERM)
        assert cp.proc.wait(30), "keel-controlplane did not exit on SIGTERM"
        wait_for(lambda: not postgres_of(cp.pgdata), timeout=15, message="the server to stop")
        assert bystander.poll() is None, "the unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait(10)
