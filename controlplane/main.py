"""keel-controlplane: start-up and graceful stop of one control-plane replica (flags: `flags`).

Start-up: database (given, or embedded) -> migrations under an advisory lock -> pool ->
gRPC server (FleetService, AgentService, health, reflection; every call through
`controlplane.interceptors`) on uvloop -> /metrics (`--metrics`) -> addresses.json ->
leadership campaign. Tracing (`--trace-file`, OTLP) is configured before the loop starts.
SIGTERM: stop accepting, let in-flight RPCs finish (streams are closed), commit the pending
report batch (pending heartbeats are dropped: `heartbeats` says why), then exit (which also
stops an embedded Postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable

import asyncpg
import grpc
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controlplane import alert_hook, looplag, migrate, reseal, secrets
from controlplane.auth import AuthInterceptor
from controlplane.cache import FleetCache
from controlplane.db import redact, resolve_database_url
from controlplane.drainer import DrainController, DrainTimings
from controlplane.errors import KeelError
from controlplane.flags import build_parser, settings_from
from controlplane.fleet import FleetApi
from controlplane.freeze_watch import FreezeWatch
from controlplane.heartbeats import HeartbeatWriter
from controlplane.idempotency import Requests, prune_forever
from controlplane.interceptors import ObservabilityInterceptor
from controlplane.leader import Leadership
from controlplane.listener import Listener
from controlplane.liveness import LivenessController, Timings
from controlplane.logbus import LogBus, publisher
from controlplane.logrelay import LogRelay
from controlplane.metrics import Metrics, serve_metrics
from controlplane.operations_api import OperationWatch
from controlplane.reconcile import Controller, Runner
from controlplane.reports import ReportWriter
from controlplane.retention import Retention, RetentionController
from controlplane.retention_store import RetentionStore
from controlplane.revocation import OpenCalls
from controlplane.rollouts import RolloutController
from controlplane.security import port_credentials as _port_credentials
from controlplane.security import run_reset_token
from controlplane.settings import Settings
from controlplane.sql import Database
from controlplane.status import ReportOutcome, StatusStore
from controlplane.store import Store, create_pool
from controlplane.stuck import StuckDetector
from controlplane.sync import AgentSync, StreamRegistry
from controlplane.tokens import TokenStore
from controlplane.workload import WorkloadController
from keel import logs, tracing
from keel.endpoint import write_addresses
from keel.tls import is_loopback, listen_host
from keel.v1 import agent_pb2, agent_pb2_grpc, fleet_pb2, fleet_pb2_grpc

log = structlog.get_logger("keel.controlplane")

# The cyclic collector's young generation: a collection every this many allocations (CPython's
# default is 700). Reference counting frees nearly all a replica allocates; at the default, a
# control plane serving 5,000 agent streams ran a young collection every few hundred messages,
# each promoting what was in flight, and a full collection of every stream's objects every
# ~20 s (pauses of 0.6-1 s): 6-8% of a core in all. At 50,000, collections become rare.
GC_YOUNG_THRESHOLD = 50_000

FLEET_SERVICE = fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


async def run_migrate(args: argparse.Namespace) -> int:
    url = await resolve_database_url(args.database_url, args.state_dir)
    conn = await asyncpg.connect(url)
    try:
        before, after = await migrate.migrate(conn, to=args.to)
    finally:
        await conn.close()
    print(f"schema at version {after} (was {before})")
    return 0


async def _probe_database(
    store: Store,
    health_servicer: health.aio.HealthServicer,
    *,
    settings: Settings,
    metrics: Metrics,
    on_recovered: Callable[[], None],
) -> None:
    """FleetService is NOT_SERVING while Postgres does not answer in time; agent streams
    (AgentService) and the overall service stay SERVING, and are woken when it is back."""
    serving: bool | None = None
    while True:
        error = ""
        try:
            # The whole probe is bounded, the wait for a pooled connection included: with
            # Postgres frozen, every connection may be held by a call that waits too.
            async with asyncio.timeout(settings.db_probe_timeout_s):
                await store.pool.fetchval("SELECT 1")
            ok = True
        except Exception as exc:
            ok = False
            error = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        if ok != serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await health_servicer.set(FLEET_SERVICE, status)
            metrics.set_database_up(ok)
            if ok and serving is False:
                log.warning("database reachable again")
                on_recovered()
            elif not ok:
                log.warning("database unreachable", error=error,
                            timeout_s=settings.db_probe_timeout_s)  # fmt: skip
            serving = ok
        await asyncio.sleep(settings.db_probe_interval_s)


async def serve(settings: Settings, *, metrics_address: str = "off") -> int:
    port_credentials = _port_credentials(settings)
    url = await resolve_database_url(settings.database_url, settings.state_dir)
    log.info(
        "starting",
        database=redact(url),
        listen=settings.listen,
        tls=port_credentials is not None,
        client_certificates=settings.tls_client_ca is not None,
    )
    if port_credentials is None and not is_loopback(listen_host(settings.listen)):
        log.warning("serving without TLS on a non-loopback address (--insecure)")
    conn = await asyncpg.connect(url)
    try:
        before, after = await migrate.migrate(conn)
        if before != after:
            log.info("schema migrated", version=after, was=before)
    finally:
        await conn.close()

    pool = Database(
        await create_pool(url, timeout_s=settings.db_timeout_s), timeout_s=settings.db_timeout_s
    )
    store = Store(pool)
    status = StatusStore(pool)
    metrics = Metrics()
    tokens = TokenStore(
        pool, cache_s=settings.auth_cache_s, refresh_timeout_s=settings.db_probe_timeout_s
    )
    await tokens.bootstrap(settings.state_dir)
    # Streaming calls end when their token is revoked, within --auth-cache on every replica.
    open_calls = OpenCalls(
        pool, interval_s=settings.auth_cache_s, on_denied=metrics.count_auth_denied
    )

    def token_revoked(name: str) -> None:
        tokens.forget(name)
        open_calls.notified(name)

    registry = StreamRegistry()
    secret_key = settings.secret_key_file or settings.state_dir / secrets.KEY_FILE
    secret_box = await asyncio.to_thread(
        secrets.load_or_create, secret_key, on_open_failure=metrics.count_secret_open_failure
    )
    log.info("secret key loaded", key_file=str(secret_key), key_id=secret_box.sealing_key_id)

    def runner(controller: Controller) -> Runner:
        return Runner(
            controller,
            metrics=metrics,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
            resync_period_s=settings.resync_period_s,
        )

    # The leader's informer: the controllers read the fleet from it. A notification it has read
    # wakes the workload controller; `*` (hosts changed) looks at every workload again.
    def workload_changed(name: str) -> None:
        workloads.add(name)
        rollouts.add(name)
        for op in drainer.involving(name):
            drains.add(op)

    def hosts_changed() -> None:
        workloads.resync_now()
        drains.resync_now()

    cache = FleetCache(
        store,
        metrics=metrics,
        resync_period_s=settings.resync_period_s,
        on_workload=workload_changed,
        on_hosts=hosts_changed,
    )
    workloads = runner(WorkloadController(store, cache=cache, metrics=metrics))
    rollouts = runner(RolloutController(store, cache=cache, metrics=metrics))
    drainer = DrainController(
        store,
        cache=cache,
        metrics=metrics,
        timings=DrainTimings(
            interval_s=settings.drain_interval_s,
            replacement_timeout_s=settings.drain_replacement_timeout_s,
            stop_slack_s=settings.drain_stop_slack_s,
            blocked_after_s=settings.drain_blocked_after_s,
        ),
    )
    drains = runner(drainer)
    timings = Timings(
        grace_s=settings.liveness_grace_s,
        unknown_after_s=settings.unknown_after_s,
        reschedule_after_s=settings.reschedule_after_s,
        max_unready_share=settings.max_unready_share,
        self_fence_margin_s=settings.self_fence_margin_s,
        gone_after_s=settings.gone_after_s,
    )
    liveness = runner(
        LivenessController(
            store,
            hosts=cache,
            timings=timings,
            interval_s=settings.liveness_interval_s,
            metrics=metrics,
        )
    )
    stuck = runner(
        StuckDetector(
            store,
            status,
            cache=cache,
            metrics=metrics,
            interval_s=settings.stuck_interval_s,
            reconcile_failures=workloads.failures,
            drains_blocked=drainer.blocked,
            canary_waiting_after_s=settings.canary_waiting_after_s,
            rollout_paused_after_s=settings.rollout_paused_after_s,
        )
    )
    # Its own period only: the resync period would prune far more often than asked.
    retention = Runner(
        RetentionController(
            RetentionStore(pool),
            now=store.now,
            settings=Retention(
                retention_s=settings.retention_s,
                interval_s=settings.prune_interval_s,
                batch=settings.prune_batch,
                gone_after_s=settings.gone_after_s,
            ),
            metrics=metrics.growth,
        ),
        metrics=metrics,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
        resync_period_s=None,
    )
    runners = (workloads, liveness, stuck, drains, retention, rollouts)

    def reports_written(outcome: ReportOutcome) -> None:
        cache.reported(outcome)  # applies the batch and wakes its workloads, when leading
        for change, seconds in outcome.converged:
            metrics.observe_convergence(change, seconds)

    reports = ReportWriter(
        status, on_written=reports_written, retry_max_s=settings.report_retry_max_s
    )

    # Heartbeats in batches; on the leader, the cache learns each host's new heartbeat from it.
    heartbeats = HeartbeatWriter(store, metrics=metrics, on_written=cache.heartbeats_written)
    watch = OperationWatch()

    def wake_everything() -> None:
        registry.wake_all()
        cache.resync_now()
        workloads.resync_now()
        drains.resync_now()
        rollouts.resync_now()
        watch.changed_all()
        open_calls.notified()

    def operation_changed(op: str) -> None:
        watch.changed(op)
        drains.add(op)

    logs = LogRelay(registry)
    logs_elsewhere = LogBus(
        logs,
        publish=publisher(store.pool),
        lease_s=settings.log_relay_lease_s,
        ack_s=settings.log_relay_ack_s,
    )
    listener = Listener(
        url,
        on_host=registry.wake,
        on_workload=cache.notified,
        on_reconnect=wake_everything,
        on_operation=operation_changed,
        on_logs=logs_elsewhere.received,
        on_token=token_revoked,
    )
    leadership = Leadership(
        store,
        database_url=url,
        settings=settings,
        runners=runners,
        cache=cache,
        on_leading=metrics.set_leader,
    )

    metrics.track_sync_streams(lambda: len(registry))
    server = grpc.aio.server(
        interceptors=[
            ObservabilityInterceptor(metrics=metrics),
            AuthInterceptor(tokens=tokens, metrics=metrics, open_calls=open_calls),
        ],
        options=[("grpc.max_receive_message_length", settings.max_message_bytes)],
    )
    requests = Requests(on_replay=metrics.count_replay)
    # Ends freezes at their until and feeds keel_deploy_frozen (at once after this replica's
    # own changes: the Freeze/Unfreeze calls and the webhook).
    freeze_watch = FreezeWatch(
        pool,
        interval_s=settings.freeze_poll_s,
        on_freezes=lambda fs: metrics.freeze.set_freezes([(f.source, f.since) for f in fs]),
    )
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(
        FleetApi(
            store,
            status=status,
            logs=logs,
            log_wait_s=settings.log_wait_s,
            logs_elsewhere=logs_elsewhere,
            cache=cache,
            watch=watch,
            watch_poll_s=settings.watch_poll_s,
            drain_blocked_after_s=settings.drain_blocked_after_s,
            secrets=secret_box,
            tokens=tokens,
            requests=requests,
            gone_after_s=settings.gone_after_s,
            on_freeze_changed=freeze_watch.changed,
        ),
        server,
    )
    agent_sync = AgentSync(
        store,
        registry=registry,
        reports=reports,
        heartbeats=heartbeats,
        logs=logs,
        resync_period_s=settings.resync_period_s,
        hello_timeout_s=settings.hello_timeout_s,
        secrets=secret_box,
        tokens=tokens,
        on_denied=metrics.count_auth_denied,
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(agent_sync, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (FLEET_SERVICE, AGENT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = (
        server.add_insecure_port(settings.listen)
        if port_credentials is None
        else server.add_secure_port(settings.listen, port_credentials)
    )
    if port == 0:
        raise KeelError(f"cannot listen on {settings.listen}: the address is taken or invalid")
    host = settings.listen.rsplit(":", 1)[0]
    address = f"{host}:{port}"
    # Beside /metrics: the Alertmanager webhook that freezes deploys (controlplane.alert_hook).
    hook = alert_hook.AlertHook(
        db=pool,
        tokens=tokens,
        metrics=metrics.freeze,
        on_denied=metrics.count_auth_denied,
        loop=asyncio.get_running_loop(),
        timeout_s=settings.hook_timeout_s,
        on_changed=freeze_watch.changed,
    )
    metrics_server = serve_metrics(
        metrics,
        metrics_address,
        routes={alert_hook.PATH: hook},
        read_timeout_s=settings.hook_timeout_s,
    )
    await server.start()
    for name in ("", AGENT_SERVICE, FLEET_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    tasks = [
        asyncio.create_task(listener.run(), name="listener"),
        asyncio.create_task(reports.run(), name="report-writer"),
        asyncio.create_task(heartbeats.run(), name="heartbeat-writer"),
        asyncio.create_task(agent_sync.check_streams(), name="stream-check"),
        asyncio.create_task(open_calls.watch(), name="revocation-watch"),
        asyncio.create_task(leadership.run(), name="leadership"),
        asyncio.create_task(
            _probe_database(
                store,
                health_servicer,
                settings=settings,
                metrics=metrics,
                on_recovered=registry.wake_all,
            ),
            name="db-probe",
        ),
        asyncio.create_task(
            looplag.watch(
                interval_s=settings.loop_probe_interval_s, observe=metrics.observe_loop_lag
            ),
            name="loop-lag",
        ),
        asyncio.create_task(
            prune_forever(
                pool,
                retention_s=settings.request_retention_s,
                interval_s=settings.request_prune_interval_s,
                on_pruned=metrics.count_pruned_requests,
            ),
            name="request-prune",
        ),
        asyncio.create_task(freeze_watch.run(), name="freeze-watch"),
    ]
    addresses = {"grpc": address}
    if metrics_server is not None:
        addresses["metrics"] = metrics_server.address
    # Written whole (not merged): a key from an earlier run, say metrics now off, must go.
    write_addresses(settings.state_dir / "addresses.json", addresses, merge=False)
    log.info("serving", **addresses, state_dir=str(settings.state_dir))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = asyncio.create_task(stop.wait(), name="stop-signal")
    done, _ = await asyncio.wait([supervisor, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not supervisor]
    for t in failed:
        # A supervised task must never end on its own: stop the process, loudly.
        log.error(
            "background task ended unexpectedly",
            task=t.get_name(),
            error=repr(t.exception()) if not t.cancelled() else "cancelled",
        )

    log.info("stopping", grace_s=settings.shutdown_grace_s)
    for name in ("", AGENT_SERVICE, FLEET_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    registry.stop()  # agent streams end now; unary calls get the grace
    logs_elsewhere.stop()
    await server.stop(settings.shutdown_grace_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.shutdown_grace_s):
            await requests.drain()  # writes whose callers went away: to their end
    if not await reports.flush(settings.shutdown_grace_s):
        log.warning("stopped with reports unwritten; agents resend them on reconnect")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    supervisor.cancel()
    for r in runners:
        r.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(settings.shutdown_grace_s):
            await pool.close()
    if metrics_server is not None:
        # shutdown() waits for the server thread's poll loop: not on the event loop.
        await asyncio.to_thread(metrics_server.close)
    log.info("stopped")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    gc.set_threshold(GC_YOUNG_THRESHOLD)  # the older generations keep their ratios
    logs.configure(args.log_format, component="controlplane")
    try:
        if args.command == "migrate":
            code = uvloop.run(run_migrate(args))
        elif args.command == "reseal-secrets":
            code = uvloop.run(reseal.run(args))
        elif args.command == "reset-token":
            code = uvloop.run(run_reset_token(args))
        else:
            tracing.configure_tracing(
                "keel-controlplane",
                trace_file=args.trace_file,
                trace_file_max_bytes=args.trace_file_max_mib * 1024 * 1024,
            )
            code = uvloop.run(serve(settings_from(args), metrics_address=args.metrics))
    except KeelError as exc:
        log.error(str(exc))
        print(f"keel-controlplane: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        tracing.shutdown_tracing()
    sys.exit(code)


if __name__ == "__main__":
    main()
