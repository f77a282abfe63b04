"""End-to-end harness: the real `keel-controlplane`, `keel-agent` and `keelctl`, as processes.

`Fleet` starts one control plane (port 0, its own database: a fresh one on the session's
Postgres, or with `database_url=None` its own embedded Postgres, which a test may freeze) and N
agents (process driver,
short timings) on loopback, each in its own process group with its output in a log file under
the test's directory, and offers the verbs the tests need: keelctl, listings parsed from
`keelctl -o json`, killing and restarting any process, waiting for a condition with a deadline.

Teardown never trusts the processes to behave: every process group gets SIGTERM then SIGKILL,
and every process whose command line names the test directory (the agents and control plane by
their state dirs, the workloads by the test's own server script) is killed, so nothing outlives
a failed test. `tests/e2e/conftest.py` wraps this into fixtures and prints the log tails of a
failed test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from procs import Proc, frozen, kill_processes_mentioning, stop_all
from views import HostView, InstanceView, WorkloadView, list_items

BIN = Path(sys.executable).parent
KEEL_CONTROLPLANE = BIN / "keel-controlplane"
KEEL_AGENT = BIN / "keel-agent"
KEELCTL = BIN / "keelctl"

# Set on every agent's environment and never in a workload's: proves the process driver gives a
# workload the spec's env plus KEEL_* variables, not the agent's own environment.
AGENT_ONLY_ENV = "KEEL_E2E_AGENT_ONLY"

T = TypeVar("T")

# A workload that serves HTTP on its allocated port and exits 0 on SIGTERM. Its path lies in the
# test directory, which is how teardown recognises workloads that outlived their agent.
SERVER_SCRIPT = '''\
"""A tiny HTTP server workload for Keel's end-to-end tests."""
import http.server
import signal
import sys
import threading

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


# --------------------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Polls predicate until it returns something truthy, and returns that; fails at the deadline.

    An exception from predicate counts as "not yet" (the control plane may be restarting) and
    is quoted in the failure, with the last value seen.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
            if last is not None and last:
                return last
        except Exception as exc:
            error = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; {detail}")
        time.sleep(interval)


def hold_for(
    predicate: Callable[[], object],
    *,
    duration: float,
    interval: float = 0.2,
    message: str = "condition",
) -> None:
    """Asserts predicate stays truthy for the whole duration (sampled every interval)."""
    deadline = time.monotonic() + duration
    while True:
        value = predicate()
        assert value, f"{message} stopped holding: {value!r}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


# --------------------------------------------------------------------------- workloads


def workload_manifest(
    name: str,
    *,
    command: Sequence[str],
    replicas: int = 3,
    env: Mapping[str, str] | None = None,
    max_unavailable: int = 1,
    max_surge: int = 1,
    health: bool = True,
    min_ready: str = "1s",
    stop_grace: str = "2s",
    **top_level: Any,
) -> dict[str, Any]:
    """A workload document as an operator writes it (DESIGN.md), with test-sized timings."""
    spec: dict[str, Any] = {
        "command": list(command),
        "env": dict(env or {}),
        "ports": ["http"],
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "stop_grace": stop_grace,
        "min_ready": min_ready,
    }
    if health:
        spec["health"] = {"tcp": "http"}
    doc: dict[str, Any] = {
        "name": name,
        "kind": "service",
        "replicas": replicas,
        "max_unavailable": max_unavailable,
        "max_surge": max_surge,
        "deadline": "60s",
        "spec": spec,
    }
    doc.update(top_level)
    return doc


