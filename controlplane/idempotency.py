"""Request ids: a mutating call retried with the id of an attempt that committed gets that
attempt's answer, and is not applied twice.

A caller names one request with the gRPC metadata `keel-request-id` (keelctl sends a fresh one
per invocation and the same one when it tries again; any gRPC client can send one). The record
of it (the id, the method, a digest of the request and the serialized answer) is written in the
SAME transaction as the write (`once_in`, called by the stores inside theirs: `workload_store`,
`cordon_store`, `operation_store`), so a write and its record commit together or not at all:
a crash, a lost connection or a client that gave up between them cannot leave a write applied
but unrecorded. The record is claimed first in that transaction, so a second attempt running
at the same time waits on it, then answers from it.

Neighbours: `fleet` and `operations_api` (the handlers) wrap each write in `Requests.run`;
`main` runs `prune` every `--request-prune-interval` (records older than `--request-retention`
go, a bounded batch at a time). A call without an id is carried out as before, its answer built
in its transaction too.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from controlplane.auth import caller
from controlplane.errors import Conflict, InvalidArgument, Unavailable
from controlplane.sql import Conn, Database

log = structlog.get_logger("keel.requests")

REQUEST_ID_KEY = "keel-request-id"
# Long enough for a UUID with a prefix; the characters of ids tools print and logs quote.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
# Records deleted per statement when pruning: the table is never locked for long.
PRUNE_BATCH = 1000

T = TypeVar("T")
R = TypeVar("R", bound=Message)


def request_id_of(metadata: Any) -> str | None:
    """The caller's request id from its invocation metadata; None when it sent none.
    InvalidArgument naming the key if it is malformed."""
    for item in metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key != REQUEST_ID_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        if not _REQUEST_ID.match(text):
            raise InvalidArgument(
                f"{REQUEST_ID_KEY}: must be 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':' and '-', "
                "starting with a letter or digit (a UUID will do)"
            )
        return text
    return None


def digest_of(request: Message, *, actor: str = "") -> bytes:
    """What a reused id is compared by: the caller and the request's deterministic bytes,
    hashed. The caller is in it so that one credential cannot read another's answer by
    sending its request id (a reuse by another caller is refused as a different request)."""
    h = hashlib.sha256(actor.encode())
    h.update(b"\0")
    h.update(request.SerializeToString(deterministic=True))
    return h.digest()


class AlreadyDone(Exception):
    """Raised inside a write's transaction when its request id was recorded by an attempt that
    committed: the transaction rolls back (this attempt writes nothing) and `Requests.run`
    answers with the recorded response."""

    def __init__(self, response: bytes) -> None:
        super().__init__("already done")
        self.response = response


@dataclass
class Once(Generic[T]):
    """One call's write, as the store's transaction sees it: `begin` claims the request id,
    `end` builds the answer from the transaction's own connection and records it."""

    method: str
    request_id: str | None
    digest: bytes
    respond: Callable[[Conn, T], Awaitable[Message]]
    response: Message | None = field(default=None, init=False)

    async def begin(self, conn: Conn) -> None:
        if self.request_id is None:
            return
        # ON CONFLICT waits for an attempt with the same id that has not committed yet, then
        # finds its record (or, if it rolled back, inserts this one).
        claimed = await conn.fetchval(
            """INSERT INTO request (id, method, digest, response) VALUES ($1, $2, $3, '')
               ON CONFLICT (id) DO NOTHING RETURNING true""",
            self.request_id,
            self.method,
            self.digest,
        )
        if claimed:
            return
        prior = await conn.fetchrow(
            "SELECT method, digest, response FROM request WHERE id = $1", self.request_id
        )
        if prior is None:  # pruned between the two statements
            raise Conflict(f"{REQUEST_ID_KEY} {self.request_id} is being pruned; try again")
        if prior["method"] != self.method or bytes(prior["digest"]) != self.digest:
            raise InvalidArgument(
                f"{REQUEST_ID_KEY}: {self.request_id} was already used for a different request "
                f"({prior['method']}); a request id names one request: send a new id for a new "
                "request, nothing was changed"
            )
        raise AlreadyDone(bytes(prior["response"]))

    async def end(self, conn: Conn, result: T) -> None:
        self.response = await self.respond(conn, result)
        if self.request_id is not None:
            await conn.execute(
                "UPDATE request SET response = $2 WHERE id = $1",
                self.request_id,
                self.response.SerializeToString(deterministic=True),
            )


