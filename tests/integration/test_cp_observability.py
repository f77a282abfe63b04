"""Control-plane observability: the gRPC interceptor in a real server, and the real binaries.

The first half serves a probe service through `ObservabilityInterceptor` in this process and
checks the status code it records for every way a call can end, the span it starts (child of
the caller's traceparent, current while the handler runs) and the log context it binds. The
second half starts the real `keel-controlplane` with `--metrics 127.0.0.1:0` and
`--trace-file`, scrapes /metrics over HTTP (and has `promtool check metrics` judge the text),
and follows one `keelctl` command's trace into the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from controlplane.interceptors import ObservabilityInterceptor, split_method
from controlplane.metrics import Metrics
from keel import tracing

T = TypeVar("T")

BIN = Path(sys.executable).parent
KEEL_CONTROLPLANE = BIN / "keel-controlplane"
KEELCTL = BIN / "keelctl"
PROMTOOL_INSTALL = (
    "apt-get update && apt-get install -y --no-install-recommends prometheus "
    "(or run deploy/prometheus/ensure-promtool; `make test` does)"
)

SERVICE = "test.v1.Probe"
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"


def poll(predicate: Callable[[], T | None], *, timeout: float = 10.0, message: str) -> T:
    """predicate's first truthy value; fails at the deadline with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}: {last!r}")
        time.sleep(0.05)


async def apoll(predicate: Callable[[], T | None], *, within: float = 10.0, message: str) -> T:
    """poll, for async tests: yields to the event loop (the server runs on it) between tries."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}: {last!r}")
        await asyncio.sleep(0.02)


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the interceptor


async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort returned")


async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug in a handler")


async def set_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("not now")
    return b""


async def current(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """What a handler sees: the current traceparent and the bound log context."""
    body = {
        "traceparent": tracing.inject_traceparent(),
        "log": structlog.contextvars.get_contextvars(),
    }
    return json.dumps(body).encode()


async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()
    # The span stays current in every step of a stream, not only the first.
    yield tracing.inject_traceparent().encode()


async def hang(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    await asyncio.Event().wait()


async def stream_abort(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "stop reading")


async def echo(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for r in requests:
        yield r


async def total(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"".join([r async for r in requests])


HANDLERS = {
    "Ok": grpc.unary_unary_rpc_method_handler(ok),
    "Abort": grpc.unary_unary_rpc_method_handler(abort),
    "Boom": grpc.unary_unary_rpc_method_handler(boom),
    "SetCode": grpc.unary_unary_rpc_method_handler(set_code),
    "Current": grpc.unary_unary_rpc_method_handler(current),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Hang": grpc.unary_stream_rpc_method_handler(hang),
    "StreamAbort": grpc.unary_stream_rpc_method_handler(stream_abort),
    "Echo": grpc.stream_stream_rpc_method_handler(echo),
    "Total": grpc.stream_unary_rpc_method_handler(total),
}


class Probe:
    """A grpc.aio server with the interceptor, a channel to it, and the spans it wrote."""

    def __init__(self, metrics: Metrics, channel: grpc.aio.Channel, spans: Path) -> None:
        self.metrics = metrics
        self.channel = channel
        self.spans_path = spans

    def requests(self, method: str, code: str) -> float:
        labels = {"service": SERVICE, "method": method, "code": code}
        return self.metrics.registry.get_sample_value("keel_grpc_requests_total", labels) or 0.0

    def durations(self, method: str) -> float:
        labels = {"service": SERVICE, "method": method}
        found = self.metrics.registry.get_sample_value(
            "keel_grpc_request_duration_seconds_count", labels
        )
        return found or 0.0

    def spans(self, name: str) -> list[dict[str, Any]]:
        return [s for s in read_spans(self.spans_path) if s["name"] == name]


@pytest.fixture
async def probe(tmp_path: Path) -> AsyncIterator[Probe]:
    spans = tmp_path / "spans.jsonl"
    tracing.configure_tracing("probe", trace_file=str(spans))
    metrics = Metrics()
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor(metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Probe(metrics, channel, spans)
    finally:
        await channel.close()
        await server.stop(None)
        tracing.shutdown_tracing()


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("Ok", "OK"),
        ("Abort", "NOT_FOUND"),
        ("Boom", "UNAVAILABLE"),
        ("SetCode", "FAILED_PRECONDITION"),
    ],
)
async def test_unary_calls_are_counted_with_the_code_the_caller_gets(
    probe: Probe, method: str, code: str
) -> None:
    """keel_grpc_requests_total's code is the status the client received."""
    call = probe.channel.unary_unary(f"/{SERVICE}/{method}")
    try:
        await call(b"x", timeout=5)
        received = "OK"
    except grpc.aio.AioRpcError as err:
        received = err.code().name
    assert received == code
    # The interceptor counts once the handler has returned, which may be just after the
    # client has its answer.
    await apoll(
        lambda: probe.requests(method, code) == 1 and probe.durations(method) == 1,
        message=f"{method} counted as {code}",
    )