class Fleet:
    """A control plane and N agents as real processes; a context manager that always cleans up.

    Agents are numbered like their hosts: agent 1 is host-1. `agent_args` maps a host number
    to extra flags for that agent.
    """

    def __init__(
        self,
        root: Path,
        *,
        database_url: str | None,
        agents: int = 3,
        agent_args: Mapping[int, Sequence[str]] | None = None,
        controlplane_args: Sequence[str] = (),
        start_timeout: float = 30.0,
        tls_ca: Path | None = None,
        tls_client: tuple[Path, Path] | None = None,
        agent_route: Callable[[int, str], str] | None = None,
    ) -> None:
        self.root = root.resolve()
        # With the control plane serving TLS (its flags in controlplane_args): the CA that
        # signed its certificate, given to every agent, keelctl and channel of this fleet.
        self.tls_ca = tls_ca
        # With mutual TLS: the client certificate and key they present.
        tls = ["--tls-ca", str(tls_ca)] if tls_ca else []
        if tls_client is not None:
            tls += ["--tls-cert", str(tls_client[0]), "--tls-key", str(tls_client[1])]
        self._tls = tls
        self.database_url = database_url
        self.start_timeout = start_timeout
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cp_state = self.root / "controlplane"
        self.cp_state.mkdir(exist_ok=True)
        # The tokens the control plane writes on its first start (keelctl acts as admin).
        self.admin_token_file = self.cp_state / "admin.token"
        self.join_token_file = self.cp_state / "join.token"
        self.server_script = self.root / "serve.py"
        self.server_script.write_text(SERVER_SCRIPT)
        self.agent_only_value = f"agent-only-{uuid.uuid4().hex[:8]}"
        self.address = ""
        self._manifests = 0
        self._controlplane_args = list(controlplane_args)
        # What agent i is given as --controlplane, from the control plane's address (a proxy
        # in front of it, say); decided once, at the first start of the control plane.
        self._agent_route = agent_route
        self._agent_addresses: dict[int, str] = {}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        self._cp = Proc("controlplane", [], self.logs / "controlplane.log", dict(base_env))
        self._agents: dict[int, Proc] = {}
        self._extra: list[Proc] = []  # agents started by start_agent_as, stopped at close
        for i in range(1, agents + 1):
            env = dict(base_env)
            env[AGENT_ONLY_ENV] = self.agent_only_value
            (self.root / f"host-{i}").mkdir(exist_ok=True)
            argv = [
                str(KEEL_AGENT),
                "--controlplane",
                "",  # filled in once the control plane has bound its port
                "--host",
                f"host-{i}",
                "--state-dir",
                str(self.root / f"host-{i}"),
                "--driver",
                "process",
                "--heartbeat-interval",
                "500ms",
                "--backoff-base",
                "500ms",
                "--backoff-max",
                "4s",
                "--backoff-reset",
                "10s",
                "--probe-interval",
                "200ms",
                "--reconnect-max",
                "1s",
                "--metrics",
                "127.0.0.1:0",
                # Written by the control plane on its first start: the agent joins with it.
                "--join-token-file",
                str(self.join_token_file),
                *tls,
                *(agent_args or {}).get(i, ()),
            ]
            self._agents[i] = Proc(f"host-{i}", argv, self.logs / f"host-{i}.log", env)

    # ----------------------------------------------------------------- lifecycle

    @property
    def hosts(self) -> list[str]:
        return [f"host-{i}" for i in self._agents]

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts the control plane, then every agent, and waits until every host is READY."""
        self._start_cp(listen="127.0.0.1:0")
        for i in self._agents:
            self.start_agent(i)
        self.wait_hosts_ready()

    def close(self) -> None:
        """Stops everything: agents, control plane, then any process naming the test dir."""
        # All at once: each shuts down in parallel with the others, not after them.
        with contextlib.suppress(Exception):
            stop_all([*self._extra, *self._agents.values(), self._cp])
        kill_processes_mentioning(str(self.root) + os.sep)

    def _start_cp(self, *, listen: str) -> None:
        addresses = self.cp_state / "addresses.json"
        addresses.unlink(missing_ok=True)
        self._cp.argv = [
            str(KEEL_CONTROLPLANE),
            "--listen",
            listen,
            "--state-dir",
            str(self.cp_state),
            # None: the control plane's own embedded Postgres, under its state dir.
            *(["--database-url", self.database_url] if self.database_url else []),
            "--liveness-grace",
            "3s",
            "--resync-period",
            "2s",
            "--stuck-interval",
            "300ms",
            "--metrics",
            "127.0.0.1:0",
            *self._controlplane_args,
        ]
        self._cp.start()

        def bound() -> str:
            if not self._cp.running():
                raise AssertionError(f"keel-controlplane exited:\n{self._cp.tail(30)}")
            if not addresses.exists():
                return ""
            try:
                return str(json.loads(addresses.read_text())["grpc"])
            except (ValueError, KeyError):
                return ""  # caught mid-write

        deadline = time.monotonic() + self.start_timeout
        while not (address := bound()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"keel-controlplane wrote no {addresses} within {self.start_timeout}s:\n"
                    f"{self._cp.tail(30)}"
                )
            time.sleep(0.05)
        self.address = address
        _ADMIN_TOKENS[address] = self.admin_token_file
        if self.tls_ca is not None:
            _TLS_CAS[address] = self.tls_ca
        for i, agent in self._agents.items():
            if i not in self._agent_addresses:
                route = self._agent_route
                self._agent_addresses[i] = route(i, address) if route else address
            agent.argv[agent.argv.index("--controlplane") + 1] = self._agent_addresses[i]

    def kill_cp(self, sig: int = signal.SIGKILL) -> None:
        """Sends sig to the control plane's process group and waits for it to exit."""
        self._cp.signal_group(sig)
        assert self._cp.wait(15), f"keel-controlplane still running 15s after signal {sig}"

    def restart_cp(self) -> None:
        """Starts the control plane again on the same port (agents know only that address)."""
        if self._cp.running():
            self.kill_cp(signal.SIGTERM)
        self._start_cp(listen=self.address)

    def start_agent(self, i: int) -> None:
        self._agents[i].start()

    def start_agent_as(self, host: str, name: str) -> Proc:
        """Starts another agent (agent 1's flags and join token) claiming `host`, with a state
        dir and log of its own named name: a second machine saying it is that host."""
        template = self._agents[1]
        state = self.root / name
        state.mkdir(exist_ok=True)
        argv = list(template.argv)
        argv[argv.index("--host") + 1] = host
        argv[argv.index("--state-dir") + 1] = str(state)
        proc = Proc(name, argv, self.logs / f"{name}.log", dict(template.env))
        self._extra.append(proc)
        proc.start()
        return proc

    def kill_agent(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Sends sig to agent i's process group (not its workloads' groups) and waits for it."""
        self._agents[i].signal_group(sig)
        assert self._agents[i].wait(15), f"host-{i} agent still running 15s after signal {sig}"

    def restart_agent(self, i: int) -> None:
        if self._agents[i].running():
            self.kill_agent(i, signal.SIGTERM)
        self.start_agent(i)

    @property
    def embedded_pgdata(self) -> Path:
        """Where the control plane keeps its embedded Postgres (when database_url is None)."""
        return self.cp_state / "postgres"

    def freeze_agent(self, i: int) -> contextlib.AbstractContextManager[None]:
        """SIGSTOP agent i's process group for the block, SIGCONT after however it ends."""
        return frozen([psutil.Process(self._agents[i].pid)])

    def metrics_address(self, agent: int | None = None) -> str:
        """HOST:PORT of the control plane's (or agent i's) /metrics, from addresses.json."""
        state = self.cp_state if agent is None else self.root / f"host-{agent}"
        addresses = state / "addresses.json"

        def bound() -> str | None:
            try:
                return str(json.loads(addresses.read_text())["metrics"])
            except (OSError, ValueError, KeyError):
                return None

        return wait_for(bound, timeout=15, interval=0.1, message=f"metrics address in {addresses}")

    def metrics(self, agent: int | None = None) -> dict[str, float]:
        """One scrape of /metrics: {'name{labels}': value} with labels sorted as exposed."""
        import urllib.request

        url = f"http://{self.metrics_address(agent)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def agent_pid(self, i: int) -> int:
        return self._agents[i].pid

    def log_tails(self, lines: int = 60) -> list[tuple[str, str]]:
        """(name, last lines of its log) for every process, for a failed test's report."""
        procs = [self._cp, *self._agents.values()]
        return [(f"{p.name} ({p.log})", p.tail(lines)) for p in procs]

    # ----------------------------------------------------------------- keelctl

    def keelctl(
        self,
        *args: str,
        json_output: bool = False,
        timeout: float = 30.0,
        token: str | None = None,
        address: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the real keelctl against this fleet (or only the replica at `address`); never
        raises on a non-zero exit. It sends the admin token the control plane wrote on its
        first start, or `token` (in KEEL_TOKEN)."""
        argv = [str(KEELCTL), "--controlplane", address or self.address]
        if token is None:
            argv += ["--token-file", str(self.admin_token_file)]
        argv += self._tls
        if json_output:
            argv += ["-o", "json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        if token is not None:
            env["KEEL_TOKEN"] = token
        return subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def keelctl_ok(self, *args: str, json_output: bool = False) -> subprocess.CompletedProcess[str]:
        result = self.keelctl(*args, json_output=json_output)
        assert result.returncode == 0, (
            f"keelctl {' '.join(args)} exited {result.returncode}:\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def keelctl_json(self, *args: str) -> Any:
        return json.loads(self.keelctl_ok(*args, json_output=True).stdout)

    def instances(self, workload: str | None = None) -> list[InstanceView]:
        """`keelctl -o json get instances`, parsed; optionally only one workload's."""
        found = list_items(self.keelctl_json("get", "instances"), "instances")
        views = [InstanceView.parse(item) for item in found]
        return [v for v in views if workload is None or v.workload == workload]

    def hosts_status(self) -> list[HostView]:
        return [HostView.parse(h) for h in list_items(self.keelctl_json("get", "hosts"), "hosts")]

    def workloads(self) -> list[WorkloadView]:
        found = list_items(self.keelctl_json("get", "workloads"), "workloads")
        return [WorkloadView.parse(w) for w in found]

    def workload(self, name: str) -> WorkloadView:
        return WorkloadView.parse(self.keelctl_json("describe", "workload", name))

    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def join(self, host: str) -> str:
        """Joins host as an agent would (the join token) and returns its credential."""
        from keel.v1 import agent_pb2, agent_pb2_grpc

        join_token = self.join_token_file.read_text().strip()
        with self.channel(join_token) as channel:
            reply = agent_pb2_grpc.AgentServiceStub(channel).Join(
                agent_pb2.JoinRequest(host=host), timeout=10
            )
        return str(reply.credential)

    def channel(self, token: str | None = None) -> Any:
        """A gRPC channel to the control plane whose calls carry token (default: admin's;
        "" for none)."""
        return authorized_channel(self.address, token)

    def instances_rpc(self, workload: str | None = None) -> list[InstanceView]:
        """ListInstances over gRPC: the view `instances` gives, in milliseconds, not a process
        (of the first replica, with several)."""
        with InstanceSampler(self.address.split(",")[0], workload) as sampler:
            return sampler.sample()

    def hosts_rpc(self) -> list[HostView]:
        """ListHosts over gRPC: the view `hosts_status` gives, as instances_rpc does."""
        from google.protobuf.json_format import MessageToDict

        from keel.v1 import fleet_pb2, fleet_pb2_grpc

        with authorized_channel(self.address.split(",")[0]) as channel:
            reply = fleet_pb2_grpc.FleetServiceStub(channel).ListHosts(
                fleet_pb2.ListHostsRequest(), timeout=5
            )
        return [
            HostView.parse(MessageToDict(h, preserving_proto_field_name=True)) for h in reply.hosts
        ]

    # ----------------------------------------------------------------- workloads

    def server_command(self) -> list[str]:
        """A workload command that serves HTTP on its `http` port (a script in the test dir)."""
        return [sys.executable, str(self.server_script), "${KEEL_PORT_HTTP}"]

    def manifest(self, name: str = "web", **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("command", self.server_command())
        return workload_manifest(name, **kwargs)

    def write_manifest(self, doc: Mapping[str, Any] | str) -> Path:
        """Writes a manifest (a dict as YAML, or raw text as given) into the test dir."""
        self._manifests += 1
        path = self.root / "manifests" / f"{self._manifests:03d}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(dict(doc)))
        return path

    def apply(self, doc: Mapping[str, Any] | str) -> subprocess.CompletedProcess[str]:
        return self.keelctl("apply", "-f", str(self.write_manifest(doc)))

    def apply_ok(self, doc: Mapping[str, Any] | str) -> subprocess.CompletedProcess[str]:
        return self.keelctl_ok("apply", "-f", str(self.write_manifest(doc)))

    # ----------------------------------------------------------------- conditions

    def wait_hosts_ready(
        self, *, since: datetime | None = None, timeout: float = 30.0
    ) -> list[HostView]:
        """Waits until every agent's host is READY (and, with since, heartbeated after it)."""

        def ready(found: list[HostView]) -> list[HostView] | None:
            hosts = {h.name: h for h in found}
            for name in self.hosts:
                h = hosts.get(name)
                if h is None or h.state != "READY":
                    return None
                if since is not None and (h.last_heartbeat is None or h.last_heartbeat < since):
                    return None
            return list(hosts.values())

        if not self._agents:
            return self.hosts_status()
        return wait_for(
            _confirmed(ready, self.hosts_rpc, self.hosts_status),
            timeout=timeout,
            interval=0.1,
            message=f"hosts {self.hosts} READY",
        )

    def wait_running(
        self, workload: str, count: int, *, generation: int | None = None, timeout: float = 45.0
    ) -> list[InstanceView]:
        """Waits until exactly `count` instances of workload exist, all desired and observed
        RUNNING and ready (of `generation`, if given), and returns them."""

        def converged(insts: list[InstanceView]) -> list[InstanceView] | None:
            if len(insts) != count:
                return None
            for i in insts:
                if i.desired != "RUNNING" or not i.serving or i.pid <= 0:
                    return None
                if generation is not None and i.generation != generation:
                    return None
            return insts

        return wait_for(
            _confirmed(
                converged, lambda: self.instances_rpc(workload), lambda: self.instances(workload)
            ),
            timeout=timeout,
            interval=0.1,
            message=f"{count} ready instances of {workload}"
            + (f" at generation {generation}" if generation is not None else ""),
        )


V = TypeVar("V")


def _confirmed(
    check: Callable[[list[V]], T | None],
    rpc: Callable[[], list[V]],
    keelctl: Callable[[], list[V]],
) -> Callable[[], T | None]:
    """A condition to poll: check over a listing by gRPC (milliseconds, where keelctl is a
    process of its own), then, once that holds or the call fails (the replica it asks is away),
    over keelctl's listing, whose answer is the one that counts."""

    def poll() -> T | None:
        with contextlib.suppress(Exception):
            if not check(rpc()):
                return None
        return check(keelctl())

    return poll


# The admin token file of each control plane a Fleet started, by its gRPC address: a channel a
# test opens to that address carries the admin token unless the test says otherwise.
_ADMIN_TOKENS: dict[str, Path] = {}


def admin_token_for(address: str, token_file: Path) -> None:
    """Raw channels to `address` carry the admin token in `token_file` (another replica of a
    fleet shares its first replica's database, and so its tokens)."""
    _ADMIN_TOKENS[address] = token_file


# The CA of each control plane a Fleet started with TLS, by address.
_TLS_CAS: dict[str, Path] = {}


def authorized_channel(address: str, token: str | None = None, *, options: Any = None) -> Any:
    """A plain-text gRPC channel to address whose every call carries `Bearer token` (default:
    the admin token of the Fleet serving there; "" for none)."""
    import grpc

    from keel.ctl.auth import TokenInterceptor

    ca = _TLS_CAS.get(address)
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes()), options=options)
        if ca is not None
        else grpc.insecure_channel(address, options=options)
    )
    if token is None and address in _ADMIN_TOKENS:
        token = _ADMIN_TOKENS[address].read_text().strip()
    if not token:
        return channel
    return _ClosingChannel(grpc.intercept_channel(channel, TokenInterceptor(token)), channel)


