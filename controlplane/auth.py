"""Who may call what: the one table of method -> role, and the interceptor that enforces it.

Every call but health checking and reflection (open, so load balancers and grpcurl can find
the service without a credential; they reveal nothing about the fleet) must carry
`authorization: Bearer <token>` (`controlplane.tokens`). No token, or one that is not valid:
UNAUTHENTICATED. A valid token whose role is too low: PERMISSION_DENIED, naming the role the
call needs. A method missing from `REQUIRED` is refused (fail closed): a new RPC needs a row.

The caller is kept for the handler in a context variable (`caller()`): `controlplane.actor`
names it as the actor of every change, `controlplane.sync` checks that a host credential syncs
its own host. Refusals are counted in `keel_auth_denied_total{reason}` and logged with the
method, the peer and the reason, never the token. A streaming call stays open only while its
token does: `controlplane.revocation` ends it when the token is revoked (`open_calls`).

Placed after `controlplane.interceptors.ObservabilityInterceptor`, so refused calls get their
span, log context and `keel_grpc_requests_total` code like any other.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from controlplane.errors import PermissionDenied, Unavailable
from controlplane.metrics import Metrics
from controlplane.revocation import OpenCalls, until_revoked
from controlplane.tokens import (
    ADMIN,
    HOST,
    JOIN,
    OPERATOR,
    OPERATOR_ROLES,
    VIEWER,
    Caller,
    Denied,
    TokenStore,
)

log = structlog.get_logger("keel.auth")

_FLEET = "/keel.v1.FleetService/"
_AGENT = "/keel.v1.AgentService/"
# Services anyone may call: standard health checking and server reflection.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# Every method and the least role that may call it.
REQUIRED: dict[str, str] = {
    **{
        _FLEET + m: VIEWER
        for m in (
            "GetWorkload", "ListWorkloads", "GetHost", "ListHosts", "GetInstance",
            "ListInstances", "ListStuck", "ListEvents", "GetLogs", "PlanDrain",
            "GetOperation", "ListOperations", "WatchOperation", "GetRolloutHistory",
            "GetRolloutStatus", "GetFreeze",
        )
    },
    **{
        _FLEET + m: OPERATOR
        for m in (
            "ApplyWorkload", "DeleteWorkload", "Cordon", "Uncordon", "Drain", "CancelOperation",
            "DeleteHost", "PauseRollout", "ResumeRollout", "UndoRollout", "PromoteRollout",
            "AbortRollout", "Freeze", "Unfreeze",
        )
    },
    **{
        _FLEET + m: ADMIN
        for m in ("CreateToken", "ListTokens", "RevokeToken", "ResetHostCredential")
    },
    _AGENT + "Join": JOIN,
    _AGENT + "Sync": HOST,
}  # fmt: skip

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("keel_caller", default=None)


def caller() -> Caller | None:
    """The verified caller of the RPC being handled (None outside an authenticated call)."""
    return _caller.get()


def require_host(host: str, *, on_denied: Callable[[str], None]) -> None:
    """PermissionDenied unless the caller's credential is host's own (AgentSync calls this with
    the host its Hello names). No caller: the servicer was called without this interceptor."""
    who = caller()
    if who is not None and who.host != host:
        on_denied("host")
        log.warning("sync refused: credential of another host", host=host, caller=who.name)
        raise PermissionDenied(
            f"hello.host: this credential is {who.name!r}; it may sync only its own host"
        )


def permits(required: str, role: str) -> bool:
    if required in OPERATOR_ROLES:
        return role in OPERATOR_ROLES and OPERATOR_ROLES.index(role) >= OPERATOR_ROLES.index(
            required
        )
    return role == required


def _bearer(metadata: Any) -> str | None:
    for item in metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == "authorization":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _how_to_get(required: str) -> str:
    if required == HOST:
        return "only a host's own credential may sync it (keel-agent gets one by joining)"
    if required == JOIN:
        return "an agent joins with the join token (keel-agent --join-token-file)"
    return f"an admin can issue one: keelctl token create --role {required} --name NAME"


Behaviour = Callable[..., Any]


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates and authorizes every call by `REQUIRED`; see the module docstring."""

    def __init__(
        self, *, tokens: TokenStore, metrics: Metrics, open_calls: OpenCalls | None = None
    ) -> None:
        self._tokens = tokens
        self._metrics = metrics
        self._open_calls = open_calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        required = REQUIRED.get(method)
        token = _bearer(handler_call_details.invocation_metadata)
        verdict: Caller | Denied
        code = grpc.StatusCode.UNAUTHENTICATED
        if required is None:
            code, verdict = (
                grpc.StatusCode.PERMISSION_DENIED,
                Denied("unlisted", f"{method.lstrip('/')} is not open to any role"),
            )
        elif token is None:
            verdict = Denied(
                "missing",
                "this call needs a token: send `authorization: Bearer TOKEN` "
                "(keelctl: set KEEL_TOKEN or pass --token-file)",
            )
        elif not token:
            verdict = Denied("malformed", "the authorization header must be `Bearer TOKEN`")
        else:
            try:
                verdict = await self._tokens.verify(token)
            except Unavailable as exc:
                return _refusing(handler, grpc.StatusCode.UNAVAILABLE, str(exc), on_refused=None)
            if isinstance(verdict, Caller) and not permits(required, verdict.role):
                code = grpc.StatusCode.PERMISSION_DENIED
                verdict = Denied(
                    "role",
                    f"{method.rsplit('/', 1)[1]} needs role {required}"
                    f"{' or higher' if required in (VIEWER, OPERATOR) else ''}; token "
                    f"{verdict.name!r} has role {verdict.role}: {_how_to_get(required)}",
                )
        if isinstance(verdict, Denied):
            denied = verdict
            self._metrics.count_auth_denied(denied.reason)

            def refused() -> None:
                # Run in the call, so the log line carries its rpc and peer (and no token).
                log.warning("call refused", reason=denied.reason, code=code.name)

            return _refusing(handler, code, denied.message, on_refused=refused)
        return _as(handler, verdict, open_calls=self._open_calls)


