"""The gRPC server interceptor: RPC metrics, a span per call and log context, in one layer.

Every RPC the control plane serves (FleetService, AgentService, health, reflection) passes
through `ObservabilityInterceptor`, so handlers in `controlplane.fleet` and `controlplane.sync`
carry no observability code of their own:
- `keel_grpc_requests_total{service,method,code}` and `keel_grpc_request_duration_seconds`
  (`controlplane.metrics`), a stream counted when it ends;
- an OpenTelemetry SERVER span named `keel.v1.FleetService/ApplyWorkload`, child of the W3C
  `traceparent` the caller sent in its metadata (keelctl does), so an operator's trace
  continues here. The span is the current span while the handler runs, so
  `keel.tracing.inject_traceparent()` inside a handler names it (stored with desired changes);
- structlog context (`rpc`, `peer`) bound for the handler, and for tasks it starts;
- errors: what a handler raises becomes a status code here, by the one table in
  `controlplane.errors`; anything that table does not know is logged (JSON, with an error id)
  and answered UNAVAILABLE naming that id, never UNKNOWN, a class name, a stack or SQL. The
  call ends with the code set rather than `context.abort()` (`_refuse` says why);
- requests: grpc decodes a request before any handler runs, so the request deserializers are
  wrapped too: bytes that are not a valid message become INVALID_ARGUMENT, not UNKNOWN.

grpc.aio picks how to drive a handler from the type of its behaviour (coroutine function,
async generator function, or plain function run in an executor), so each wrapper keeps the
type of what it wraps. Plain (synchronous) behaviours are left as they are: the control
plane has none, and wrapping one in a coroutine would run it on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from controlplane.errors import InvalidArgument, status_of
from controlplane.metrics import Metrics
from keel import tracing

log = structlog.get_logger("keel.grpc")

TRACEPARENT_KEY = "traceparent"

# Codes that mean the server failed (OpenTelemetry's gRPC conventions); the others (NOT_FOUND,
# INVALID_ARGUMENT, ...) are the caller's mistake and leave the server span's status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

_tracer = tracing.tracer("keel.controlplane.grpc")


def split_method(full: str) -> tuple[str, str]:
    """`/keel.v1.FleetService/ApplyWorkload` -> ("keel.v1.FleetService", "ApplyWorkload")."""
    service, _, method = full.lstrip("/").rpartition("/")
    return (service or "unknown"), (method or "unknown")


def _metadata_value(metadata: Any, key: str) -> str:
    for item in metadata or ():
        k, v = (item.key, item.value) if hasattr(item, "key") else item
        if k == key:
            return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return ""


def _status_code(value: object) -> grpc.StatusCode | None:
    if isinstance(value, grpc.StatusCode):
        return value
    if isinstance(value, int):
        return _BY_VALUE.get(value)
    return None


class _Call:
    """One RPC being observed: its span, its start time, its log context; ends exactly once."""

    def __init__(
        self, metrics: Metrics, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> None:
        self._metrics = metrics
        self._context = context
        self.service, self.method = split_method(details.method)
        name = f"{self.service}/{self.method}"
        traceparent = _metadata_value(details.invocation_metadata, TRACEPARENT_KEY)
        parent = tracing.context_from_traceparent(traceparent) if traceparent else None
        self.span: Span = _tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": self.service,
                "rpc.method": self.method,
            },
        )
        self.otel_context = trace.set_span_in_context(self.span, parent)
        peer = ""
        with contextlib.suppress(Exception):
            peer = str(context.peer() or "")
        self.log_vars = {"rpc": name, "peer": peer}
        self._started = time.monotonic()
        self._ended = False

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The span is current and the log context bound for the code run inside."""
        otel_token = otel_context.attach(self.otel_context)
        log_tokens = structlog.contextvars.bind_contextvars(**self.log_vars)
        try:
            yield
        finally:
            # An async generator may be finalised from another task (another Context); a
            # reset there fails, and must not turn a finished call into an error.
            with contextlib.suppress(ValueError):
                structlog.contextvars.reset_contextvars(**log_tokens)
            otel_context.detach(otel_token)

    def end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        code = self._code(error)
        self._metrics.observe_rpc(
            self.service, self.method, code.name, time.monotonic() - self._started
        )
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            self.span.set_status(Status(StatusCode.ERROR, code.name))
            if error is not None and not isinstance(error, grpc.aio.AbortError):
                self.span.record_exception(error)
        self.span.end()

    def _code(self, error: BaseException | None) -> grpc.StatusCode:
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.CANCELLED
        set_on_context: grpc.StatusCode | None = None
        with contextlib.suppress(Exception):
            set_on_context = _status_code(self._context.code())
        if isinstance(error, grpc.aio.AbortError):
            # abort() set the code on the context before raising.
            return set_on_context or grpc.StatusCode.UNKNOWN
        if error is not None:
            return grpc.StatusCode.UNKNOWN  # what grpc answers for an unhandled exception
        return set_on_context or grpc.StatusCode.OK


