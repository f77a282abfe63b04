"""keelctl's command line: every command, its arguments and options, and their checks.

`build_parser` is the whole command line (the runbook tests parse their commands with it);
`keel.ctl.main` runs what it parses, `keel.ctl.commands` and `keel.ctl.observe` carry the
commands out. A command given wrongly is a `CtlError` (exit status 2).
"""

from __future__ import annotations

import argparse
import re

from keel.ctl import canary
from keel.spec import SpecError, parse_duration

DEFAULT_CONTROLPLANE = "127.0.0.1:7443"
DEFAULT_TIMEOUT = "10s"

# Resource names and their aliases, as `get`, `describe` and `delete` accept them.
WORKLOAD_NAMES = ("workloads", "workload", "wl")
HOST_NAMES = ("hosts", "host")
INSTANCE_NAMES = ("instances", "instance", "inst")
CANONICAL = {
    **dict.fromkeys(WORKLOAD_NAMES, "workload"),
    **dict.fromkeys(HOST_NAMES, "host"),
    **dict.fromkeys(INSTANCE_NAMES, "instance"),
}


class WatchLost(Exception):
    """The replica serving an operation's watch went away mid-stream: keelctl watches it on
    another replica (the operation itself lives in Postgres and goes on)."""

    def __init__(self, op_id: str) -> None:
        super().__init__(op_id)
        self.op_id = op_id


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


# What the control plane accepts as a request id (controlplane/idempotency.py).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


def _request_id_arg(text: str) -> str:
    if not _REQUEST_ID.match(text):
        raise argparse.ArgumentTypeError(
            "must be 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':' and '-', starting with a letter "
            f"or digit, got '{text}'"
        )
    return text


