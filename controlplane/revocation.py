"""Open calls end when the credential that opened them is revoked.

A call is authenticated once, when it opens (`controlplane.auth`), but a stream may stay open
for days: an agent's Sync (which carries its host's assignments, env included), `keelctl logs
--follow`, `keelctl op watch`. `OpenCalls` keeps, on each replica, the streaming calls open
here by the id of the token that opened them; `check` reads which of those ids are still live
(present and not revoked), and every call of one that is not ends with UNAUTHENTICATED and a
message saying what was revoked and what to do. It checks:
- at once when a token is revoked or replaced on any replica: `TokenStore.revoke` (keelctl
  token revoke, host reset-credential) and `TokenStore.reset` (keel-controlplane reset-token)
  NOTIFY `keel_token` in their transaction, and `controlplane.listener` calls `notified`; and
  when the listener connects again (notifications sent meanwhile are lost);
- and every `--auth-cache` anyway, the bound a revocation already has for new calls on the
  other replicas: a lost notification, or a token revoked by hand in the database, ends the
  call within it.
With Postgres away a check fails and the calls stay open, as tokens already checked keep
working (`TokenStore`).

How a call ends (`until_revoked`, `OpenCall.end`): if the call's task is in the handler, it is
cancelled there, so the handler's cleanup runs as when the client goes away (`controlplane.sync`
marks the host disconnected); that cancel is taken back and the call ends with the code set.
If grpc is writing the last message instead, the call ends when grpc next asks for one, and
that message is not sent. A call whose client stopped reading cannot end either way (grpc's
write waits for it): it gets nothing more, and the next check cancels it in that write.

Each call ended is counted in `keel_auth_denied_total{reason="revoked_open"}` and logged with the
token's name, never the token. Neighbours: `auth` (wraps every streaming call it lets through),
`tokens` (the NOTIFY), `listener`, `main` (runs `watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from controlplane.cancelling import end_if_cancelled
from controlplane.sql import Database
from controlplane.tokens import HOST, Caller

log = structlog.get_logger("keel.revocation")

# The reason ended calls are counted under in keel_auth_denied_total.
REASON = "revoked_open"
# With --auth-cache 0 (every new call reads its token), checking every open call back to back
# would be a busy loop on the database: at most this often, then.
MIN_INTERVAL_S = 1.0

_LIVE = "SELECT id FROM token WHERE id = ANY($1::text[]) AND revoked_at IS NULL"


def revoked_message(who: Caller) -> str:
    """What the caller of an ended call reads: what was revoked and what to do (no secret)."""
    if who.role == HOST:
        return (
            f"the credential of host {who.host!r} ({who.name}) was revoked or reset; this stream "
            "is closed. The agent must join again: with its join token (keel-agent "
            "--join-token-file) it does so by itself; an admin issues one with keelctl token "
            "create --role join --name NAME"
        )
    return (
        f"the token {who.name!r} ({who.role}) was revoked; this call is closed. Ask an admin "
        "for a new one (keelctl token create --role ROLE --name NAME) and set KEEL_TOKEN or "
        "--token-file"
    )


@dataclass(eq=False)
class OpenCall:
    """One streaming call open here (`OpenCalls.tracking`); `message` is set when its credential
    is revoked."""

    caller: Caller
    task: asyncio.Task[Any] | None
    # The call's log context (its rpc and peer, `controlplane.interceptors`), for the line
    # that says it was closed.
    log_vars: dict[str, Any]
    message: str | None = None
    # True while the call's task runs the handler (`until_revoked`), not grpc's write.
    stepping: bool = False
    # Cancels of the call's task this module made, and must take back when they land.
    cancels: int = 0

    def end(self, message: str) -> None:
        """Ends the call: at once if its task is in the handler (it is cancelled where it waits,
        so its cleanup runs), else when grpc next asks the handler for a message."""
        if self.message is None:
            self.message = message
        if self.stepping:
            self.cancel()

    def cancel(self) -> None:
        if self.task is not None:
            self.cancels += 1
            self.task.cancel()


class OpenCalls:
    """The streaming calls open on this replica, by token id; ends those of revoked tokens."""

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        on_denied: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._db = db
        self._interval_s = max(interval_s, MIN_INTERVAL_S)
        self._on_denied = on_denied
        self._open: dict[str, set[OpenCall]] = {}
        # Ended, but not finished yet: their client stopped reading (see the module docstring).
        self._ending: set[OpenCall] = set()
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def tracking(self, who: Caller) -> Iterator[OpenCall]:
        """The call is open for the block (run it with `until_revoked`)."""
        call = OpenCall(who, asyncio.current_task(), structlog.contextvars.get_contextvars())
        if not who.token_id:  # not a token verified by TokenStore: nothing to check it by
            yield call
            return
        self._open.setdefault(who.token_id, set()).add(call)
        try:
            yield call
        finally:
            calls = self._open.get(who.token_id)
            if calls is not None:
                calls.discard(call)
                if not calls:
                    del self._open[who.token_id]
            self._ending.discard(call)
            call.task = None

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._open.values())

    def notified(self, name: str = "") -> None:
        """A token was revoked or replaced somewhere (or notifications may have been lost)."""
        self._wake.set()

    async def check(self) -> int:
        """Ends every call open here whose token is no longer live; how many it ended."""
        for call in list(self._ending):
            # Still there a whole check later: its client stopped reading, so grpc's write
            # waits (and it gets nothing more): cancelled there.
            log.info("a closed call's client reads nothing; cancelling it",
                     **{**call.log_vars, "token_name": call.caller.name})  # fmt: skip
            call.cancel()
        ids = list(self._open)
        if not ids:
            return 0
        live = {r["id"] for r in await self._db.fetch(_LIVE, ids)}
        ended = 0
        for token_id in ids:
            if token_id in live:
                continue
            for call in self._open.pop(token_id, set()):
                call.end(revoked_message(call.caller))
                self._ending.add(call)
                self._on_denied(REASON)
                ended += 1
                who = call.caller
                log.warning(
                    "credential revoked; its open call is closed",
                    **{**call.log_vars, "token_name": who.name, "role": who.role},
                )
        return ended

    async def watch(self) -> None:
        """Checks when notified and every interval; runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away: the calls stay open
                end_if_cancelled()
                log.debug("open calls not checked; trying again", error=str(exc))


