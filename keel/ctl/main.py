"""keelctl: the operator CLI. Parses arguments, calls FleetService, prints the answer.

`main` runs one command and returns the exit status: 0 ok, 1 an error from the control plane
(one line on stderr: its message and status code), 2 a usage error (bad arguments, an
unreadable file or a manifest that is not valid YAML/JSON). The command line is
`keel.ctl.args` (`build_parser`), the commands are `keel.ctl.commands` (objects) and
`keel.ctl.observe` (incidents), a manifest is read by `keel.ctl.documents`, formatting is
`keel.ctl.output`. keelctl is short-lived, so it uses the synchronous gRPC API, and its start-up
is most of a command's time: what only some commands use (YAML, OpenTelemetry) is imported
when one of them runs. With tracing on (`--trace-file` / KEEL_TRACE_FILE, or OTLP; see
`keel.traceconfig`), each command is one span (`keel.ctl.traced`) whose traceparent goes with
every call so the control plane continues it.
The rollout verbs are `keel.ctl.rollout`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from keel import traceconfig
from keel.ctl import auth, observe
from keel.ctl.args import DEFAULT_CONTROLPLANE, CtlError, WatchLost, build_parser
from keel.ctl.commands import Context, cmd_apply, cmd_delete, cmd_describe, cmd_get
from keel.ctl.requestid import RequestIdInterceptor, new_request_id
from keel.spec import format_duration
from keel.v1 import fleet_pb2_grpc

__all__ = ["build_parser", "main", "rpc_error_line"]

# List answers on a large fleet outgrow gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

# The generated stub module is untyped; Any keeps mypy quiet whether or not it is checked.
_STUB: Any = fleet_pb2_grpc.FleetServiceStub


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
    refused = auth.hint(code)
    return f"error: {details} ({name})" + (f"\n  {refused}" if refused else "")


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one keelctl command; returns the exit status (the console script exits with it)."""
    try:
        status = _main(argv)
        # Flushed here, not at interpreter exit, so that a reader gone away is caught below.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout went away (`keelctl get instances | head`): stop quietly, as
        # shell tools do. Python ignores SIGPIPE, so the write raises instead; stdout is
        # pointed at /dev/null so that the interpreter's own flush at exit does not raise again
        # (the Python documentation's recipe, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    return status


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not traceconfig.exporting(args.trace_file):
        # No span would be exported, and the no-op tracer sends no traceparent: OpenTelemetry
        # is not imported at all (it is a large share of a short command's start-up).
        return _run(args)
    from keel.ctl import traced

    return traced.run("keelctl", args, _run)


def _hostops() -> Any:
    from keel.ctl import hostops  # only cordon and uncordon use it

    return hostops


def _operations() -> Any:
    from keel.ctl import operations  # drains and operations (progress, JSON): only they

    return operations


def _freeze() -> Any:
    from keel.ctl import freeze  # the deploy-freeze verbs: only they

    return freeze


def _rollout() -> Any:
    from keel.ctl import rollout  # the rollout verbs (and rich, for --wait on a terminal)

    return rollout


# A watch cut off mid-stream is taken up on another replica at most this many times (a
# replica that accepts streams and dies at once must not keep keelctl looping).
_WATCH_RESUMES = 5


def addresses_of(text: str) -> list[str]:
    """`--controlplane` as a list: one address, or several comma-separated (replicas)."""
    return [a.strip() for a in text.split(",") if a.strip()] or [DEFAULT_CONTROLPLANE]


