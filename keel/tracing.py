"""OpenTelemetry set-up shared by the agent, the control plane and keelctl.

Each process calls `configure_tracing` once at start-up. Finished spans go where
`keel.traceconfig` says: to a JSON-lines file (`--trace-file PATH` or env KEEL_TRACE_FILE; one
object per span, flushed at once so a test can
join the files of several processes by trace id; rotated to PATH.1 past `max_bytes`, so the
files never hold more than twice that) and/or to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
is set and the exporter package is installed. With neither, the API's no-op tracer stays in
place: spans cost nothing, yet a child of a remote context still carries that context on, so a
process that does not export does not break the trace between two that do.

A span marked with `discard` (a periodic pass that found nothing to do) is exported nowhere:
an idle fleet writes no traces.

Trace context crosses process boundaries as a W3C traceparent string: keelctl sends its own in
gRPC metadata, the control plane stores it with the desired change, the agent receives it in
`Assignment.trace_context` (`inject_traceparent` / `context_from_traceparent`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import IO, Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from keel.traceconfig import OTLP_ENDPOINT_ENV, TRACE_FILE_ENV, otlp_endpoint, trace_path

__all__ = [
    "OTLP_ENDPOINT_ENV",
    "TRACE_FILE_ENV",
    "JsonLinesSpanExporter",
    "configure_tracing",
    "context_from_traceparent",
    "discard",
    "inject_traceparent",
    "shutdown_tracing",
    "tracer",
]

# The trace file is rotated past this size (one older file is kept: PATH.1).
DEFAULT_TRACE_FILE_MAX_BYTES = 32 * 1024 * 1024
# The attribute `discard` sets; no exporter sees a span that carries it.
DISCARD_ATTRIBUTE = "keel.discard"

_propagator = TraceContextTextMapPropagator()
_log = structlog.get_logger("keel.tracing")


class JsonLinesSpanExporter(SpanExporter):
    """Writes one JSON object per finished span and flushes it, so nothing is lost on a kill.

    Past `max_bytes` the file is renamed to PATH.1 (replacing the older one) and a new one is
    started, so the spans of a long-running process take at most twice `max_bytes` on disk.
    """

    def __init__(
        self, path: str, *, service_name: str, max_bytes: int = DEFAULT_TRACE_FILE_MAX_BYTES
    ) -> None:
        self._path = path
        self._service = service_name
        self._max_bytes = max(1, max_bytes)
        self._lock = threading.Lock()
        self._file: IO[str] | None = self._open()

    def _open(self) -> IO[str]:
        # Line-buffered append: several processes (or a restarted one) may share one file.
        return open(self._path, "a", buffering=1, encoding="utf-8")

    def _current(self, file: IO[str], adding: int) -> IO[str]:
        """The file to append `adding` bytes to: reopened if another process sharing the path
        rotated it, rotated here if the line would take it past max_bytes."""
        try:
            on_path = os.stat(self._path).st_ino
        except FileNotFoundError:
            on_path = None
        size = os.fstat(file.fileno()).st_size
        if on_path != os.fstat(file.fileno()).st_ino:
            file.close()
            file = self._open()
            size = os.fstat(file.fileno()).st_size
        if size and size + adding > self._max_bytes:
            file.close()
            os.replace(self._path, self._path + ".1")
            file = self._open()
        return file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(s, self._service), sort_keys=True) for s in spans]
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            for line in lines:
                self._file = self._current(self._file, len(line.encode()) + 1)
                self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._file is not None:
                self._file.flush()
        return True


def span_record(span: ReadableSpan, service: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_span_id": format(parent.span_id, "016x") if parent else "",
        "name": span.name,
        "service": service,
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "status": span.status.status_code.name,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return list(value)


class _Switch(SpanProcessor):
    """The one processor installed in the global provider; its delegates can be replaced.

    OpenTelemetry lets a process set the global TracerProvider only once, but tests configure
    tracing several times in one process; swapping the delegates keeps that working.
    """

    def __init__(self) -> None:
        self.delegates: list[SpanProcessor] = []

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        for p in self.delegates:
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if (span.attributes or {}).get(DISCARD_ATTRIBUTE):
            return
        for p in self.delegates:
            p.on_end(span)

    def shutdown(self) -> None:
        for p in self.delegates:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.delegates)


_lock = threading.Lock()
_switch: _Switch | None = None


def _otlp_exporter() -> SpanExporter | None:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            return None
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter


def configure_tracing(
    service_name: str,
    *,
    trace_file: str | None,
    trace_file_max_bytes: int = DEFAULT_TRACE_FILE_MAX_BYTES,
) -> None:
    """Install the exporters for this process: a span file and/or OTLP, else nothing."""
    global _switch
    path = trace_path(trace_file)
    endpoint = otlp_endpoint()
    processors: list[SpanProcessor] = []
    if path:
        processors.append(
            SimpleSpanProcessor(
                JsonLinesSpanExporter(
                    path, service_name=service_name, max_bytes=trace_file_max_bytes
                )
            )
        )
    if endpoint is not None:
        otlp = _otlp_exporter()
        if otlp is None:
            _log.warning(
                "otlp_exporter_unavailable",
                hint=f"pip install opentelemetry-exporter-otlp to export to {endpoint}",
            )
        else:
            processors.append(BatchSpanProcessor(otlp))
    with _lock:
        if _switch is None:
            if not processors:
                return  # keep the API's no-op provider: no cost per span
            _switch = _Switch()
            provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            provider.add_span_processor(_switch)
            trace.set_tracer_provider(provider)
        old, _switch.delegates = _switch.delegates, processors
    for p in old:
        p.shutdown()


def shutdown_tracing() -> None:
    """Flush and close the exporters; spans ended afterwards are dropped."""
    with _lock:
        if _switch is None:
            return
        old, _switch.delegates = _switch.delegates, []
    for p in old:
        p.force_flush()
        p.shutdown()


def discard(span: trace.Span) -> None:
    """No exporter will see this span (it is still current until it ends): for passes that
    found nothing to do, which would otherwise fill the trace file of an idle fleet."""
    span.set_attribute(DISCARD_ATTRIBUTE, True)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_traceparent() -> str:
    """The W3C traceparent of the current span, or "" when there is no valid one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(tp: str) -> otel_context.Context:
    """A context whose current span is the remote parent `tp` (empty context if tp is "")."""
    if not tp:
        return otel_context.Context()
    return _propagator.extract({"traceparent": tp}, context=otel_context.Context())