Behaviour = Callable[..., Any]


class _Undecodable:
    """What a wrapped deserializer returns for bytes that are not a valid message."""

    def __init__(self, method: str) -> None:
        # The message, not the error: an error kept here would be raised from a frame holding
        # this object, a reference cycle (see `_refuse`).
        self.message = (
            f"request: the bytes sent are not a valid {method} request message "
            "(protobuf could not decode them)"
        )


def _decoding(deserializer: Callable[[bytes], Any] | None, method: str) -> Any:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or a string field that is not UTF-8
            return _Undecodable(method)

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(request.message)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


def _refuse(error: Exception, context: grpc.aio.ServicerContext, rpc: str) -> None:
    """Sets the code the error table gives `error` (see controlplane.errors) on the call, for
    the handler's wrapper to end it with.

    Not `context.abort()`: grpc keeps the AbortError it raises on the call's state, and the
    error's traceback holds the frames that hold the call, a reference cycle that keeps every
    refused call's gRPC objects until the cyclic collector runs (rarely here:
    main.GC_YOUNG_THRESHOLD). A control plane refusing streams (a bad Hello, an impostor)
    grew by ~10 KB per call that way. Ending the handler with the code set frees it at once.
    """
    mapped = status_of(error)
    if mapped is None:
        error_id = uuid.uuid4().hex[:12]
        log.error("call failed", error_id=error_id, error=repr(error), exc_info=error)
        trace.get_current_span().record_exception(error)
        mapped = (
            "UNAVAILABLE",
            f"the control plane failed to answer {rpc}; try again (error id {error_id} in its log)",
        )
    code, message = mapped
    context.set_code(grpc.StatusCode[code])
    context.set_details(message)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Metrics, a span and log context for every RPC: `grpc.aio.server(interceptors=[...])`."""

    def __init__(self, *, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED itself
        details = handler_call_details
        _, method = split_method(details.method)
        deserializer = handler.request_deserializer
        behaviours = (
            handler.unary_unary,
            handler.unary_stream,
            handler.stream_unary,
            handler.stream_stream,
        )
        if any(inspect.iscoroutinefunction(b) or inspect.isasyncgenfunction(b) for b in behaviours):
            deserializer = _decoding(deserializer, method)
        codec = {
            "request_deserializer": deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, details, streaming_request=False), **codec
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, details, streaming_request=False), **codec
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, details, streaming_request=True), **codec
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap(handler.stream_stream, details, streaming_request=True), **codec
            )
        return handler

    def _wrap(
        self, behaviour: Behaviour, details: grpc.HandlerCallDetails, *, streaming_request: bool
    ) -> Behaviour:
        metrics = self._metrics
        rpc = details.method.lstrip("/")

        def requests(request: Any) -> Any:
            return _checked_stream(request) if streaming_request else _checked(request)

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(metrics, details, context)
                error: BaseException | None = None
                responses: AsyncGenerator[Any, None] | None = None
                try:
                    while True:
                        # Current only while the handler runs, never across our own yield:
                        # whoever resumes this generator must not inherit the span.
                        with call.active():
                            try:
                                if responses is None:
                                    responses = behaviour(requests(request), context)
                                response = await anext(responses)
                            except StopAsyncIteration:
                                break
                            except (grpc.aio.AbortError, asyncio.CancelledError):
                                raise
                            except Exception as exc:
                                _refuse(exc, context, rpc)
                                break
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    try:
                        # Closed early (the call was cancelled): let the handler clean up.
                        if responses is not None:
                            with call.active():
                                await responses.aclose()
                    finally:
                        call.end(error)
                        # The error's traceback holds this frame, which holds the error: a
                        # reference cycle, which would keep the call's gRPC objects until the
                        # cyclic collector runs (rarely: main.GC_YOUNG_THRESHOLD). Broken here,
                        # every refused stream is freed when it ends.
                        error = responses = None

            return streaming

        if inspect.iscoroutinefunction(behaviour):

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(metrics, details, context)
                error: BaseException | None = None
                try:
                    with call.active():
                        try:
                            return await behaviour(requests(request), context)
                        except (grpc.aio.AbortError, asyncio.CancelledError):
                            raise
                        except Exception as exc:
                            _refuse(exc, context, rpc)
                            return None  # grpc sends no message with a code other than OK
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    call.end(error)
                    error = None  # a reference cycle through the traceback, as in `streaming`

            return unary

        return behaviour