def _take_back(call: OpenCall) -> bool:
    """Takes back the cancels of the call's task this module made; True if no other is pending
    (the client leaving, the server stopping): the call may then end with its own code."""
    task = asyncio.current_task()
    if task is None:
        return False
    remaining = task.cancelling()
    for _ in range(call.cancels):
        remaining = task.uncancel()
    call.cancels = 0
    return remaining == 0


async def until_revoked(
    responses: AsyncGenerator[Any, None],
    call: OpenCall,
    context: grpc.aio.ServicerContext,
) -> AsyncGenerator[Any, None]:
    """The handler's responses until the call's credential is revoked (`OpenCall.end`); then
    the call ends UNAUTHENTICATED with the message. The handler runs in the call's own task, as
    without this: `stepping` says when that task is in the handler, where a cancel ends it."""
    try:
        while call.message is None:
            call.stepping = True
            try:
                response = await anext(responses)
            except StopAsyncIteration:
                return
            except (asyncio.CancelledError, Exception):
                # Ended: whatever the handler raised on the way out (its cancel, or what a
                # cancel became), the call ends for its credential, unless someone else
                # cancelled it too.
                if call.message is None or not _take_back(call):
                    raise
                break
            finally:
                call.stepping = False
            if call.message is not None:  # revoked as this message came: it is not sent
                break
            yield response
        if not _take_back(call):  # the handler swallowed a cancel that was not only ours
            raise asyncio.CancelledError
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details(call.message)
    finally:
        await responses.aclose()
