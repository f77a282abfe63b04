"""`keel-agent`: flags, logging, the event loop, signals; wires sync client, reconciler, driver.

SIGTERM/SIGINT stop the agent and leave its workloads running for the next agent to adopt,
unless --stop-workloads-on-exit (the `make run` fleet), which stops them first, each within
its grace period. Either way the agent persists local state and closes its channel.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
import structlog
import uvloop

from agent.errors import AgentError, ConfigError
from agent.health import always_healthy, probe
from agent.reconciler import Reconciler
from agent.runtime.base import Driver
from agent.runtime.fake import FakeDriver
from agent.runtime.process import ProcessDriver
from agent.settings import Settings, duration_s, parse_capacity, parse_labels
from agent.state import StateStore
from agent.sync import SyncClient
from agent.tasks import TaskGroup
from keel.model import Resources

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
    p = argparse.ArgumentParser(prog="keel-agent", description="Keel host agent")
    p.add_argument("--controlplane", required=True, help="ADDR[,ADDR...] of the control plane")
    p.add_argument("--host", required=True, help="this host's name (its identity)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--driver", choices=("process", "fake"), default="process")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--capacity", default="", metavar="cpu=MILLIS,memory=MIB")
    p.add_argument("--heartbeat-interval", default="5s")
    p.add_argument("--backoff-base", default="10s")
    p.add_argument("--backoff-max", default="5m")
    p.add_argument("--backoff-reset", default="10m")
    p.add_argument("--reconnect-max", default="10s")
    p.add_argument("--probe-interval", default="1s")
    p.add_argument("--fake-start-delay", default="0s")
    p.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--log-backups", type=int, default=3)
    p.add_argument("--stop-workloads-on-exit", action="store_true")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    addresses = tuple(a.strip() for a in args.controlplane.split(",") if a.strip())
    if not addresses:
        raise ConfigError("--controlplane: at least one address is required")
    if not args.host.strip():
        raise ConfigError("--host: must not be empty")
    if args.log_max_bytes <= 0 or args.log_backups < 0:
        raise ConfigError("--log-max-bytes must be positive and --log-backups not negative")
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
        reconnect_max_s=duration_s(args.reconnect_max, "--reconnect-max"),
        probe_interval_s=probe_interval,
        fake_start_delay_s=duration_s(args.fake_start_delay, "--fake-start-delay"),
        log_max_bytes=args.log_max_bytes,
        log_backups=args.log_backups,
        stop_workloads_on_exit=args.stop_workloads_on_exit,
        log_format=args.log_format,
    )


def configure_logging(fmt: str) -> None:
    """JSON lines when not on a terminal (or asked), readable lines on one."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )


def build_driver(settings: Settings) -> Driver:
    if settings.driver == "fake":
        return FakeDriver(start_delay_s=settings.fake_start_delay_s)
    return ProcessDriver(
        state_dir=settings.state_dir,
        log_max_bytes=settings.log_max_bytes,
        log_backups=settings.log_backups,
    )


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """Run the agent until `stop` is set; then shut down as the module docstring says."""
    structlog.contextvars.bind_contextvars(host=settings.host)
    reconciler = Reconciler(
        StateStore(settings.state_file),
        driver=build_driver(settings),
        settings=settings,
        prober=always_healthy if settings.driver == "fake" else probe,
    )
    await reconciler.open()
    client = SyncClient(settings, target=reconciler, agent_version=agent_version())
    reconciler.sink = client
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
    log.info("agent stopped")


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
    configure_logging(settings.log_format)
    try:
        uvloop.run(_amain(settings))
    except AgentError as e:
        log.error("agent failed", error=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