class _ClosingChannel:
    """An intercepted channel that closes the channel under it (grpc's does not, with `with`)."""

    def __init__(self, intercepted: Any, raw: Any) -> None:
        self._intercepted = intercepted
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._intercepted, name)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InstanceSampler:
    """Lists instances over gRPC, on demand or every `interval` in a background thread.

    Used as a context manager around a change (a rollout): `samples` then holds every listing
    taken while it ran, so a test can assert on what was true at every moment it saw.
    """

    def __init__(
        self,
        address: str,
        workload: str | None = None,
        interval: float = 0.02,
        *,
        token: str | None = None,
    ):
        from keel.v1 import fleet_pb2_grpc

        self._channel = authorized_channel(address, token)
        self._stub = fleet_pb2_grpc.FleetServiceStub(self._channel)
        self._workload = workload or ""
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[list[InstanceView]] = []
        self.errors: list[BaseException] = []

    def sample(self) -> list[InstanceView]:
        from google.protobuf.json_format import MessageToDict

        from keel.v1 import fleet_pb2

        reply = self._stub.ListInstances(
            fleet_pb2.ListInstancesRequest(workload=self._workload), timeout=5
        )
        return [
            InstanceView.parse(MessageToDict(i, preserving_proto_field_name=True))
            for i in reply.instances
        ]

    def start(self) -> None:
        """Samples in the background until close()."""
        self._thread = threading.Thread(target=self._run, name="instance-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:
                self.errors.append(exc)
            self._stop.wait(self._interval)

    def latest(self) -> list[InstanceView] | None:
        return self.samples[-1] if self.samples else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._channel.close()

    def __enter__(self) -> InstanceSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pids_of(instances: Iterable[InstanceView]) -> dict[str, int]:
    """instance id -> pid."""
    return {i.id: i.pid for i in instances}
