"""Control-plane settings: every duration the logic waits on is here, with its flag (see main)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:7443"
    database_url: str | None = None
    state_dir: Path = Path(".keel/controlplane")
    # The key that seals secret_env values (controlplane.secrets); None: <state-dir>/secret.key.
    secret_key_file: Path | None = None
    log_format: str = "auto"
    # A host without a heartbeat for this long is NOT_READY (kubelet lease: 40 s).
    liveness_grace_s: float = 40.0
    # NOT_READY for this long more: UNKNOWN.
    unknown_after_s: float = 60.0
    # A host NOT_READY/UNKNOWN this long has its service instances fenced, to be replaced
    # elsewhere within each workload's max_surge.
    reschedule_after_s: float = 300.0
    # The mass-failure brake: with more than this share of the hosts not READY (or none READY)
    # nothing is fenced (the Kubernetes node lifecycle controller's unhealthy threshold: 0.55).
    max_unready_share: float = 0.55
    # A fenced instance of a workload with on_disconnect.stop_after is presumed stopped by its
    # agent once stop_after + its stop grace + this long have passed since the host's last
    # heartbeat (the agent's reaction: its reconcile pass, a late event loop).
    self_fence_margin_s: float = 5.0
    # Every stream resends what changed even without a notification, every controller
    # re-examines every workload, and the leader's cache reads every host and every workload
    # whose version moved unread, this often (lost NOTIFYs are harmless).
    resync_period_s: float = 30.0
    # How often the event loop's lateness is sampled (keel_event_loop_lag_seconds).
    loop_probe_interval_s: float = 0.25
    # How often the stuck detector judges every object and refreshes the backlog gauges.
    stuck_interval_s: float = 2.0
    # How often liveness judges hosts.
    liveness_interval_s: float = 1.0
    # Controller work-queue back-off after an error, per key.
    retry_base_s: float = 0.1
    retry_max_s: float = 30.0
    # Graceful stop: how long in-flight RPCs get before they are cancelled.
    shutdown_grace_s: float = 5.0
    # How often a follower replica tries to become the leader.
    leader_retry_s: float = 2.0
    # How often the leader checks the connection that holds its lock (losing it stops the
    # controllers at once).
    leader_watch_interval_s: float = 1.0
    # An agent's stream must open with Hello within this long.
    hello_timeout_s: float = 10.0
    # The longest wait between retries of a report batch Postgres could not take.
    report_retry_max_s: float = 5.0
    # The --trace-file is rotated past this size (one older file is kept), so it is bounded.
    trace_file_max_mib: int = 32
    # Every statement, and every wait for a pooled connection, gets this long before the
    # database counts as unavailable (the call answers UNAVAILABLE; agent streams stay open).
    db_timeout_s: float = 10.0
    # Health: how often Postgres is probed, and how long a probe may take before
    # keel.v1.FleetService is NOT_SERVING.
    db_probe_interval_s: float = 2.0
    # How often every replica reads the deploy freeze for keel_deploy_frozen (a freeze with an
    # `until` ends with no write to notice).
    freeze_poll_s: float = 10.0
    # An Alertmanager webhook delivery (reading its body, then its write) gets this long
    # before it is answered 503, which Alertmanager retries.
    hook_timeout_s: float = 10.0
    db_probe_timeout_s: float = 2.0
    # keelctl logs: how long the agent gets to send the first chunk (bounded by the caller's
    # deadline too, so a silent agent is named before the caller gives up).
    log_wait_s: float = 30.0
    # keelctl logs through a replica that does not hold the host's stream: a following
    # request renews its lease on the holder this often (the holder stops after 3 misses).
    log_relay_lease_s: float = 10.0
    # ... and how long it waits for the replica holding the stream to acknowledge a request
    # before it concludes that none does (the agent is disconnecting or reconnecting).
    log_relay_ack_s: float = 2.0
    # A running drain is looked at again at least this often (and at once when an instance it
    # moves changes).
    drain_interval_s: float = 1.0
    # A drain's replacement not ready this long is a REPLACEMENT_NOT_READY blocker.
    drain_replacement_timeout_s: float = 60.0
    # An instance a drain stopped and not gone this long past its stop grace: STOP_TIMEOUT.
    drain_stop_slack_s: float = 10.0
    # A drain blocked this long without a move finishing is stuck: DRAIN_BLOCKED.
    drain_blocked_after_s: float = 60.0
    # Canaries awaiting promotion this long are stuck: CANARY_AWAITING_PROMOTION.
    canary_waiting_after_s: float = 3600.0
    # WatchOperation reads the record at least this often (NOTIFY wakes it sooner).
    watch_poll_s: float = 2.0
    # The largest request the gRPC server accepts (an ApplyWorkload manifest is far smaller:
    # keel.spec.MAX_MANIFEST_BYTES; an agent's full status report of a large host is not).
    max_message_bytes: int = 4 * 1024 * 1024
    # A verified token is trusted this long before it is read again: a token revoked on
    # another replica stops working here within this time (on the replica that revoked it, at
    # once); with Postgres away, tokens already checked keep working.
    auth_cache_s: float = 5.0
    # TLS on the gRPC port: certificate and key (PEM); with a client CA, agents and keelctl
    # must present a certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Listen on a non-loopback address without TLS (tokens would cross the network in clear).
    insecure: bool = False
    # A mutating call's request-id record is kept this long: a retry with the same id within
    # it is answered from the record (controlplane/idempotency.py), a later one runs again.
    request_retention_s: float = 24 * 3600.0
    # How often records past the retention are deleted.
    request_prune_interval_s: float = 60.0
    # Retention: events, ended operations and confirmed tombstones older than this are deleted
    # by the leader, every prune interval, at most prune_batch rows per transaction.
    retention_s: float = 7 * 24 * 3600.0
    prune_interval_s: float = 600.0
    prune_batch: int = 1000
    # A host not READY for this long is listed GONE (removable with `keelctl delete host`).
    gone_after_s: float = 24 * 3600.0
    # A rollout paused this long is shown by `keelctl stuck` (ROLLOUT_PAUSED), with who paused
    # it and since when: a forgotten pause holds every later spec change.
    rollout_paused_after_s: float = 3600.0