def _kind(handler: grpc.RpcMethodHandler) -> tuple[str, Behaviour]:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return kind, behaviour
    raise ValueError("a method handler without a behaviour")


def _rebuilt(handler: grpc.RpcMethodHandler, kind: str, behaviour: Behaviour) -> Any:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _refusing(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode,
    message: str,
    *,
    on_refused: Callable[[], None] | None,
) -> Any:
    """The handler with its behaviour replaced by one that ends the call with code.

    It sets the code and returns rather than `context.abort()`, whose error grpc keeps on the
    call in a reference cycle that only a full collection frees (`interceptors._refuse` says
    more): a control plane refusing many calls (a script with a revoked token, someone trying
    credentials) must not grow by every one of them."""
    kind, _ = _kind(handler)
    if kind.endswith("_stream"):

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if on_refused is not None:
                on_refused()
            context.set_code(code)
            context.set_details(message)
            return
            yield  # pragma: no cover - the yield makes this a generator

        return _rebuilt(handler, kind, refuse_stream)

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if on_refused is not None:
            on_refused()
        context.set_code(code)
        context.set_details(message)
        return None  # grpc sends no message with a code other than OK

    return _rebuilt(handler, kind, refuse)


def _as(handler: grpc.RpcMethodHandler, who: Caller, *, open_calls: OpenCalls | None) -> Any:
    """The handler, run with the caller known (`caller()`) and bound to its log lines; a
    streaming one ends when its token is revoked (`open_calls`).

    Each RPC runs in a task of its own, so the context variable set here is that call's; it
    keeps the type of what it wraps (grpc.aio drives a coroutine and a generator differently).
    """
    kind, behaviour = _kind(handler)

    def enter() -> None:
        _caller.set(who)
        structlog.contextvars.bind_contextvars(caller=who.name)

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            enter()
            responses = behaviour(request, context)
            if open_calls is None:
                try:
                    async for response in responses:
                        yield response
                finally:
                    await responses.aclose()  # closed early: the handler cleans up now
                return
            with open_calls.tracking(who) as call:
                ending = until_revoked(responses, call, context)
                try:
                    async for response in ending:
                        yield response
                finally:
                    await ending.aclose()  # closed early: the handler cleans up now

        return _rebuilt(handler, kind, streaming)

    if inspect.iscoroutinefunction(behaviour):

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            enter()
            return await behaviour(request, context)

        return _rebuilt(handler, kind, unary)
    return handler