async def test_a_handler_bug_answers_unavailable_with_an_error_id_and_no_internals(
    probe: Probe,
) -> None:
    """An exception no table entry knows: UNAVAILABLE naming an error id, never the class name,
    its message or a stack."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe.channel.unary_unary(f"/{SERVICE}/Boom")(b"x", timeout=5)
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "error id" in details
    assert "RuntimeError" not in details and "a bug in a handler" not in details
    assert "Traceback" not in details


async def test_server_streams_are_counted_when_they_end(probe: Probe) -> None:
    """A unary-stream call is one request, counted OK once its stream is done."""
    replies = [r async for r in probe.channel.unary_stream(f"/{SERVICE}/Count")(b"", timeout=5)]
    assert replies[:3] == [b"0", b"1", b"2"]
    await apoll(lambda: probe.requests("Count", "OK") == 1, message="Count counted OK")
    assert probe.durations("Count") == 1


async def test_a_stream_aborted_midway_counts_its_abort_code(probe: Probe) -> None:
    """An abort after some messages counts the abort's code, not OK."""
    call = probe.channel.unary_stream(f"/{SERVICE}/StreamAbort")(b"", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await apoll(
        lambda: probe.requests("StreamAbort", "PERMISSION_DENIED") == 1,
        message="StreamAbort counted PERMISSION_DENIED",
    )


async def test_a_stream_the_client_cancels_counts_cancelled(probe: Probe) -> None:
    """A stream the caller gives up on is counted CANCELLED and its span ended."""
    call = probe.channel.unary_stream(f"/{SERVICE}/Hang")(b"", timeout=10)
    assert await call.read() == b"first"
    call.cancel()
    await apoll(lambda: probe.requests("Hang", "CANCELLED") == 1, message="Hang CANCELLED")
    await apoll(lambda: probe.spans(f"{SERVICE}/Hang"), message="the Hang span ended")


async def test_client_streams_are_observed(probe: Probe) -> None:
    """Stream-unary and bidirectional calls pass through and are counted OK."""

    async def parts() -> AsyncIterator[bytes]:
        for p in (b"a", b"b", b"c"):
            yield p

    assert await probe.channel.stream_unary(f"/{SERVICE}/Total")(parts(), timeout=5) == b"abc"
    echoed = [r async for r in probe.channel.stream_stream(f"/{SERVICE}/Echo")(parts(), timeout=5)]
    assert echoed == [b"a", b"b", b"c"]
    await apoll(lambda: probe.requests("Echo", "OK") == 1, message="Echo counted OK")
    assert probe.requests("Total", "OK") == 1


async def test_the_rpc_span_continues_the_callers_trace(probe: Probe) -> None:
    """The span is named service/method and is a child of the traceparent in the metadata."""
    await probe.channel.unary_unary(f"/{SERVICE}/Ok")(
        b"x", timeout=5, metadata=(("traceparent", CALLER_TRACEPARENT),)
    )
    [span] = await apoll(lambda: probe.spans(f"{SERVICE}/Ok"), message="the Ok span")
    assert span["trace_id"] == CALLER_TRACE_ID
    assert span["parent_span_id"] == CALLER_SPAN_ID
    assert span["attributes"]["rpc.method"] == "Ok"
    assert span["attributes"]["rpc.grpc.status_code"] == 0


async def test_a_call_without_traceparent_starts_a_new_trace(probe: Probe) -> None:
    """No traceparent: the RPC span is a root span."""
    await probe.channel.unary_unary(f"/{SERVICE}/Ok")(b"x", timeout=5)
    [span] = await apoll(lambda: probe.spans(f"{SERVICE}/Ok"), message="the Ok span")
    assert span["parent_span_id"] == ""
    assert span["trace_id"] != CALLER_TRACE_ID


async def test_server_faults_mark_the_span_as_an_error(probe: Probe) -> None:
    """A handler bug (answered UNAVAILABLE) is an error span; NOT_FOUND (the caller's mistake)
    is not."""
    for method in ("Boom", "Abort"):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await probe.channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=5)
    [boom_span] = await apoll(lambda: probe.spans(f"{SERVICE}/Boom"), message="Boom span")
    [abort_span] = await apoll(lambda: probe.spans(f"{SERVICE}/Abort"), message="Abort span")
    assert boom_span["status"] == "ERROR"
    assert abort_span["status"] == "UNSET"


