"""keel.tracing as the agent uses it: the span file, traceparent in and out, no-op default."""

from __future__ import annotations

import json
from pathlib import Path

from keel import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_child_of_a_traceparent_is_written_as_one_json_line(tmp_path: Path) -> None:
    """A span started from a remote traceparent carries its trace id and parent, flushed."""
    path = tmp_path / "spans.jsonl"
    tracing.configure_tracing("keel-test", trace_file=str(path))
    try:
        ctx = tracing.context_from_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01")
        with tracing.tracer("t").start_as_current_span(
            "child", context=ctx, attributes={"keel.instance": "web-1"}
        ) as span:
            inner = tracing.inject_traceparent()
            span_id = format(span.get_span_context().span_id, "016x")
        [line] = path.read_text().splitlines()  # written at span end, without a shutdown
    finally:
        tracing.shutdown_tracing()
    record = json.loads(line)
    assert (record["trace_id"], record["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert (record["span_id"], record["name"], record["service"]) == (span_id, "child", "keel-test")
    assert record["attributes"] == {"keel.instance": "web-1"}
    assert record["start_unix_nano"] <= record["end_unix_nano"]
    assert inner.startswith(f"00-{TRACE_ID}-{span_id}-")


def test_no_current_span_means_no_traceparent() -> None:
    """Outside any span there is nothing to propagate."""
    assert tracing.inject_traceparent() == ""
    assert tracing.context_from_traceparent("") is not None
