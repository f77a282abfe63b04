"""keelctl with tracing on: the command as one span, and its traceparent sent with every call.

`keel.ctl.main` runs a command through `run` only when its spans go somewhere
(`keel.traceconfig.exporting`), so a plain `keelctl get hosts` never imports OpenTelemetry.
The span is `keelctl <command>` (exported by `keel.tracing`); the control plane's RPC span
continues it, and so does the desired change an apply stores.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode

from keel import tracing
from keel.ctl.calldetails import with_metadata

# What runs the command: keel.ctl.main's, given the channel interceptors to install.
Runner = Callable[..., int]


class TraceparentInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Sends the current span's W3C traceparent with every call, so the control plane's RPC
    span (and the desired change it stores) continues this command's trace."""

    def _details(self, details: Any) -> Any:
        traceparent = tracing.inject_traceparent()
        if not traceparent:
            return details
        return with_metadata(details, "traceparent", traceparent)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def run(service: str, args: argparse.Namespace, command: Runner) -> int:
    """Runs `command(args, interceptors=...)` inside the span `<service> <command>`; the exit
    status becomes the span's attribute and, when not 0, its error status."""
    interceptors: Sequence[Any] = (TraceparentInterceptor(),)
    tracing.configure_tracing(service, trace_file=args.trace_file)
    try:
        with tracing.tracer(service).start_as_current_span(
            f"{service} {args.command}", kind=SpanKind.CLIENT
        ) as span:
            code = command(args, interceptors=interceptors)
            span.set_attribute("keel.exit_code", code)
            if code != 0:
                span.set_status(Status(StatusCode.ERROR, f"exit status {code}"))
            return code
    finally:
        tracing.shutdown_tracing()