async def once_in(conn: Conn, once: Once[T] | None, write: Callable[[], Awaitable[T]]) -> T:
    """Runs `write` inside the caller's transaction on `conn` as the request `once` names: its
    id claimed first, its answer recorded last, both in that transaction."""
    if once is None:
        return await write()
    await once.begin(conn)
    result = await write()
    await once.end(conn, result)
    return result


class Requests:
    """Runs each mutating call's write once per request id, to the end even if the caller
    goes away, so that what a retry finds is the write's outcome, never a write still racing
    it (a cancelled call's transaction could otherwise commit after its cancel was sent)."""

    def __init__(self, *, on_replay: Callable[[str], None] | None = None) -> None:
        self._running: set[asyncio.Task[Any]] = set()
        self._on_replay = on_replay

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        request: Message,
        *,
        reply: type[R],
        write: Callable[[Once[T]], Awaitable[T]],
        respond: Callable[[Conn, T], Awaitable[R]],
        method: str = "",
    ) -> R:
        """The answer of `write` (built by `respond` in its transaction), or, when this
        request id was recorded by an attempt that committed, that attempt's answer.
        `method` names the call where its request message is shared by several (a pause's id
        must not answer a resume); by default the request message's name."""
        method = method or type(request).DESCRIPTOR.name.removesuffix("Request")
        once: Once[T] = Once(
            method,
            request_id_of(context.invocation_metadata()),
            digest_of(request, actor=who.name if (who := caller()) is not None else ""),
            respond,
        )
        task = asyncio.create_task(self._write(once, write), name=f"write-{method}")
        self._running.add(task)
        task.add_done_callback(self._finished)
        recorded = await asyncio.shield(task)
        if recorded is not None:
            log.info("request answered from its record", method=method, request_id=once.request_id)
            if self._on_replay is not None:
                self._on_replay(method)
            return reply.FromString(recorded)
        assert isinstance(once.response, reply)
        return once.response

    @staticmethod
    async def _write(once: Once[T], write: Callable[[Once[T]], Awaitable[T]]) -> bytes | None:
        try:
            await write(once)
        except AlreadyDone as done:
            return done.response
        return None

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Seen by the caller unless it went away; logged here for the case it did.
            log.debug("write ended with an error", task=task.get_name(), error=str(error))

    async def drain(self) -> None:
        """Waits for the writes under way (shutdown: none is cut off half way by us)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


async def prune(db: Database, *, retention_s: float) -> int:
    """Deletes request records older than `retention_s`, in batches; returns how many."""
    total = 0
    while True:
        status = await db.execute(
            """DELETE FROM request WHERE id IN (
                   SELECT id FROM request
                   WHERE created_at < now() - $1::float8 * interval '1 second'
                   ORDER BY created_at LIMIT $2)""",
            retention_s,
            PRUNE_BATCH,
        )
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


async def prune_forever(
    db: Database,
    *,
    retention_s: float,
    interval_s: float,
    on_pruned: Callable[[int], None] | None = None,
) -> None:
    """`prune` every `interval_s` (every replica may: a record is deleted once). A database
    away is waited out: the next round tries again."""
    while True:
        try:
            pruned = await prune(db, retention_s=retention_s)
        except Unavailable:
            pruned = 0
        if pruned:
            log.info("request records pruned", records=pruned)
            if on_pruned is not None:
                on_pruned(pruned)
        await asyncio.sleep(interval_s)
