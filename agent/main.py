"""`keel-agent`: flags, logging, the event loop, signals; wires sync client, reconciler, driver.

SIGTERM/SIGINT stop the agent and leave its workloads running for the next agent to adopt,
unless --stop-workloads-on-exit (the `make run` fleet), which stops them first, each within
its grace period. Either way the agent persists local state and closes its channel.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
import structlog
import uvloop

from agent import credentials, lock
from agent.errors import AgentError, ConfigError, StateDirLocked
from agent.health import always_healthy, probe
from agent.metrics import AgentMetrics
from agent.outcome import Outbox
from agent.reconciler import Reconciler
from agent.runtime.base import Driver
from agent.runtime.fake import FakeDriver
from agent.runtime.process import ProcessDriver
from agent.settings import Settings, duration_s, parse_capacity, parse_labels, parse_listen
from agent.state import StateStore
from agent.sync import SyncClient
from agent.tasks import TaskGroup
from keel import logs
from keel.endpoint import EndpointError, MetricsServer, serve_metrics, write_addresses
from keel.model import Resources
from keel.tracing import configure_tracing, shutdown_tracing

log = structlog.get_logger("agent.main")


def agent_version() -> str:
    try:
        return importlib.metadata.version("keel")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def default_capacity() -> Resources:
    return Resources(
        cpu_millis=(os.cpu_count() or 1) * 1000,
        memory_mib=psutil.virtual_memory().total // (1024 * 1024),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keel-agent",
        description="Keel host agent: runs the instances the control plane places on this host.",
        epilog="Durations take a unit: 500ms, 10s, 5m, 1h. SIGTERM/SIGINT stop the agent and "
        "leave workloads running for the next agent to adopt (see --stop-workloads-on-exit).",
    )
    p.add_argument(
        "--controlplane",
        required=True,
        metavar="ADDR[,ADDR...]",
        help="control-plane replicas (host:port), tried in turn",
    )
    p.add_argument("--host", required=True, metavar="NAME", help="this host's name (its identity)")
    p.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="local state (state.json), workload logs and working dirs, addresses.json",
    )
    p.add_argument(
        "--driver",
        choices=("process", "fake"),
        default="process",
        help="run real processes, or simulated ones for benchmarks and tests (default: process)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="K=V",
        help="a host label matched by workload selectors (repeatable)",
    )
    p.add_argument(
        "--capacity",
        default="",
        metavar="cpu=MILLIS,memory=MIB",
        help="what the scheduler may place here (default: the machine's cpus and memory)",
    )
    p.add_argument(
        "--heartbeat-interval", default="10s", metavar="D", help="heartbeat period (default: 10s)"
    )
    p.add_argument(
        "--backoff-base", default="10s", metavar="D", help="first crash-restart wait (default: 10s)"
    )
    p.add_argument(
        "--backoff-max", default="5m", metavar="D", help="longest crash-restart wait (default: 5m)"
    )
    p.add_argument(
        "--backoff-reset",
        default="10m",
        metavar="D",
        help="a process up this long restarts its back-off from the base (default: 10m)",
    )
    p.add_argument(
        "--reconnect-base",
        default="200ms",
        metavar="D",
        help="first ceiling of the jittered reconnect back-off, doubling per failed attempt "
        "(default: 200ms)",
    )
    p.add_argument(
        "--reconnect-max",
        default="10s",
        metavar="D",
        help="cap of the jittered reconnect back-off to the control plane (default: 10s)",
    )
    p.add_argument(
        "--reconnect-reset-after",
        default="30s",
        metavar="D",
        help="the reconnect back-off starts over only after a stream stayed up this long, so "
        "a control plane that drops streams at once is not stormed (default: 30s)",
    )
    p.add_argument(
        "--connect-timeout",
        default="5s",
        metavar="D",
        help="how long a connect or a stream write may take before the agent reconnects "
        "(default: 5s)",
    )
    p.add_argument(
        "--degraded-log-interval",
        default="30s",
        metavar="D",
        help="while cut off from the control plane, warn this often how long it has been "
        "(default: 30s)",
    )
    p.add_argument(
        "--probe-interval",
        default="1s",
        metavar="D",
        help="process, health-check and followed-log polling period (default: 1s)",
    )
    p.add_argument(
        "--health-stuck-after",
        default="30s",
        metavar="D",
        help="a health check failing this long is reported stuck, HEALTH_CHECK_FAILING "
        "(default: 30s)",
    )
    p.add_argument(
        "--fake-start-delay",
        default="0s",
        metavar="D",
        help="fake driver: how long a simulated start takes (default: 0s)",
    )
    p.add_argument(
        "--fake-start-gate",
        type=Path,
        default=None,
        metavar="PATH",
        help="fake driver, for tests: while PATH exists, simulated starts wait (polled every "
        "50ms) before completing; delete it to let them finish",
    )
    p.add_argument(
        "--log-max-bytes",
        type=int,
        default=10 * 1024 * 1024,
        metavar="N",
        help="rotate a workload's stdout/stderr log beyond this size (default: 10485760)",
    )
    p.add_argument(
        "--log-backups",
        type=int,
        default=3,
        metavar="N",
        help="rotated copies kept per log (default: 3)",
    )
    p.add_argument(
        "--port-range",
        default="20000-32000",
        metavar="LOW-HIGH",
        help="workload ports (KEEL_PORT_*) are picked from this range, which should lie "
        "outside the kernel's ephemeral ports (default: 20000-32000)",
    )
    p.add_argument(
        "--stop-workloads-on-exit",
        action="store_true",
        help="stop every workload (each within its stop grace) when the agent exits",
    )
    p.add_argument(
        "--metrics",
        default="127.0.0.1:9465",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here; port 0 picks a free port (recorded in "
        "<state-dir>/addresses.json); 'off' disables (default: 127.0.0.1:9465)",
    )
    p.add_argument(
        "--trace-file",
        default=None,
        metavar="PATH",
        help="append finished trace spans to PATH as JSON lines (default: env KEEL_TRACE_FILE); "
        "OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    )
    p.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: JSON lines unless stdout is a terminal (default: auto)",
    )
    credentials.add_arguments(p)
    return p


def parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        lo = hi = 0
    if not sep or not 1024 <= lo <= hi <= 65535 or hi - lo < 15:
        raise ConfigError(
            f"--port-range: must be LOW-HIGH within 1024-65535 with at least 16 ports, got {text!r}"
        )
    return lo, hi


def settings_from_args(args: argparse.Namespace) -> Settings:
    addresses = tuple(a.strip() for a in args.controlplane.split(",") if a.strip())
    if not addresses:
        raise ConfigError("--controlplane: at least one address is required")
    if not args.host.strip():
        raise ConfigError("--host: must not be empty")
    if args.log_max_bytes <= 0 or args.log_backups < 0:
        raise ConfigError("--log-max-bytes must be positive and --log-backups not negative")
    port_range = parse_port_range(args.port_range)
    probe_interval = duration_s(args.probe_interval, "--probe-interval")
    heartbeat = duration_s(args.heartbeat_interval, "--heartbeat-interval")
    if probe_interval <= 0 or heartbeat <= 0:
        raise ConfigError("--probe-interval and --heartbeat-interval must be above 0")
    return Settings(
        host=args.host.strip(),
        state_dir=args.state_dir,
        controlplanes=addresses,
        driver=args.driver,
        labels=parse_labels(args.label),
        capacity=parse_capacity(args.capacity, default=default_capacity()),
        heartbeat_interval_s=heartbeat,
        backoff_base_s=duration_s(args.backoff_base, "--backoff-base"),
        backoff_max_s=duration_s(args.backoff_max, "--backoff-max"),
        backoff_reset_s=duration_s(args.backoff_reset, "--backoff-reset"),
        reconnect_base_s=duration_s(args.reconnect_base, "--reconnect-base"),
        reconnect_max_s=duration_s(args.reconnect_max, "--reconnect-max"),
        reconnect_reset_s=duration_s(args.reconnect_reset_after, "--reconnect-reset-after"),
        connect_timeout_s=duration_s(args.connect_timeout, "--connect-timeout"),
        degraded_log_interval_s=duration_s(args.degraded_log_interval, "--degraded-log-interval"),
        probe_interval_s=probe_interval,
        health_stuck_after_s=duration_s(args.health_stuck_after, "--health-stuck-after"),
        fake_start_delay_s=duration_s(args.fake_start_delay, "--fake-start-delay"),
        fake_start_gate=args.fake_start_gate,
        metrics_address=parse_listen(args.metrics, "--metrics"),
        trace_file=args.trace_file,
        log_max_bytes=args.log_max_bytes,
        log_backups=args.log_backups,
        port_range=port_range,
        stop_workloads_on_exit=args.stop_workloads_on_exit,
        log_format=args.log_format,
        join_token=credentials.join_token_from(args),
        tls=credentials.tls_from(args),
    )


def build_driver(settings: Settings) -> Driver:
    if settings.driver == "fake":
        return FakeDriver(
            start_delay_s=settings.fake_start_delay_s, start_gate=settings.fake_start_gate
        )
    return ProcessDriver(
        state_dir=settings.state_dir,
        log_max_bytes=settings.log_max_bytes,
        log_backups=settings.log_backups,
        port_range=settings.port_range,
    )


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """Run the agent until `stop` is set; then shut down as the module docstring says."""
    structlog.contextvars.bind_contextvars(host=settings.host)
    metrics = AgentMetrics()
    outbox = Outbox()  # the reconciler reports into it; the sync client opens it per stream
    reconciler = Reconciler(
        StateStore(settings.state_file),
        driver=build_driver(settings),
        settings=settings,
        prober=always_healthy if settings.driver == "fake" else probe,
        sink=outbox,
        metrics=metrics,
    )
    await reconciler.open()
    server = await asyncio.to_thread(start_metrics, settings, metrics)
    client = SyncClient(
        settings,
        target=reconciler,
        outbox=outbox,
        agent_version=agent_version(),
        metrics=metrics,
    )
    tasks = TaskGroup()
    loop_task = tasks.loop("reconciler", reconciler.run)
    tasks.loop("sync", client.run)
    log.info(
        "agent started",
        version=agent_version(),
        driver=settings.driver,
        controlplanes=list(settings.controlplanes),
        revision=reconciler.revision,
    )
    await stop.wait()
    log.info("agent stopping", stop_workloads=settings.stop_workloads_on_exit)
    # Stop reconciling first, so nothing is restarted while workloads are being stopped.
    loop_task.cancel()
    if settings.stop_workloads_on_exit:
        await reconciler.stop_all()
    await tasks.close()  # the sync task leaves its `async with` channel: the channel closes
    await reconciler.close()
    if server is not None:
        await asyncio.to_thread(server.close)
    log.info("agent stopped")


def start_metrics(settings: Settings, metrics: AgentMetrics) -> MetricsServer | None:
    """Serve /metrics and record its address; a port that cannot be bound is logged, not fatal.

    Not fatal because an agent that cannot export metrics should still run its workloads;
    the missing scrape target is what alerts (the control plane's view shows the host fine).
    """
    if settings.metrics_address is None:
        return None
    host, port = settings.metrics_address
    try:
        server = serve_metrics(metrics.registry, host, port)
    except EndpointError as e:
        log.error("cannot serve metrics", error=str(e))
        return None
    write_addresses(settings.addresses_file, {"metrics": server.address})
    log.info("serving metrics", address=server.address)
    return server


async def _amain(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        print(f"keel-agent: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, component="agent")
    try:
        # Before anything touches the state dir: one agent per state dir.
        held = lock.acquire(settings.state_dir)
    except StateDirLocked as e:
        log.error(
            "cannot start: the state dir is in use",
            error=str(e),
            holder_pid=e.pid,
            lock_file=str(e.path),
        )
        return 1
    except ConfigError as e:
        print(f"keel-agent: {e}", file=sys.stderr)
        return 2
    configure_tracing("keel-agent", trace_file=settings.trace_file)
    try:
        uvloop.run(_amain(settings))
    except AgentError as e:
        log.error("agent failed", error=str(e))
        return 1
    finally:
        shutdown_tracing()
        held.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
