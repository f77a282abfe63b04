"""keel_deploy_frozen and its companions, from the freezes that hold."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from controlplane.freeze_metrics import FreezeMetrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_frozen_since_is_the_oldest_freeze_and_sources_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = FreezeMetrics(registry)
    assert _value(registry, "keel_deploy_frozen") == 0
    older = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    newer = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    metrics.set_freezes([("alert:KeelBurn", newer), ("operator", older), ("alert:Other", newer)])
    assert _value(registry, "keel_deploy_frozen") == 1
    assert _value(registry, "keel_deploy_frozen_since_seconds") == older.timestamp()
    assert _value(registry, "keel_deploy_freezes", source="operator") == 1
    assert _value(registry, "keel_deploy_freezes", source="alert") == 2
    metrics.set_freezes([])
    assert _value(registry, "keel_deploy_frozen") == 0
    assert _value(registry, "keel_deploy_frozen_since_seconds") == 0
    assert _value(registry, "keel_deploy_freezes", source="alert") == 0


def test_every_webhook_result_is_exported_from_the_start() -> None:
    registry = CollectorRegistry()
    FreezeMetrics(registry)
    for result in ("ok", "denied", "bad_request", "too_large", "unavailable"):
        assert _value(registry, "keel_alert_webhook_requests_total", result=result) == 0
