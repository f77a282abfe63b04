"""What the hostile-input tests share: raw gRPC calls to a running control plane (any bytes,
any message), and a snapshot of its database to prove a refused call changed nothing.

Used by tests/e2e/test_hostile_input.py (one regression per defect) and
tests/e2e/test_hostile_property.py (generated input against every RPC).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
import grpc

from keel.v1 import agent_pb2, fleet_pb2

FLEET = fleet_pb2.DESCRIPTOR.services_by_name["FleetService"]
AGENT = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
TABLES = ("host", "workload", "instance", "event", "leader", "token")


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str


class Database:
    """A connection of the test's own to the fleet's database, for snapshots."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection = self._loop.run_until_complete(asyncpg.connect(url))

    def snapshot(self) -> dict[str, str]:
        """A digest of every row of every table of the schema, and every sequence's position
        (a refused call that got as far as an INSERT would have moved one)."""

        async def digest() -> dict[str, str]:
            relations = await self._conn.fetch(
                """SELECT c.oid::regclass::text AS name, c.relkind::text AS kind
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'S')
                   ORDER BY 1"""
            )
            out = {}
            for rel in relations:
                # Names from the catalog (regclass text is quoted where needed), not input.
                if rel["kind"] == "S":
                    row = await self._conn.fetchrow(
                        f"SELECT last_value, is_called FROM {rel['name']}"
                    )
                    out[rel["name"]] = f"{row['last_value']}/{row['is_called']}"
                else:
                    out[rel["name"]] = await self._conn.fetchval(
                        "SELECT coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                        f"FROM {rel['name']} t"
                    )
            missing = set(TABLES) - set(out)
            assert not missing, f"tables not found in the schema: {sorted(missing)}"
            return out

        return self._loop.run_until_complete(digest())

    def execute(self, sql: str) -> None:
        """Writes behind the control plane's back (a row from an older version, say)."""
        self._loop.run_until_complete(self._conn.execute(sql))

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


@contextmanager
def database(url: str) -> Iterator[Database]:
    db = Database(url)
    try:
        yield db
    finally:
        db.close()


def call(channel: grpc.Channel, method: str, request: bytes, *, timeout: float = 15) -> Answer:
    """Calls FleetService/method with raw request bytes; a streaming answer is read to its end."""
    desc = FLEET.methods_by_name[method]
    path = f"/{FLEET.full_name}/{method}"
    try:
        if desc.server_streaming:
            for _ in channel.unary_stream(path)(request, timeout=timeout):
                pass
        else:
            channel.unary_unary(path)(request, timeout=timeout)
    except grpc.RpcError as err:
        return Answer(err.code(), err.details() or "")
    return Answer(grpc.StatusCode.OK, "")


def sync_first(channel: grpc.Channel, first: bytes, *, timeout: float = 15) -> Answer:
    """Opens AgentService.Sync with one raw message and reads what comes back first."""
    path = f"/{AGENT.full_name}/Sync"
    stream = channel.stream_stream(path)(iter([first]), timeout=timeout)
    try:
        next(stream)
    except grpc.RpcError as err:
        return Answer(err.code(), err.details() or "")
    except StopIteration:
        return Answer(grpc.StatusCode.OK, "")
    finally:
        stream.cancel()
    return Answer(grpc.StatusCode.OK, "")


def hello(**fields: object) -> bytes:
    """An AgentMessage opening a stream with Hello, valid unless fields say otherwise."""
    msg = agent_pb2.AgentMessage()
    h = msg.hello
    h.host = str(fields.get("host", "good-host"))
    h.agent_version = str(fields.get("agent_version", "test"))
    h.revision = int(fields.get("revision", 0))  # type: ignore[call-overload]
    h.capacity.cpu_millis = int(fields.get("cpu_millis", 1000))  # type: ignore[call-overload]
    h.capacity.memory_mib = int(fields.get("memory_mib", 1024))  # type: ignore[call-overload]
    for k, v in dict(fields.get("labels", {})).items():  # type: ignore[call-overload]
        h.labels[k] = v
    return msg.SerializeToString()
