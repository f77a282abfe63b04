"""The deploy-freeze metrics: whether deploys are frozen, since when, by what; and the webhook.

Registered on the control plane's registry by `metrics.Metrics` (its `freeze` attribute); fed
by `freeze_watch.FreezeWatch` on every replica (`set_freezes`, from the database, so every
replica exports the same) and by the Alertmanager webhook (`alert_hook`: `count_hook` per
delivery). No label names an alert or an actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

OPERATOR, ALERT = "operator", "alert"
# What became of a webhook delivery, as `keel_alert_webhook_requests_total{result}` names it.
HOOK_RESULTS = ("ok", "denied", "bad_request", "too_large", "unavailable")


class FreezeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.frozen = Gauge(
            "keel_deploy_frozen",
            "1 while deploys are frozen (spec changes refused: keelctl freeze --status), else 0.",
            registry=registry,
        )
        self.since = Gauge(
            "keel_deploy_frozen_since_seconds",
            "When the oldest freeze that holds began (Unix time); 0 when not frozen.",
            registry=registry,
        )
        self.freezes = Gauge(
            "keel_deploy_freezes",
            "Freezes that hold, by source: operator (keelctl freeze) or alert (a firing alert "
            "with keel_action=freeze, from the Alertmanager webhook).",
            ["source"],
            registry=registry,
        )
        for source in (OPERATOR, ALERT):
            self.freezes.labels(source)
        self.hook = Counter(
            "keel_alert_webhook_requests_total",
            "Deliveries to the Alertmanager webhook (/hooks/alertmanager on the metrics port), "
            "by result: ok, denied (no or a wrong token: 401), bad_request (400, 405, 411), "
            "too_large (413), unavailable (the database: 503, Alertmanager retries).",
            ["result"],
            registry=registry,
        )
        for result in HOOK_RESULTS:
            self.hook.labels(result)

    def set_freezes(self, freezes: Sequence[tuple[str, datetime]]) -> None:
        """(source, since) of every freeze that holds."""
        self.frozen.set(1 if freezes else 0)
        self.since.set(min(since.timestamp() for _, since in freezes) if freezes else 0)
        operator = sum(1 for source, _ in freezes if source == OPERATOR)
        self.freezes.labels(OPERATOR).set(operator)
        self.freezes.labels(ALERT).set(len(freezes) - operator)

    def count_hook(self, result: str) -> None:
        self.hook.labels(result).inc()
