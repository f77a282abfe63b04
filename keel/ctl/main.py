"""keelctl: the operator CLI. Parses arguments, calls FleetService, prints the answer.

`build_parser` is the whole command line (runbook tests parse their commands with it); `main`
runs one command and returns the exit status: 0 ok, 1 an error from the control plane (one
line on stderr: its message and status code), 2 a usage error (bad arguments, an unreadable
file or a manifest that is not valid YAML/JSON). The control plane validates manifests
(`keel.spec.parse_workload`), so keelctl sends the document as it was written. Formatting
lives in `keel.ctl.output`. keelctl is short-lived, so it uses the synchronous gRPC API.
Each command is one span, `keelctl <command>` (`--trace-file` / KEEL_TRACE_FILE, see
`keel.tracing`), whose traceparent goes with every call so the control plane continues it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import yaml
from opentelemetry.trace import SpanKind, Status, StatusCode

from keel import tracing
from keel.ctl import documents, observe, output
from keel.spec import MAX_MANIFEST_BYTES, SpecError, format_duration, parse_duration
from keel.v1 import fleet_pb2, fleet_pb2_grpc

DEFAULT_CONTROLPLANE = "127.0.0.1:7443"
DEFAULT_TIMEOUT = "10s"
# List answers on a large fleet outgrow gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

# The generated stub module is untyped; Any keeps mypy quiet whether or not it is checked.
_STUB: Any = fleet_pb2_grpc.FleetServiceStub

# Resource names and their aliases, as `get`, `describe` and `delete` accept them.
WORKLOAD_NAMES = ("workloads", "workload", "wl")
HOST_NAMES = ("hosts", "host")
INSTANCE_NAMES = ("instances", "instance", "inst")
_CANONICAL = {
    **dict.fromkeys(WORKLOAD_NAMES, "workload"),
    **dict.fromkeys(HOST_NAMES, "host"),
    **dict.fromkeys(INSTANCE_NAMES, "instance"),
}


class CtlError(Exception):
    """keelctl cannot run the command as given (a usage error, exit status 2)."""


def _timeout_arg(text: str) -> float:
    try:
        ms = parse_duration(text, "--timeout")
    except SpecError as e:
        raise argparse.ArgumentTypeError(e.rule) from None
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got '{text}'")
    return ms / 1000


def _add_globals(p: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    # The same options are accepted after the subcommand (`keelctl get hosts -o json`); there
    # their default is SUPPRESS so that an option given before the subcommand is not reset.
    def default(value: object) -> object:
        return argparse.SUPPRESS if on_subcommand else value

    p.add_argument(
        "--controlplane",
        metavar="ADDR",
        default=default(None),
        help=f"control plane address (default: $KEEL_CONTROLPLANE, else {DEFAULT_CONTROLPLANE})",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default("table"),
        help="output format (default: table)",
    )
    p.add_argument(
        "--timeout",
        type=_timeout_arg,
        metavar="DURATION",
        default=default(_timeout_arg(DEFAULT_TIMEOUT)),
        help=f"how long to wait for the control plane (default: {DEFAULT_TIMEOUT})",
    )
    p.add_argument(
        "--trace-file",
        metavar="PATH",
        default=default(None),
        help="append this command's spans as JSON lines (default: $KEEL_TRACE_FILE)",
    )


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The keelctl command line: global options, then a command (apply, get, describe, ...)."""
    parser = argparse.ArgumentParser(
        prog="keelctl", description="Operate a Keel fleet: workloads, hosts and instances."
    )
    _add_globals(parser, on_subcommand=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = sub.add_parser("apply", help="create or update a workload from a YAML or JSON file")
    _add_globals(apply, on_subcommand=True)
    apply.add_argument(
        "-f", "--filename", required=True, metavar="FILE", help="the manifest; '-' reads stdin"
    )

    get = sub.add_parser("get", help="list workloads, hosts or instances")
    _add_globals(get, on_subcommand=True)
    get.add_argument(
        "resource", choices=WORKLOAD_NAMES + HOST_NAMES + INSTANCE_NAMES, metavar="RESOURCE"
    )
    get.add_argument("--workload", metavar="NAME", help="instances of this workload only")
    get.add_argument("--host", metavar="NAME", help="instances on this host only")

    describe = sub.add_parser("describe", help="show everything about one object")
    _add_globals(describe, on_subcommand=True)
    describe.add_argument(
        "resource", choices=WORKLOAD_NAMES + HOST_NAMES + INSTANCE_NAMES, metavar="RESOURCE"
    )
    describe.add_argument("name", metavar="NAME")

    stuck = sub.add_parser(
        "stuck", help="list stuck objects: reason, since, message, runbook, next command"
    )
    _add_globals(stuck, on_subcommand=True)

    events = sub.add_parser("events", help="the history of the fleet or of one object")
    _add_globals(events, on_subcommand=True)
    events.add_argument(
        "--for",
        dest="for_object",
        metavar="OBJECT",
        help="KIND/NAME, e.g. workload/web (its instances too), host/host-1, instance/ID",
    )
    events.add_argument(
        "--limit", type=_non_negative, default=100, metavar="N", help="newest N events (100)"
    )

    logs = sub.add_parser("logs", help="a workload instance's stdout and stderr, from its agent")
    _add_globals(logs, on_subcommand=True)
    logs.add_argument("instance", metavar="INSTANCE")
    logs.add_argument(
        "--tail", type=_non_negative, default=0, metavar="N", help="last N lines of each stream"
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new output until Ctrl-C"
    )

    delete = sub.add_parser("delete", help="delete a workload (its instances are stopped)")
    _add_globals(delete, on_subcommand=True)
    delete.add_argument("resource", choices=WORKLOAD_NAMES, metavar="RESOURCE")
    delete.add_argument("name", metavar="NAME")
    return parser


# --- manifests ---------------------------------------------------------------------------------


def load_manifest(filename: str, *, stdin: Any = None) -> object:
    """The document in filename ('-' = stdin), parsed as YAML (JSON is YAML too)."""
    label = "<stdin>" if filename == "-" else filename
    try:
        if filename == "-":
            text = (stdin if stdin is not None else sys.stdin).read()
        else:
            with open(filename, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CtlError(f"cannot read {label}: {getattr(e, 'strerror', None) or e}") from e
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MANIFEST_BYTES:
        raise CtlError(
            f"{label}: the manifest is {size} bytes; the control plane accepts at most "
            f"{MAX_MANIFEST_BYTES} bytes"
        )
    stripped = text.lstrip()
    if filename.endswith(".json") or stripped.startswith(("{", "[")):
        # Real JSON first: YAML refuses tab indentation, which JSON allows.
        try:
            return json.loads(text, object_pairs_hook=documents.unique_pairs)
        except documents.DuplicateKey as e:
            raise CtlError(f"{label}: {e}") from e
        except RecursionError as e:
            raise CtlError(f"{label}: not valid JSON: nested too deeply") from e
        except json.JSONDecodeError as e:
            if filename.endswith(".json"):
                raise CtlError(f"{label}:{e.lineno}: not valid JSON: {e.msg}") from e
    try:
        doc = yaml.load(text, Loader=documents.UniqueKeyLoader)  # a SafeLoader
    except documents.DuplicateKey as e:
        raise CtlError(f"{label}: {e}") from e
    except RecursionError as e:
        raise CtlError(f"{label}: not valid YAML: nested too deeply") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        if context:
            problem = f"{context}, {problem}"
        raise CtlError(f"{label}{line}: not valid YAML: {problem}") from e
    if doc is None:
        raise CtlError(f"{label}: the file holds no document")
    return doc


# --- commands ----------------------------------------------------------------------------------


class Context:
    """What a command needs: the stub, the parsed arguments, and the clock for ages."""

    def __init__(self, stub: Any, args: argparse.Namespace, *, now: datetime) -> None:
        self.stub = stub
        self.args = args
        self.now = now
        self.timeout: float = args.timeout
        self.json: bool = args.output == "json"


def cmd_apply(ctx: Context, manifest: object) -> str:
    # `default=str` keeps YAML's dates and such sendable; the server says if they are wrong.
    body = json.dumps(manifest, default=str)
    resp = ctx.stub.ApplyWorkload(
        fleet_pb2.ApplyWorkloadRequest(manifest_json=body), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    result = resp.result or "configured"
    return f"workload/{resp.workload.name} {result} (generation {resp.workload.generation})"


def cmd_get(ctx: Context) -> str:
    kind = _CANONICAL[ctx.args.resource]
    if kind != "instance" and (ctx.args.workload or ctx.args.host):
        raise CtlError("--workload and --host filter instances only")
    resp: Any
    items: list[Any]
    if kind == "workload":
        resp = ctx.stub.ListWorkloads(fleet_pb2.ListWorkloadsRequest(), timeout=ctx.timeout)
        items = list(resp.workloads)
    elif kind == "host":
        resp = ctx.stub.ListHosts(fleet_pb2.ListHostsRequest(), timeout=ctx.timeout)
        items = list(resp.hosts)
    else:
        request = fleet_pb2.ListInstancesRequest(
            workload=ctx.args.workload or "", host=ctx.args.host or ""
        )
        resp = ctx.stub.ListInstances(request, timeout=ctx.timeout)
        items = list(resp.instances)
    if ctx.json:
        return output.to_json(resp)
    if not items:
        # Like kubectl: nothing on stdout, a note on stderr, success.
        print(f"No {kind}s found.", file=sys.stderr)
        return ""
    if kind == "workload":
        return output.workloads_table(items, now=ctx.now)
    if kind == "host":
        return output.hosts_table(items, now=ctx.now)
    return output.instances_table(items, now=ctx.now)


def cmd_describe(ctx: Context) -> str:
    kind = _CANONICAL[ctx.args.resource]
    name = ctx.args.name
    if kind == "workload":
        w = ctx.stub.GetWorkload(fleet_pb2.GetWorkloadRequest(name=name), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(w)
        insts = _instances(ctx, workload=name)
        return output.describe_workload(w, insts, now=ctx.now)
    if kind == "host":
        h = ctx.stub.GetHost(fleet_pb2.GetHostRequest(name=name), timeout=ctx.timeout)
        if ctx.json:
            return output.to_json(h)
        return output.describe_host(h, _instances(ctx, host=name), now=ctx.now)
    i = ctx.stub.GetInstance(fleet_pb2.GetInstanceRequest(id=name), timeout=ctx.timeout)
    if ctx.json:
        return output.to_json(i)
    return output.describe_instance(i, now=ctx.now)


def _instances(ctx: Context, *, workload: str = "", host: str = "") -> list[Any]:
    request = fleet_pb2.ListInstancesRequest(workload=workload, host=host)
    return list(ctx.stub.ListInstances(request, timeout=ctx.timeout).instances)


def cmd_delete(ctx: Context) -> str:
    resp = ctx.stub.DeleteWorkload(
        fleet_pb2.DeleteWorkloadRequest(name=ctx.args.name), timeout=ctx.timeout
    )
    if ctx.json:
        return output.to_json(resp)
    return f"workload/{ctx.args.name} deleted (its instances are being stopped and removed)"


# --- errors ------------------------------------------------------------------------------------

# What gRPC's client says when it never got through; anything else came from the server.
_CANNOT_CONNECT = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "socket closed",
    "connection reset",
    "name resolution",
    "no address",
    "broken pipe",
)


def rpc_error_line(err: grpc.RpcError, *, address: str, timeout: float) -> str:
    """The one line keelctl prints for a failed call."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else None
    details = " ".join(str(details or "").split()) or "no details"
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE and any(s in details.lower() for s in _CANNOT_CONNECT):
        return f"error: cannot reach the control plane at {address}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"error: the control plane at {address} did not answer within "
            f"{format_duration(round(timeout * 1000))} (DEADLINE_EXCEEDED)"
        )
    return f"error: {details} ({name})"


# --- entry point -------------------------------------------------------------------------------


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """grpc.ClientCallDetails with the metadata replaced (grpc offers no constructor)."""


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
        metadata = [*(details.metadata or ()), ("traceparent", traceparent)]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def main(argv: list[str] | None = None) -> int:
    """Run one keelctl command; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    tracing.configure_tracing("keelctl", trace_file=args.trace_file)
    try:
        with tracing.tracer("keelctl").start_as_current_span(
            f"keelctl {args.command}", kind=SpanKind.CLIENT
        ) as span:
            code = _run(args)
            span.set_attribute("keel.exit_code", code)
            if code != EXIT_OK:
                span.set_status(Status(StatusCode.ERROR, f"exit status {code}"))
            return code
    finally:
        tracing.shutdown_tracing()


def _run(args: argparse.Namespace) -> int:
    address = args.controlplane or os.environ.get("KEEL_CONTROLPLANE") or DEFAULT_CONTROLPLANE
    try:
        manifest = load_manifest(args.filename) if args.command == "apply" else None
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        with grpc.insecure_channel(address, options=options) as raw_channel:
            channel = grpc.intercept_channel(raw_channel, TraceparentInterceptor())
            ctx = Context(_STUB(channel), args, now=datetime.now(UTC))
            commands: dict[str, Callable[[], str]] = {
                "apply": lambda: cmd_apply(ctx, manifest),
                "get": lambda: cmd_get(ctx),
                "describe": lambda: cmd_describe(ctx),
                "delete": lambda: cmd_delete(ctx),
                "stuck": lambda: observe.cmd_stuck(ctx),
                "events": lambda: observe.cmd_events(ctx),
                "logs": lambda: observe.cmd_logs(ctx),
            }
            text = commands[args.command]()
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as e:
        print(rpc_error_line(e, address=address, timeout=args.timeout), file=sys.stderr)
        return EXIT_ERROR
    if text:
        print(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
