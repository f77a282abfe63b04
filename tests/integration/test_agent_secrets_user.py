"""secret_env and spec.user with real processes through the agent's reconciler: the process
gets the values (plain and from a file) and runs as the user; the failures are START_FAILED
with a message that names the file or the user; the local state holding values is 0600."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_process import reap, reconciler, settle, spec  # noqa: F401 (reap: a fixture)

from agent.health import probe
from agent.runtime.base import FIXED_PATH
from agent.state import Assignment
from keel.model import Desired, HealthCheck, SecretValue, WorkloadSpec
from keel.stuck import Reason

SECRET = "s3cret-value-for-agent-test"
# Runs as the user: a shell (reachable by anyone, unlike a virtualenv under /root) prints what
# it got, then stays up.
REPORT = 'printf "%s|%s|%s|%s\\n" "$DB_PASS" "$FILE_PASS" "$(id -u)" "$(id -g)"; exec sleep 60'


@pytest.fixture
def user_state_dir() -> Iterator[Path]:
    """An agent state dir the user can reach (pytest's tmp_path sits under a 0700 directory):
    a workload user needs search permission down to its working directory."""
    path = Path(tempfile.mkdtemp(prefix="keel-user-", dir="/tmp"))
    path.chmod(0o711)
    secret_file = path / "db-pass"
    secret_file.write_text("from-a-file\n")
    secret_file.chmod(0o600)  # the agent (root) reads it before the process becomes the user
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def printed(state_dir: Path, iid: str) -> list[str] | None:
    log = state_dir / "logs" / iid / "stdout.log"
    text = log.read_text() if log.exists() else ""
    return text.strip().split("|") if text.strip() else None


def uid_line(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("Uid:"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
async def test_the_process_gets_its_secrets_and_runs_as_the_user(user_state_dir: Path) -> None:
    """Values from the assignment and from a file reach the environment; uid is the user's."""
    nobody = pwd.getpwnam("nobody")
    secrets = {
        "DB_PASS": SecretValue(value=SECRET),
        "FILE_PASS": SecretValue(file=str(user_state_dir / "db-pass")),
    }
    workload = WorkloadSpec(command=("/bin/sh", "-c", REPORT), secret_env=secrets, user="nobody")
    a = Assignment("db-1", "db", 1, Desired.RUNNING, workload)
    rec = reconciler(user_state_dir)
    await rec.open()
    try:
        rec.apply_assignments(full=True, revision=1, assignments=[a])
        # The process may print before the reconciler has recorded its pid.
        await settle(
            rec,
            lambda: (
                printed(user_state_dir, "db-1") is not None
                and rec.state.instances["db-1"].pid is not None
            ),
        )
        ids = (str(nobody.pw_uid), str(nobody.pw_gid))
        assert printed(user_state_dir, "db-1") == [SECRET, "from-a-file", *ids]
        pid = rec.state.instances["db-1"].pid
        assert pid is not None
        assert uid_line(pid).split()[1:] == [str(nobody.pw_uid)] * 4
        # The local state holds the values (a restarted agent restarts a crashed process
        # without the control plane): readable by the agent's user only.
        assert mode(user_state_dir / "state.json") == 0o600
    finally:
        await rec.stop_all()
        await rec.close()


async def test_a_user_missing_on_the_host_is_start_failed_naming_it(
    tmp_path: Path,
    reap: None,  # noqa: F811
) -> None:
    a = Assignment("db-1", "db", 1, Desired.RUNNING, spec("pass", user="no-such-user-keel"))
    rec = reconciler(tmp_path)
    await rec.open()
    try:
        rec.apply_assignments(full=True, revision=1, assignments=[a])
        await settle(rec, lambda: rec.full_report()[0].reason == Reason.START_FAILED)
        message = rec.full_report()[0].message
        assert "'no-such-user-keel' (spec.user) does not exist on this host" in message
    finally:
        await rec.close()


async def test_a_missing_secret_file_is_start_failed_naming_it(
    tmp_path: Path,
    reap: None,  # noqa: F811
) -> None:
    missing = tmp_path / "absent"
    a = Assignment(
        "db-1",
        "db",
        1,
        Desired.RUNNING,
        spec("pass", secret_env={"DB_PASS": SecretValue(file=str(missing))}),
    )
    rec = reconciler(tmp_path)
    await rec.open()
    try:
        rec.apply_assignments(full=True, revision=1, assignments=[a])
        await settle(rec, lambda: rec.full_report()[0].reason == Reason.START_FAILED)
        message = rec.full_report()[0].message
        assert f"secret_env.DB_PASS: cannot read {missing}" in message
    finally:
        await rec.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="probing as another user needs root")
async def test_an_exec_probe_runs_as_the_workloads_user() -> None:
    """The health check's command runs as spec.user, like the command it checks."""
    uid = pwd.getpwnam("nobody").pw_uid
    check = HealthCheck(exec=("/bin/sh", "-c", f'test "$(id -u)" = {uid}'))
    env = {"PATH": FIXED_PATH}
    assert (await probe(check, ports={}, env=env, timeout_s=10, user="nobody")).ok
    assert not (await probe(check, ports={}, env=env, timeout_s=10)).ok
    missing = await probe(check, ports={}, env=env, timeout_s=10, user="no-such-user-keel")
    assert not missing.ok and "'no-such-user-keel' (spec.user) does not exist" in missing.message
