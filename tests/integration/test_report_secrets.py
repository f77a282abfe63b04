"""The control plane takes secret_env values out of an agent's reports itself
(`controlplane.report_secrets` in `controlplane.sync`), on a real Postgres and loopback gRPC:
an agent that does not redact (an older one) reports a crash-loop message with the value in
it, and the instance row holds the marker instead, on a stream opened with the full set and
on one that resumed from the agent's revision (sent nothing of the instance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentapi import serve_agents
from plans import until, write_plan

from agent import convert
from agent.status import InstanceReport
from controlplane.secrets import SecretBox, load_or_create
from controlplane.store import Store
from controlplane.sync import StreamRegistry
from keel.model import Phase, Resources, SecretValue, Workload, WorkloadSpec
from keel.v1 import agent_pb2_grpc

HOST = "h1"
READ_S = 10.0
SECRET = "correct-horse-battery-staple"
MARKER = "[redacted secret_env DB_PASS]"


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)


@pytest.fixture
async def served(store: Store, box: SecretBox) -> AsyncIterator[tuple[str, StreamRegistry]]:
    """The real AgentService with its writers running, on loopback."""
    async with serve_agents(store, box) as served:
        yield served


async def _open(channel: grpc.aio.Channel, *, revision: int) -> tuple[Any, Any]:
    call = agent_pb2_grpc.AgentServiceStub(channel).Sync()
    hello = convert.Hello(
        host=HOST, agent_version="t", revision=revision, labels={}, capacity=Resources(4000, 8192)
    )
    await call.write(convert.hello_to_pb(hello))
    first = await asyncio.wait_for(call.read(), READ_S)
    assert first.WhichOneof("msg") == "assignments"
    return call, first.assignments


def _crash_loop(instance_id: str, tail: str) -> Any:
    """What an agent that does not redact reports for a crash loop."""
    message = f"last exit: exit code 1; restarts: 2\nstderr (last lines):\n{tail}\n"
    report = InstanceReport(
        instance_id, Phase.FAILED, restart_count=2, last_exit="exit code 1", message=message
    )
    return convert.reports_to_pb([report], observed_at=datetime.now(UTC).timestamp())


@pytest.mark.parametrize("resumed", [False, True], ids=["stream-sent-it", "resumed-stream"])
async def test_a_report_quoting_a_secret_is_stored_with_the_marker(
    store: Store, box: SecretBox, served: tuple[str, StreamRegistry], resumed: bool
) -> None:
    """The row's message names the variable where the agent's report had its value."""
    address, registry = served
    spec = WorkloadSpec(
        command=("/bin/false",),
        resources=Resources(100, 64),
        secret_env={"DB_PASS": SecretValue(value=SECRET)},
    )
    async with grpc.aio.insecure_channel(address) as channel:
        call, _ = await _open(channel, revision=0)
        await store.apply_workload(Workload(name="db", replicas=1, spec=box.seal("db", spec)))
        await write_plan(store, "db", create_on=[HOST])
        registry.wake(HOST)  # what the host's NOTIFY does in the control plane
        update = (await asyncio.wait_for(call.read(), READ_S)).assignments
        [given] = update.assignments
        assert given.spec.secret_env["DB_PASS"].value == SECRET  # opened for the agent only
        if resumed:
            call.cancel()
            call, first = await _open(channel, revision=update.revision)
            assert not first.assignments  # nothing new: this stream was not sent the instance
        await call.write(_crash_loop(given.instance_id, f"login as app with {SECRET} refused"))

        async def stored() -> bool:
            return "refused" in (await store.get_instance(given.instance_id)).message

        await until(stored, what="the report stored")
        message = (await store.get_instance(given.instance_id)).message
        assert SECRET not in message
        assert f"login as app with {MARKER} refused" in message
        call.cancel()