async def test_handlers_run_inside_the_rpc_span_and_log_context(probe: Probe) -> None:
    """inject_traceparent() in a handler names the RPC span; rpc and peer are bound for logs."""
    reply = await probe.channel.unary_unary(f"/{SERVICE}/Current")(
        b"", timeout=5, metadata=(("traceparent", CALLER_TRACEPARENT),)
    )
    seen = json.loads(reply)
    [span] = await apoll(lambda: probe.spans(f"{SERVICE}/Current"), message="Current span")
    assert seen["traceparent"] == f"00-{CALLER_TRACE_ID}-{span['span_id']}-01"
    assert seen["log"]["rpc"] == f"{SERVICE}/Current"
    assert seen["log"]["peer"].startswith("ipv4:127.0.0.1:")
    # Nothing leaks into the test's own context once the call is over.
    assert "rpc" not in structlog.contextvars.get_contextvars()


async def test_stream_handlers_see_the_span_in_every_step(probe: Probe) -> None:
    """An async-generator handler has the RPC span current after each of its yields too."""
    call = probe.channel.unary_stream(f"/{SERVICE}/Count")(
        b"", timeout=5, metadata=(("traceparent", CALLER_TRACEPARENT),)
    )
    replies = [r async for r in call]
    [span] = await apoll(lambda: probe.spans(f"{SERVICE}/Count"), message="Count span")
    assert replies[-1].decode() == f"00-{CALLER_TRACE_ID}-{span['span_id']}-01"


@pytest.mark.parametrize(
    ("full", "parts"),
    [
        ("/keel.v1.FleetService/ApplyWorkload", ("keel.v1.FleetService", "ApplyWorkload")),
        ("/grpc.health.v1.Health/Check", ("grpc.health.v1.Health", "Check")),
        ("", ("unknown", "unknown")),
    ],
)
def test_split_method_names_service_and_method(full: str, parts: tuple[str, str]) -> None:
    """The metric labels come from the full method path."""
    assert split_method(full) == parts


# --------------------------------------------------------------------------- the real binaries


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(extra)
    return env


