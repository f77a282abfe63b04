"""keel-controlplane's command line: every flag, its default from `Settings`, and the
`Settings` built from them. `main` parses with `build_parser` and runs `serve` or `migrate`.

Every duration the control plane waits on is one row of `DURATION_FLAGS`, so a new one gets
its flag, its help text and its default in one place.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from controlplane.metrics import DEFAULT_ADDRESS as DEFAULT_METRICS
from controlplane.metrics import MetricsError, parse_address
from controlplane.settings import Settings
from keel import logs, tracing
from keel.spec import SpecError, format_duration, format_memory, parse_duration, parse_memory

DESCRIPTION = "keel-controlplane: the control plane of a Keel fleet (one replica)."


def _seconds(flag: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            return parse_duration(text, flag) / 1000.0
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _mib(flag: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            return parse_memory(text, flag)
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got '{text}'")
    return value


def _metrics_address(text: str) -> str:
    try:
        parse_address(text)
    except MetricsError as exc:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or off, got '{text}'") from exc
    return text


# Every duration the control plane waits on: (flag, Settings field, what it means).
DURATION_FLAGS = (
    ("--liveness-grace", "liveness_grace_s", "no heartbeat this long: the host is NOT_READY"),
    ("--unknown-after", "unknown_after_s", "NOT_READY this long: UNKNOWN"),
    (
        "--reschedule-after",
        "reschedule_after_s",
        "not READY this long: its service instances are fenced and replaced elsewhere",
    ),
    (
        "--self-fence-margin",
        "self_fence_margin_s",
        "on_disconnect.stop_after + stop grace + this since the last heartbeat: presumed stopped",
    ),
    (
        "--resync-period",
        "resync_period_s",
        "every stream and workload is looked at again; the leader's cache catches up",
    ),
    ("--liveness-interval", "liveness_interval_s", "how often hosts' heartbeats are judged"),
    ("--stuck-interval", "stuck_interval_s", "how often stuck objects and the backlog are judged"),
    ("--retry-base", "retry_base_s", "first back-off of a key whose reconcile failed"),
    ("--retry-max", "retry_max_s", "longest back-off of a reconcile that keeps failing"),
    ("--leader-retry", "leader_retry_s", "how often a follower tries to become the leader"),
    (
        "--leader-watch-interval",
        "leader_watch_interval_s",
        "how often the leader checks the connection holding its lock",
    ),
    ("--hello-timeout", "hello_timeout_s", "an agent's stream must open with Hello within this"),
    ("--report-retry-max", "report_retry_max_s", "longest wait between report batch retries"),
    ("--shutdown-grace", "shutdown_grace_s", "SIGTERM: how long in-flight calls get"),
    ("--db-timeout", "db_timeout_s", "a statement or a wait for a connection: then UNAVAILABLE"),
    ("--db-probe-interval", "db_probe_interval_s", "how often health probes Postgres"),
    ("--db-probe-timeout", "db_probe_timeout_s", "a probe slower than this: FleetService down"),
    ("--freeze-poll", "freeze_poll_s", "how often the deploy freeze is read (keel_deploy_frozen)"),
    (
        "--hook-timeout",
        "hook_timeout_s",
        "an Alertmanager webhook delivery not done within this is answered 503 (retried)",
    ),
    ("--log-wait", "log_wait_s", "keelctl logs: how long the agent gets to answer"),
    (
        "--log-relay-lease",
        "log_relay_lease_s",
        "keelctl logs relayed from another replica: how often a follow renews its lease",
    ),
    (
        "--log-relay-ack",
        "log_relay_ack_s",
        "keelctl logs relayed from another replica: how long to wait for the holder's ack",
    ),
    (
        "--loop-probe-interval",
        "loop_probe_interval_s",
        "how often the event loop's lateness is sampled (keel_event_loop_lag_seconds)",
    ),
    ("--drain-interval", "drain_interval_s", "a running drain is looked at again this often"),
    (
        "--drain-replacement-timeout",
        "drain_replacement_timeout_s",
        "a drain's replacement not ready this long: REPLACEMENT_NOT_READY",
    ),
    (
        "--drain-stop-slack",
        "drain_stop_slack_s",
        "a drained instance not stopped this long past its stop grace: STOP_TIMEOUT",
    ),
    (
        "--drain-blocked-after",
        "drain_blocked_after_s",
        "a drain blocked this long with no move finishing: DRAIN_BLOCKED",
    ),
    (
        "--canary-waiting-after",
        "canary_waiting_after_s",
        "canaries awaiting promotion this long: CANARY_AWAITING_PROMOTION",
    ),
    ("--watch-poll", "watch_poll_s", "op watch: how often the operation is read again"),
    (
        "--auth-cache",
        "auth_cache_s",
        "a checked token is trusted this long (a revocation elsewhere takes effect within it,"
        " open streams included)",
    ),
    (
        "--request-retention",
        "request_retention_s",
        "a retry with the same keel-request-id within this is answered from the first attempt",
    ),
    (
        "--request-prune-interval",
        "request_prune_interval_s",
        "how often request-id records past --request-retention are deleted",
    ),
    (
        "--retention",
        "retention_s",
        "events, ended operations and confirmed tombstones older than this are deleted",
    ),
    ("--prune-interval", "prune_interval_s", "how often the leader deletes what is past retention"),
    (
        "--gone-after",
        "gone_after_s",
        "a host not READY this long is listed GONE (and left out of the mass-failure brake's "
        "share)",
    ),
    (
        "--rollout-paused-after",
        "rollout_paused_after_s",
        "a rollout paused this long is shown by keelctl stuck: ROLLOUT_PAUSED",
    ),
)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share above 0 and at most 1, got '{text}'")
    return value


def _as_is(value: object) -> object:
    return value


def _suppressed(value: object) -> object:
    return argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keel-controlplane", description=DESCRIPTION)
    d = Settings()
    p.add_argument(
        "--database-url",
        default=os.environ.get("KEEL_DATABASE_URL"),
        help="Postgres URL (env KEEL_DATABASE_URL); absent: embedded Postgres under --state-dir",
    )
    p.add_argument("--state-dir", type=Path, default=d.state_dir)
    p.add_argument(
        "--secret-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="the key that seals secret_env values (default: <state-dir>/secret.key, created "
        "0600 on first start; every replica needs the same one)",
    )
    p.add_argument("--log-format", choices=logs.FORMATS, default=d.log_format)
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the control plane (the default)")
    for target in (p, serve):
        # The subcommand's copies default to SUPPRESS: an option given before `serve` is not
        # reset by the subcommand's default.
        default = _suppressed if target is serve else _as_is
        target.add_argument(
            "--listen", default=default(d.listen), help="HOST:PORT (port 0: pick one)"
        )
        for flag, field, help_text in DURATION_FLAGS:
            target.add_argument(
                flag,
                dest=field,
                type=_seconds(flag),
                default=default(getattr(d, field)),
                metavar="D",
                help=f"{help_text} (default: {format_duration(round(getattr(d, field) * 1000))})",
            )
        target.add_argument(
            "--max-unready-share",
            type=_share,
            default=default(d.max_unready_share),
            metavar="F",
            help="mass-failure brake: more than this share of hosts not READY (or none READY) "
            "fences nothing (default: %(default)s)",
        )
        target.add_argument(
            "--max-message-bytes",
            type=int,
            default=default(d.max_message_bytes),
            metavar="N",
            help="the largest request accepted (default: %(default)s)",
        )
        target.add_argument(
            "--prune-batch",
            type=_positive,
            default=default(d.prune_batch),
            metavar="N",
            help="the most rows one retention transaction deletes (default: %(default)s)",
        )
        target.add_argument(
            "--metrics",
            type=_metrics_address,
            default=default(DEFAULT_METRICS),
            metavar="HOST:PORT|off",
            help="serve Prometheus /metrics here (port 0: pick one; off: do not serve)",
        )
        target.add_argument(
            "--trace-file",
            default=default(os.environ.get(tracing.TRACE_FILE_ENV)),
            metavar="PATH",
            help="append finished spans as JSON lines (env KEEL_TRACE_FILE)",
        )
        target.add_argument(
            "--trace-file-max-size",
            dest="trace_file_max_mib",
            type=_mib("--trace-file-max-size"),
            default=default(d.trace_file_max_mib),
            metavar="SIZE",
            help="past this size the trace file is renamed to PATH.1 and a new one begun "
            f"(default: {format_memory(d.trace_file_max_mib)})",
        )
        for flag, what in (
            ("--tls-cert", "TLS certificate (PEM) of the gRPC port"),
            ("--tls-key", "its private key (PEM)"),
            ("--tls-client-ca", "require client certificates signed by this CA (mutual TLS)"),
        ):
            target.add_argument(flag, type=Path, default=default(None), metavar="PATH", help=what)
        target.add_argument(
            "--insecure",
            action="store_true",
            default=default(False),
            help="allow listening on a non-loopback address without TLS (tokens in clear text)",
        )
    m = sub.add_parser("migrate", help="move the schema up or down explicitly")
    m.add_argument("--to", type=int, default=None, help="target version (default: newest)")
    sub.add_parser(
        "reseal-secrets",
        help="seal every stored secret_env value again with the first key of the key file "
        "(key rotation: runbooks/secret-key.md)",
    )
    r = sub.add_parser(
        "reset-token",
        help="replace the admin, join or webhook token (a lost one) and write it under --state-dir",
    )
    r.add_argument("name", choices=("admin", "join", "webhook"))
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        listen=args.listen,
        database_url=args.database_url,
        state_dir=args.state_dir,
        secret_key_file=args.secret_key_file,
        log_format=args.log_format,
        trace_file_max_mib=args.trace_file_max_mib,
        max_message_bytes=args.max_message_bytes,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
        max_unready_share=args.max_unready_share,
        prune_batch=args.prune_batch,
        **{field: getattr(args, field) for _, field, _ in DURATION_FLAGS},
    )
