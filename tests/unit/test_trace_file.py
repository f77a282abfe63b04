"""The trace file stays bounded: it rotates past its size, and discarded spans never reach it."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from keel import tracing


def write_spans(n: int, *, name: str = "pass") -> None:
    for i in range(n):
        with tracing.tracer("t").start_as_current_span(name, attributes={"n": i}):
            pass


def test_the_trace_file_rotates_past_its_size_and_keeps_one_older_file(tmp_path: Path) -> None:
    """However many spans a process ends, PATH and PATH.1 together stay under twice the bound,
    every line whole, and the newest spans are in PATH."""
    path = tmp_path / "spans.jsonl"
    tracing.configure_tracing("keel-test", trace_file=str(path), trace_file_max_bytes=4096)
    try:
        write_spans(500)
    finally:
        tracing.shutdown_tracing()
    older = Path(f"{path}.1")
    assert path.stat().st_size <= 4096 and older.stat().st_size <= 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spans.jsonl", "spans.jsonl.1"]
    records = [json.loads(line) for p in (older, path) for line in p.read_text().splitlines()]
    numbers = [r["attributes"]["n"] for r in records]
    assert numbers == list(range(numbers[0], 500))  # consecutive, ending with the last one


def test_two_writers_sharing_a_path_follow_a_rotation(tmp_path: Path) -> None:
    """A process appending to a file another one rotated writes to the new file, not PATH.1."""
    path = tmp_path / "spans.jsonl"
    a = tracing.JsonLinesSpanExporter(str(path), service_name="a", max_bytes=10**9)
    b = tracing.JsonLinesSpanExporter(str(path), service_name="b", max_bytes=10**9)
    try:
        path.rename(f"{path}.1")  # as if a third process had rotated it
        span = TracerProvider().get_tracer("t").start_span("one")
        span.end()
        a.export([span])
        b.export([span])
    finally:
        a.shutdown()
        b.shutdown()
    services = [json.loads(line)["service"] for line in path.read_text().splitlines()]
    assert services == ["a", "b"]
    assert Path(f"{path}.1").read_text() == ""


def test_a_discarded_span_is_not_exported(tmp_path: Path) -> None:
    """tracing.discard: the span stays current while it runs but is written nowhere."""
    path = tmp_path / "spans.jsonl"
    tracing.configure_tracing("keel-test", trace_file=str(path))
    try:
        with tracing.tracer("t").start_as_current_span("idle") as span:
            assert tracing.inject_traceparent()
            tracing.discard(span)
        write_spans(1, name="kept")
    finally:
        tracing.shutdown_tracing()
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["kept"]
