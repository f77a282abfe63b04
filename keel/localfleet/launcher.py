"""The local fleet's start-up sequence and command line (`python -m keel.localfleet`).

Checks the port, starts the control plane and waits until it answers, starts the agents and
waits until every host is READY, applies the example workload (unless it exists from an
earlier run: then it is left as the operator left it) and waits until it runs, prints how to
reach the fleet, then watches it until Ctrl-C and stops it in order. It learns everything
through `keelctl`, as an operator would; the processes themselves are handled by
`keel.localfleet.processes`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from keel.localfleet import LocalFleetError
from keel.localfleet.layout import (
    BIN,
    HOSTS,
    MOVE_LISTEN,
    agent_metrics_address,
    banner,
    kept_note,
    metrics_address,
    metrics_addresses,
    port_of,
)
from keel.localfleet.processes import (
    Child,
    StopRequest,
    check_port_free,
    kill_processes,
    leftovers_under,
    stop_children,
)

START_TIMEOUT_S = 120.0  # the first start runs initdb for the embedded Postgres
AGENT_STOP_S = 30.0  # agents stop their workloads first: each gets its stop_grace
CONTROLPLANE_STOP_S = 30.0


def _wait(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    stop: StopRequest,
    children: Sequence[Child],
    required: bool = True,
) -> bool:
    """Polls check until true; False if a stop was requested; raises on a dead child, and on
    the timeout when `required` (else returns True then: the caller says what it found)."""
    deadline = time.monotonic() + timeout
    while not stop.requested:
        for child in children:
            if not child.running():
                raise LocalFleetError(
                    f"{child.name} exited while waiting for {what}; the end of {child.log}:\n"
                    f"{child.tail()}"
                )
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() > deadline:
            if not required:
                return True
            raise LocalFleetError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)
    return False


# The admin token the control plane writes on its first start (under the state dir `run` was
# given): every keelctl the launcher runs sends it.
_admin_token: list[Path] = []


def _keelctl(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_CONTROLPLANE", "KEEL_TOKEN")}
    token = ["--token-file", str(_admin_token[-1])] if _admin_token else []
    return subprocess.run(
        [str(BIN / "keelctl"), "--controlplane", address, *token, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _keelctl_json(address: str, *args: str) -> Any:
    """keelctl -o json ARGS parsed, or None while the control plane does not answer."""
    result = _keelctl(address, "--timeout", "2s", "-o", "json", *args, timeout=15)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _answers(address: str) -> bool:
    return _keelctl_json(address, "get", "hosts") is not None


def _hosts_ready(address: str) -> bool:
    reply = _keelctl_json(address, "get", "hosts") or {}
    ready = {h.get("name") for h in reply.get("hosts", []) if h.get("state") == "READY"}
    return ready >= set(HOSTS)


def _running(address: str, workload: str) -> tuple[int, int]:
    """(running, desired) instances of workload."""
    status = (_keelctl_json(address, "describe", "workload", workload) or {}).get("status", {})
    return int(status.get("running", 0)), int(status.get("desired", 0))


def _workload_name(path: Path) -> str:
    import yaml

    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise LocalFleetError(f"{path} has no workload name")
    return str(doc["name"])


def _existing(address: str, name: str) -> dict[str, Any] | None:
    """The workload as the control plane has it (keelctl's JSON), or None when there is none."""
    reply = _keelctl_json(address, "get", "workloads")
    if reply is None:
        raise LocalFleetError("keelctl get workloads failed: the control plane did not answer")
    found = next((w for w in reply.get("workloads", []) if w.get("name") == name), None)
    return found if isinstance(found, dict) else None


def _controlplane(state_dir: Path, logs: Path, n: int, listen: str) -> Child:
    """Replica n (0 is the first). Every replica shares the state dir, so they share its
    embedded Postgres, which stays up while any of them runs (`controlplane.embedded`)."""
    metrics = metrics_address(n)
    name = "controlplane" if n == 0 else f"controlplane-{n + 1}"
    argv = [str(BIN / "keel-controlplane"), "--state-dir", str(state_dir / "controlplane"),
            "--listen", listen, "--metrics", metrics]  # fmt: skip
    return Child(name, argv, logs / f"{name}.log")


def run(
    *,
    state_dir: Path,
    workload: Path,
    listen: str,
    agent_args: Sequence[str] = (),
    replicas: int = 1,
) -> int:
    state_dir = state_dir.resolve()
    logs = state_dir / "logs"
    host, _, port = listen.rpartition(":")
    listens = [f"{host}:{int(port) + n}" for n in range(replicas)]
    # Every port the fleet will listen on, checked before anything starts: a port taken by
    # another local fleet names its owner now, instead of a control plane exiting mid-start.
    for address in listens:
        check_port_free(host, port_of(address), hint=MOVE_LISTEN)
    for address in metrics_addresses(replicas):
        check_port_free(
            "127.0.0.1", port_of(address),
            hint="Stop it: the local fleet's metrics ports (9464 and up) cannot be moved.",
        )  # fmt: skip
    if not workload.exists():
        raise LocalFleetError(f"no workload file at {workload}")
    name = _workload_name(workload)

    _admin_token.append(state_dir / "controlplane" / "admin.token")
    stop = StopRequest()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    planes = [_controlplane(state_dir, logs, n, address) for n, address in enumerate(listens)]
    # Agents and keelctl get every replica, and fail over between them on their own.
    every = ",".join(listens)
    agents = [
        Child(
            h,
            [
                str(BIN / "keel-agent"),
                "--controlplane",
                every,
                "--host",
                h,
                "--driver",
                "process",
                "--state-dir",
                str(state_dir / h),
                "--stop-workloads-on-exit",
                # Used once, to join: the host's credential is kept in its state dir.
                "--join-token-file",
                str(state_dir / "controlplane" / "join.token"),
                # examples/web.yaml selects role=web hosts.
                "--label",
                "role=web",
                "--metrics",
                agent_metrics_address(n),
                *agent_args,
            ],
            logs / f"{h}.log",
        )
        for n, h in enumerate(HOSTS)
    ]
    for d in [logs, state_dir / "controlplane", *(state_dir / h for h in HOSTS)]:
        d.mkdir(parents=True, exist_ok=True)
    env_url = os.environ.pop("KEEL_DATABASE_URL", None)
    if env_url:
        print("note: ignoring KEEL_DATABASE_URL; the local fleet runs its own embedded Postgres")

    status = 0
    try:
        for n, (plane, address) in enumerate(zip(planes, listens, strict=True)):
            where = f"{address}, loopback without TLS"
            print(f"starting {plane.name} on {where} (log: {plane.log}) ...", flush=True)
            plane.start()
            if not _wait(
                functools.partial(_answers, address),
                timeout=START_TIMEOUT_S,
                what=f"{plane.name} to answer",
                stop=stop,
                children=planes[: n + 1],
            ):
                return 0
        listen = every
        print(f"starting agents {', '.join(HOSTS)} ...", flush=True)
        for agent in agents:
            agent.start()
        if not _wait(
            lambda: _hosts_ready(listen),
            timeout=60,
            what=f"hosts {', '.join(HOSTS)} to be READY",
            stop=stop,
            children=[*planes, *agents],
        ):
            return 0

        applied_at = time.monotonic()
        existing = _existing(every, name)
        kept = ""
        if existing is None:
            result = _keelctl(every, "apply", "-f", str(workload))
            if result.returncode != 0:
                raise LocalFleetError(
                    f"keelctl apply -f {workload} failed: {result.stderr.strip()}"
                )
            print(result.stdout.strip(), flush=True)
        else:
            # Whatever was applied, scaled, paused or rolled back since is the operator's:
            # applying the example again would quietly undo it.
            kept = kept_note(name, workload, existing)
            print(kept, flush=True)

        def all_running() -> bool:
            running, desired = _running(every, name)
            return running >= desired and (desired > 0 or existing is not None)

        if _wait(
            all_running,
            timeout=120,
            what=f"{name}'s replicas to run",
            stop=stop,
            children=[*planes, *agents],
            required=existing is None,
        ):
            running, desired = _running(every, name)
            elapsed = time.monotonic() - applied_at
            since = "after apply" if existing is None else "after start"
            print(
                f"{name}: {running} of {desired} replicas RUNNING {elapsed:.1f}s {since}",
                flush=True,
            )
        print(banner(every, state_dir, logs, name, replicas, kept=kept), flush=True)

        reported: set[str] = set()
        while not stop.requested:
            # A replica may die while another runs (a failover to try out): say so, go on.
            alive = [p for p in planes if p.running()]
            for plane in planes:
                if plane not in alive and alive and plane.name not in reported:
                    reported.add(plane.name)
                    print(f"note: {plane.name} exited; {alive[0].name} carries on "
                          f"(the end of {plane.log}:\n{plane.tail()})", flush=True)  # fmt: skip
            for child in [*(planes if not alive else []), *agents]:
                if not child.running():
                    raise LocalFleetError(
                        f"{child.name} exited unexpectedly; the end of {child.log}:\n{child.tail()}"
                    )
            # Remember what each agent runs, to stop it ourselves if the agent cannot.
            for agent in agents:
                with contextlib.suppress(psutil.Error, AssertionError):
                    assert agent.popen is not None
                    agent.workloads = psutil.Process(agent.popen.pid).children(recursive=True)
            time.sleep(0.5)
    except LocalFleetError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        stop_children(agents, deadline_s=AGENT_STOP_S, stop=stop)
        kill_processes([p for a in agents for p in a.workloads], grace=10, what="workload")
        stop_children(planes, deadline_s=CONTROLPLANE_STOP_S, stop=stop)
        kill_processes(leftovers_under(state_dir), grace=10, what="local fleet")
        print("the local fleet has stopped", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keel.localfleet",
        description="Run a local Keel fleet (control plane + 3 agents) until Ctrl-C.",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".keel"))
    parser.add_argument("--workload", type=Path, default=Path("examples/web.yaml"))
    parser.add_argument("--listen", default="127.0.0.1:7443", help="control plane HOST:PORT")
    parser.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        default=1,
        metavar="N",
        help="control-plane replicas on one database, on PORT, PORT+1, ... (1-5; default 1)",
    )
    args = parser.parse_args(argv)
    try:
        return run(
            state_dir=args.state_dir,
            workload=args.workload,
            listen=args.listen,
            replicas=args.replicas,
        )
    except LocalFleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