def _add_globals(p: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    # The same options are accepted after the subcommand (`keelctl get hosts -o json`); there
    # their default is SUPPRESS so that an option given before the subcommand is not reset.
    def default(value: object) -> object:
        return argparse.SUPPRESS if on_subcommand else value

    p.add_argument(
        "--controlplane",
        metavar="ADDR",
        default=default(None),
        help="control plane address, or several replicas comma-separated (tried in order when "
        "one cannot be reached or answers UNAVAILABLE; default: $KEEL_CONTROLPLANE, else "
        f"{DEFAULT_CONTROLPLANE})",
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
    p.add_argument(
        "--token-file",
        metavar="PATH",
        default=default(None),
        help="send the token in this file (default: $KEEL_TOKEN)",
    )
    for flag, what in (
        ("--tls-ca", "connect with TLS, trusting this CA (PEM)"),
        ("--tls-cert", "client certificate (PEM), for mutual TLS"),
        ("--tls-key", "its private key (PEM)"),
    ):
        p.add_argument(flag, metavar="PATH", default=default(None), help=what)
    p.add_argument(
        "--request-id",
        type=_request_id_arg,
        metavar="ID",
        default=default(None),
        help="name this request (keel-request-id): run again with the same id, a change that "
        "was already made is answered as it was, not made twice (default: a new UUID)",
    )


def _deadline_arg(text: str) -> int:
    try:
        ms = parse_duration(text, "--deadline")
    except SpecError as e:
        raise argparse.ArgumentTypeError(e.rule) from None
    if ms < 1000:
        raise argparse.ArgumentTypeError(f"must be at least 1s, got '{text}'")
    return ms


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _duration_arg(flag: str, *, zero: bool):  # type: ignore[no-untyped-def]
    """A DURATION option (`2s`, `5m`); 0 allowed only where it means "no limit"."""

    def parse(text: str) -> float:
        if zero and text.strip() == "0":
            return 0.0
        try:
            ms = parse_duration(text, flag)
        except SpecError as e:
            raise argparse.ArgumentTypeError(e.rule) from None
        if ms <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got '{text}'")
        return ms / 1000

    return parse


def rollout_verb(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
    verb: str,
    text: str,
    *,
    reason: bool = False,
) -> argparse.ArgumentParser:
    """One `keelctl rollout VERB WORKLOAD` command (with `--reason` when it changes
    something); `keel.ctl.rollout.VERBS` runs it. A new verb is one call here and one entry
    there."""
    p = verbs.add_parser(verb, help=text)
    _add_globals(p, on_subcommand=True)
    p.add_argument("workload", metavar="WORKLOAD")
    if reason:
        p.add_argument(
            "--reason", default="", metavar="TEXT", help="why (kept in the workload's events)"
        )
    return p


def _add_rollout(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="a workload's rollout: history, status, pause, resume, undo, promote, abort",
    )
    _add_globals(rollout, on_subcommand=True)
    verbs = rollout.add_subparsers(dest="rollout_command", required=True, metavar="VERB")
    history = rollout_verb(verbs, "history", "every revision: state, when, who applied it and why")
    history.add_argument(
        "--revision",
        type=_non_negative,
        default=0,
        metavar="N",
        help="print this revision in full: its cause, its failure record with the evidence, "
        "its spec",
    )
    status = rollout_verb(
        verbs, "status", "how far the rollout is: updated, ready and old instances left"
    )
    status.add_argument(
        "--wait",
        action="store_true",
        help="follow it to the end; exit 0 when complete, 1 when it failed or was rolled back",
    )
    status.add_argument(
        "--wait-timeout",
        type=_duration_arg("--wait-timeout", zero=True),
        default=0.0,
        metavar="DURATION",
        help="with --wait: give up (exit 1) after this long; the rollout goes on (default 0: "
        "no limit)",
    )
    status.add_argument(
        "--interval",
        type=_duration_arg("--interval", zero=False),
        default=2.0,
        metavar="DURATION",
        help="with --wait: how often the status is read (default 2s)",
    )
    rollout_verb(verbs, "pause", "hold the rollout where it is (scaling still works)", reason=True)
    rollout_verb(verbs, "resume", "let a paused rollout go on", reason=True)
    undo = rollout_verb(
        verbs,
        "undo",
        "return to an earlier revision's spec; instances already running it are kept",
        reason=True,
    )
    undo.add_argument(
        "--to-revision",
        type=_non_negative,
        default=0,
        metavar="N",
        help="the revision to return to (default: the last one that was fully ready)",
    )
    canary.add_verbs(verbs, _add_globals)


def _selector_arg(text: str) -> dict[str, str]:
    """`k=v` or `k=v,k2=v2` (the control plane checks the keys and values)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"must be k=v[,k=v...], got {text!r}")
        if key.strip() in out:
            raise argparse.ArgumentTypeError(f"{key.strip()!r} given twice in {text!r}")
        out[key.strip()] = value.strip()
    return out


def _add_selection(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("hosts", nargs="*", metavar="HOST", help=f"hosts to {verb}")
    p.add_argument(
        "--selector",
        "-l",
        type=_selector_arg,
        action="append",
        metavar="K=V",
        help=f"also {verb} every host with these labels (k=v[,k=v]; repeatable)",
    )


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
    apply.add_argument(
        "--reason",
        default="",
        metavar="TEXT",
        help="the change cause, kept with the revision (keelctl rollout history)",
    )
    apply.add_argument(
        "--override-freeze",
        action="store_true",
        help="apply a spec change while deploys are frozen (needs --reason; recorded)",
    )

    get = sub.add_parser("get", help="list workloads, hosts or instances")
    _add_globals(get, on_subcommand=True)
    get.add_argument(
        "resource", choices=WORKLOAD_NAMES + HOST_NAMES + INSTANCE_NAMES, metavar="RESOURCE"
    )
    get.add_argument("--workload", metavar="NAME", help="instances of this workload only")
    get.add_argument("--host", metavar="NAME", help="instances on this host only")
    get.add_argument(
        "--limit",
        type=_non_negative,
        default=0,
        metavar="N",
        help="the first N in the list's order (default: 0, every one; read a page at a time)",
    )

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

    cordon = sub.add_parser(
        "cordon", help="mark hosts unschedulable, all in one transaction (all or none)"
    )
    _add_globals(cordon, on_subcommand=True)
    _add_selection(cordon, "cordon")
    cordon.add_argument("--reason", metavar="TEXT", help="why (shown in describe host, events)")

    uncordon = sub.add_parser("uncordon", help="make cordoned hosts schedulable again")
    _add_globals(uncordon, on_subcommand=True)
    _add_selection(uncordon, "uncordon")

    drain = sub.add_parser(
        "drain",
        help="cordon hosts and move everything off them (a durable operation; --dry-run plans)",
    )
    _add_globals(drain, on_subcommand=True)
    _add_selection(drain, "drain")
    drain.add_argument(
        "--deadline",
        dest="deadline_ms",
        type=_deadline_arg,
        default=0,
        metavar="DURATION",
        help="how long the drain may take (default 1h)",
    )
    drain.add_argument(
        "--on-deadline",
        choices=("fail", "force"),
        default="fail",
        help="at the deadline: fail (hosts stay cordoned, blockers listed; the default) or "
        "force (stop what remains)",
    )
    drain.add_argument(
        "--max-parallel",
        type=_non_negative,
        default=0,
        metavar="N",
        help="moves under way at once over the whole drain (default 0: no limit)",
    )
    drain.add_argument(
        "--ignore-daemons", action="store_true", help="leave daemon instances running"
    )
    drain.add_argument("--reason", metavar="TEXT", help="why (in the operation and its events)")
    drain.add_argument(
        "--wait", action="store_true", help="follow it to the end; exit 0 only if it succeeds"
    )
    drain.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: what would move where, in which waves, what would block, how long",
    )

    ops = sub.add_parser("ops", help="list running operations (drains)")
    _add_globals(ops, on_subcommand=True)
    ops.add_argument("--all", action="store_true", help="every operation kept, ended ones too")

    op = sub.add_parser("op", help="one operation: get, watch or cancel it")
    _add_globals(op, on_subcommand=True)
    op_sub = op.add_subparsers(dest="op_command", required=True, metavar="VERB")
    for verb, text in (
        ("get", "everything about an operation: progress, blockers, runbook"),
        ("watch", "follow an operation to its end; exit 0 only if it succeeds"),
        ("cancel", "stop an operation moving anything; what moved stays moved"),
    ):
        p = op_sub.add_parser(verb, help=text)
        _add_globals(p, on_subcommand=True)
        p.add_argument("id", metavar="ID")
        if verb == "cancel":
            p.add_argument(
                "--uncordon", action="store_true", help="also make its hosts schedulable again"
            )

    _add_rollout(sub)

    token = sub.add_parser("token", help="operator tokens (admin): create, list, revoke")
    _add_globals(token, on_subcommand=True)
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="VERB")
    create = token_sub.add_parser("create", help="a new token; printed once, never again")
    _add_globals(create, on_subcommand=True)
    create.add_argument(
        "--role", required=True, choices=("viewer", "operator", "admin", "join", "webhook"),
        help="viewer: read; operator: also change; admin: also tokens; join: agents join; "
        "webhook: Alertmanager's, for /hooks/alertmanager",
    )  # fmt: skip
    create.add_argument("--name", required=True, help="its name: the actor of what it changes")
    _add_globals(token_sub.add_parser("list", help="every token (never their values)"),
                 on_subcommand=True)  # fmt: skip
    revoke = token_sub.add_parser("revoke", help="revoke a token by name")
    _add_globals(revoke, on_subcommand=True)
    revoke.add_argument("name", metavar="NAME")

    host = sub.add_parser("host", help="host identity (admin)")
    _add_globals(host, on_subcommand=True)
    host_sub = host.add_subparsers(dest="host_command", required=True, metavar="VERB")
    reset = host_sub.add_parser(
        "reset-credential",
        help="revoke a host's credential so its (re)installed agent may join again",
    )
    _add_globals(reset, on_subcommand=True)
    reset.add_argument("host", metavar="HOST")

    delete = sub.add_parser(
        "delete",
        help="delete a workload (its instances are stopped) or a host that is not READY",
    )
    _add_globals(delete, on_subcommand=True)
    delete.add_argument("resource", choices=WORKLOAD_NAMES + HOST_NAMES, metavar="RESOURCE")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument(
        "--force",
        action="store_true",
        help="host: remove the instances placed on it too (their workloads replace them)",
    )

    freeze = sub.add_parser(
        "freeze", help="freeze deploys: spec changes are refused until unfrozen (or --until)"
    )
    _add_globals(freeze, on_subcommand=True)
    freeze.add_argument("--reason", default="", metavar="TEXT", help="why (shown to everyone)")
    freeze.add_argument(
        "--until",
        default="",
        metavar="TIME",
        help="lift by itself then: an RFC 3339 time (2030-01-02T15:04:05Z) or a duration (2h)",
    )
    freeze.add_argument(
        "--status", action="store_true", help="change nothing: show what freezes deploys"
    )
    unfreeze = sub.add_parser(
        "unfreeze", help="lift the operator's deploy freeze (alerts' freezes lift on resolve)"
    )
    _add_globals(unfreeze, on_subcommand=True)
    lift = unfreeze.add_mutually_exclusive_group()
    lift.add_argument(
        "--alert",
        default="",
        metavar="NAME",
        help="lift this alert's freeze instead (its resolve was lost; it freezes again if it "
        "still fires)",
    )
    lift.add_argument(
        "--all", action="store_true", help="lift every freeze: the operator's and every alert's"
    )
    return parser
