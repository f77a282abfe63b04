"""Where a process's spans go, decided without importing OpenTelemetry.

A span file (`--trace-file PATH` or env KEEL_TRACE_FILE) and/or OTLP (env
OTEL_EXPORTER_OTLP_ENDPOINT). `keel.tracing` installs the exporters these name; keelctl asks
`exporting` first and, when no span would go anywhere, never imports `keel.tracing` (and
OpenTelemetry with it): a short-lived command should pay only for what it uses.
"""

from __future__ import annotations

import os

TRACE_FILE_ENV = "KEEL_TRACE_FILE"
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


def trace_path(trace_file: str | None) -> str | None:
    """The span file: the flag's value, else KEEL_TRACE_FILE, else none."""
    return trace_file or os.environ.get(TRACE_FILE_ENV) or None


def otlp_endpoint() -> str | None:
    return os.environ.get(OTLP_ENDPOINT_ENV) or None


def exporting(trace_file: str | None) -> bool:
    """True when some exporter would receive this process's spans."""
    return trace_path(trace_file) is not None or otlp_endpoint() is not None