def worth_another_replica(err: grpc.RpcError) -> bool:
    """UNAVAILABLE: the call never reached this control plane, its connection broke, or the
    replica could not serve it now (its database away). Trying the next replica repeats no
    change: the same request id goes with it, and a change the first made is answered as it
    was (`keel.ctl.requestid`)."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    return bool(code == grpc.StatusCode.UNAVAILABLE)


def _run(args: argparse.Namespace, *, interceptors: Sequence[Any] = ()) -> int:
    given = args.controlplane or os.environ.get("KEEL_CONTROLPLANE") or DEFAULT_CONTROLPLANE
    addresses = addresses_of(given)
    try:
        manifest = None
        if args.command == "apply":
            from keel.ctl import documents  # YAML: only apply reads a manifest

            manifest = documents.load_manifest(args.filename)
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    # Replicas in the order given: the next is tried when one could not be reached or could
    # not serve the call, with the same request id (a write the first made is not made twice).
    # A watch cut off mid-stream goes on as `op watch` on the replicas after that one, then the
    # ones before it (the same one last: it may be back), each once.
    interceptors = (*interceptors, RequestIdInterceptor(args.request_id or new_request_id()))
    order = list(addresses)
    n = resumed = 0
    while n < len(order):
        address = order[n]
        try:
            return _run_on(args, address, manifest, interceptors)
        except WatchLost as lost:
            resumed += 1
            if resumed > _WATCH_RESUMES:
                print(
                    f"error: lost the control plane at {address} while watching "
                    f"{lost.op_id}, {_WATCH_RESUMES} times; it goes on: "
                    f"keelctl op watch {lost.op_id}",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            print(
                f"lost the control plane at {address} while watching {lost.op_id}; "
                "watching it on another replica",
                file=sys.stderr,
            )
            args.command, args.op_command, args.id = "op", "watch", lost.op_id
            i = addresses.index(address)
            order = order[: n + 1] + addresses[i + 1 :] + addresses[: i + 1]
        except grpc.RpcError as e:
            if not (worth_another_replica(e) and n + 1 < len(order)):
                print(rpc_error_line(e, address=address, timeout=args.timeout), file=sys.stderr)
                if args.command == "op" and args.op_command == "watch":
                    print(f"it goes on: keelctl op watch {args.id}", file=sys.stderr)
                return EXIT_ERROR
        n += 1
    return EXIT_ERROR


def _run_on(
    args: argparse.Namespace, address: str, manifest: object, interceptors: Sequence[Any]
) -> int:
    """Runs the command against one control plane; a call that fails raises grpc.RpcError."""
    try:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Names keelctl at the head of its user agent (in the control plane's logs).
            ("grpc.primary_user_agent", "keelctl"),
        ]
        token = auth.token_of(args)
        if token is not None:
            interceptors = [*interceptors, auth.TokenInterceptor(token)]
        with auth.open_channel(address, args, options) as raw_channel:
            channel = grpc.intercept_channel(raw_channel, *interceptors)
            ctx = Context(_STUB(channel), args, now=datetime.now(UTC))
            commands: dict[str, Callable[[], str | int]] = {
                "apply": lambda: cmd_apply(ctx, manifest),
                "get": lambda: cmd_get(ctx),
                "describe": lambda: cmd_describe(ctx),
                "delete": lambda: cmd_delete(ctx),
                "stuck": lambda: observe.cmd_stuck(ctx),
                "events": lambda: observe.cmd_events(ctx),
                "logs": lambda: observe.cmd_logs(ctx),
                "cordon": lambda: _hostops().cmd_cordon(ctx),
                "uncordon": lambda: _hostops().cmd_uncordon(ctx),
                "drain": lambda: _operations().cmd_drain(ctx),
                "ops": lambda: _operations().cmd_ops(ctx),
                "op": lambda: _operations().cmd_op(ctx),
                "rollout": lambda: _rollout().cmd_rollout(ctx),
                "token": lambda: auth.cmd_token(ctx),
                "host": lambda: auth.cmd_host(ctx),
                "freeze": lambda: _freeze().cmd_freeze(ctx),
                "unfreeze": lambda: _freeze().cmd_unfreeze(ctx),
            }
            result = commands[args.command]()
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(result, int):
        return result  # a command that followed an operation: its outcome, printed already
    if result:
        print(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
