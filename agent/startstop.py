"""Starting and stopping one instance's process through the driver, with their log lines.

`agent.reconciler` runs `launch` and `halt` in the instance's start and stop tasks and records
what they return (`agent.restart` decides when a failed start is retried). Every way a start
can fail comes back as one error string for the instance's report (START_FAILED), never as an
exception: a driver's `StartFailed` carries the exec error, anything else is logged with its
exception as well. A first start whose assignment carries the operator's trace context is a
span "agent.start_instance" in that trace, so one trace runs from `keelctl apply` to the
process. The secret_env values join the environment here (`agent.secretenv`), at each start
and nowhere else; the start keeps them (`Launched.secrets`) so that what the process prints
can be redacted (`keel.redact`). A stop asks the process to go, then kills its group after
the grace period.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Status, StatusCode

from agent.errors import StartFailed
from agent.planner import Start
from agent.runtime.base import Driver, ExitInfo, Handle, instance_env
from agent.secretenv import secret_values
from agent.state import InstanceRecord
from keel import tracing
from keel.redact import Redactor

_tracer = tracing.tracer("keel.agent")


@dataclass(frozen=True)
class Launched:
    """The outcome of one start: a handle, or the error that kept it from starting."""

    ports: dict[str, int]
    handle: Handle | None = None
    error: str = ""
    secrets: Redactor = field(default_factory=Redactor)  # the secret_env values it was given


async def launch(
    action: Start, record: InstanceRecord, *, driver: Driver, host: str, log: Any
) -> Launched:
    """Start the process for `action`; ports already allocated to the instance are kept."""
    a = action.assignment
    ports = dict(record.ports)
    if set(ports) != set(a.spec.ports):
        try:
            ports = driver.allocate_ports(a.spec.ports)
        except OSError as e:
            # Reported as a failed start, and retried on the start back-off.
            return Launched({}, None, f"cannot allocate ports {', '.join(a.spec.ports)}: {e}")
    env = instance_env(
        a.spec, host=host, workload=a.workload, instance_id=a.instance_id, ports=ports
    )
    secrets = Redactor()
    if a.spec.secret_env:
        try:
            # In a thread: a {file: PATH} value is read from disk at each start.
            values = await asyncio.to_thread(secret_values, a.spec)
        except StartFailed as e:
            return Launched(ports, None, str(e))
        env.update(values)
        secrets = Redactor(values)
    span = None
    if a.trace_context and not action.restart:
        # The first start of an operator's change joins that operator's trace.
        span = _tracer.start_span(
            "agent.start_instance",
            context=tracing.context_from_traceparent(a.trace_context),
            attributes={
                "keel.instance": a.instance_id,
                "keel.workload": a.workload,
                "keel.host": host,
            },
        )
    handle: Handle | None = None
    try:
        handle = await driver.start(a.instance_id, a.spec, env=env, ports=ports)
    except StartFailed as e:
        error = f"{e} (command: {shlex.join(a.spec.command)})"
    except Exception as e:  # one handler for every failure: reported, retried
        log.exception("start failed unexpectedly")
        error = f"{type(e).__name__}: {e}"
    else:
        error = ""
    if span is not None:
        if handle is None:
            span.set_status(Status(StatusCode.ERROR, error))
        else:
            span.set_attribute("keel.pid", handle.pid)
        span.end()
    return Launched(ports, handle, error, secrets)


async def halt(
    driver: Driver,
    handle: Handle,
    *,
    grace_s: float,
    why: str,
    log: Any,
    stopping_for: Callable[[], float],
) -> ExitInfo:
    """Stop the process (SIGTERM, then SIGKILL to its group after `grace_s`); how it ended.

    TimeoutError if it survives SIGKILL: it is reported STOP_TIMEOUT (stuck) while that
    lasts, and the next pass stops it again. `stopping_for` is how long the stop has been
    under way, counted from the first attempt.
    """
    log.info("stopping", why=why, grace_s=grace_s)
    try:
        result = await driver.stop(handle, grace_s=grace_s)
    except TimeoutError:
        log.error("process survives SIGKILL", stopping_for_s=stopping_for())
        raise
    if stopping_for() > grace_s:
        log.warning(
            "process outlived its stop grace and was killed",
            exit=result.describe(),
            grace_s=grace_s,
        )
    log.info("stopped", exit=result.describe())
    return result