class ControlPlane:
    def __init__(self, addresses: dict[str, str], spans: Path, log: Path, state: Path) -> None:
        self.grpc = addresses["grpc"]
        self.state = state
        self.metrics = addresses["metrics"]
        self.addresses = addresses
        self.spans = spans
        self.log = log

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as resp:
            assert resp.status == 200
            return str(resp.read().decode())

    def keelctl(self, *args: str, env: dict[str, str] | None = None) -> None:
        # The admin token the control plane wrote under its state dir on its first start.
        token = ["--token-file", str(self.state / "admin.token")]
        result = subprocess.run(
            [str(KEELCTL), "--controlplane", self.grpc, *token, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env or clean_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 0, f"keelctl {args}: {result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def controlplane(
    tmp_path_factory: pytest.TempPathFactory, database_factory: Any
) -> Iterator[ControlPlane]:
    """The real keel-controlplane on a fresh database, /metrics on a free port, spans to a file."""
    root = tmp_path_factory.mktemp("cp_observability")
    state, spans, log = root / "state", root / "controlplane-spans.jsonl", root / "cp.log"
    addresses = state / "addresses.json"
    with database_factory() as url, log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(KEEL_CONTROLPLANE),
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--trace-file",
                str(spans),
                "--state-dir",
                str(state),
                "--database-url",
                url,
                "--log-format",
                "json",
                # Many idle periodic passes in little time (no agent: nothing to do).
                "--liveness-grace",
                "200ms",
                "--liveness-interval",
                "50ms",
                "--stuck-interval",
                "50ms",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
        try:

            def written() -> dict[str, str] | None:
                assert proc.poll() is None, f"keel-controlplane exited:\n{log.read_text()}"
                try:
                    found = json.loads(addresses.read_text())
                except (OSError, ValueError):
                    return None
                return found if isinstance(found, dict) else None

            found = poll(written, timeout=30, message=f"{addresses}")
            yield ControlPlane(found, spans, log, state)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_addresses_json_records_the_metrics_address(controlplane: ControlPlane) -> None:
    """With --metrics 127.0.0.1:0 the bound port is recorded next to grpc."""
    host, port = controlplane.metrics.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert set(controlplane.addresses) == {"grpc", "metrics"}


def test_metrics_endpoint_counts_a_keelctl_call(controlplane: ControlPlane) -> None:
    """After `keelctl get workloads`, /metrics shows ListWorkloads answered OK."""
    controlplane.keelctl("get", "workloads")
    labels = {"service": "keel.v1.FleetService", "method": "ListWorkloads", "code": "OK"}
    text = poll(
        lambda: (
            (t := controlplane.scrape())
            and (sample(t, "keel_grpc_requests_total", **labels) or 0) >= 1
            and t
        ),
        message="keel_grpc_requests_total for ListWorkloads",
    )
    for name in ("keel_convergence_seconds", "keel_hosts", "keel_sync_streams"):
        assert f"# HELP {name} " in text
    assert sample(text, "keel_sync_streams") == 0
    assert sample(text, "keel_hosts", state="READY", schedulable="true") == 0


def test_promtool_accepts_the_metrics_endpoint(controlplane: ControlPlane) -> None:
    """`promtool check metrics` finds nothing wrong with the exposition."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not on PATH; install it: {PROMTOOL_INSTALL}")
    controlplane.keelctl("get", "hosts")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=controlplane.scrape(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def test_keelctl_trace_continues_in_the_control_plane(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    """The control plane's RPC span is a child of the `keelctl get` span, in the same trace."""
    ctl_spans = tmp_path / "keelctl-spans.jsonl"
    controlplane.keelctl("get", "workloads", "--trace-file", str(ctl_spans))
    [command] = [s for s in read_spans(ctl_spans) if s["name"] == "keelctl get"]
    assert command["service"] == "keelctl"

    def rpc_span() -> dict[str, Any] | None:
        for s in read_spans(controlplane.spans):
            if s["name"] == "keel.v1.FleetService/ListWorkloads" and (
                s["trace_id"] == command["trace_id"]
            ):
                return s
        return None

    span = poll(rpc_span, message="the control plane's ListWorkloads span in keelctl's trace")
    assert span["parent_span_id"] == command["span_id"]
    assert span["service"] == "keel-controlplane"


def test_keelctl_reads_the_trace_file_from_the_environment(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    """KEEL_TRACE_FILE works like --trace-file."""
    ctl_spans = tmp_path / "env-spans.jsonl"
    controlplane.keelctl("get", "hosts", env=clean_env(KEEL_TRACE_FILE=str(ctl_spans)))
    assert [s["name"] for s in read_spans(ctl_spans)] == ["keelctl get"]


def test_an_idle_control_plane_writes_no_reconcile_spans(controlplane: ControlPlane) -> None:
    """Liveness and stuck passes that find nothing to do leave the trace file alone, so an
    idle fleet's trace file does not grow."""

    def passes(controller: str) -> float:
        labels = {"controller": controller, "result": "success"}
        return sample(controlplane.scrape(), "keel_reconcile_total", **labels) or 0

    poll(
        lambda: passes("liveness") >= 20 and passes("stuck") >= 20,
        message="20 idle liveness and stuck passes",
    )
    names = {s["name"] for s in read_spans(controlplane.spans)}
    assert not [n for n in names if n.startswith("reconcile ")], names
