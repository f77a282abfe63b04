"""End-to-end: a real Alertmanager freezes and unfreezes deploys through the control plane's
webhook.

Alertmanager (Debian's prometheus-alertmanager; `make test` installs it where it can, see
deploy/alertmanager/ensure-alertmanager) runs on loopback ports with a route like the shipped
one: alerts with `keel_action=freeze` go to `/hooks/alertmanager` on the control plane's
metrics port, with the `webhook` token from `<state-dir>/hooks.token`, and tiny group timings.
A firing alert posted to its API (`/api/v2/alerts`) freezes deploys (an apply of a new spec is
refused); the same alert posted resolved (endsAt in the past) lifts the freeze. Alertmanager is
stopped (its process group) however the test ends; the Fleet's teardown also kills anything
naming the test directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DatabaseFactory
from harness import Fleet, wait_for
from procs import Proc

pytestmark = pytest.mark.e2e

ALERTNAME = "KeelE2EBudgetBurn"


def _alertmanager_binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        found = shutil.which(name)
        if found is not None:
            return found
    pytest.skip(
        "Alertmanager is not installed, so the deploy-freeze webhook is not tested with a real "
        "one: run deploy/alertmanager/ensure-alertmanager (make test does) or apt-get install "
        "--no-install-recommends prometheus-alertmanager"
    )


def _free_port() -> int:
    """A port free now (Alertmanager cannot be given port 0 and say which it took)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(fleet: Fleet) -> dict[str, Any]:
    return {
        "global": {"resolve_timeout": "1m"},
        "route": {
            "receiver": "people",
            "group_by": ["..."],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {
                    "receiver": "keel-freeze",
                    "matchers": ['keel_action="freeze"'],
                    "group_by": ["..."],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                }
            ],
        },
        "receivers": [
            {"name": "people"},
            {
                "name": "keel-freeze",
                "webhook_configs": [
                    {
                        "url": f"http://{fleet.metrics_address()}/hooks/alertmanager",
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(fleet.cp_state / "hooks.token"),
                            }
                        },
                    }
                ],
            },
        ],
    }


@pytest.fixture
def fleet(tmp_path: Path, database_factory: DatabaseFactory) -> Iterator[Fleet]:
    """A control plane alone (the freeze needs no agent)."""
    with database_factory() as url, Fleet(tmp_path, database_url=url, agents=0) as f:
        yield f


@pytest.fixture
def alertmanager(fleet: Fleet) -> Iterator[str]:
    """A real Alertmanager on loopback sending to fleet's webhook; its API's base URL."""
    binary = _alertmanager_binary()
    root = fleet.root / "alertmanager"
    root.mkdir()
    config = root / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_config(fleet)))
    port = _free_port()
    proc = Proc(
        "alertmanager",
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: one Alertmanager
            "--log.level=debug",
        ],
        fleet.logs / "alertmanager.log",
        {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
    )
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if not proc.running():
                raise AssertionError(f"alertmanager exited:\n{proc.tail(30)}")
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_for(ready, timeout=30, interval=0.2, message="alertmanager ready")
        yield base
    finally:
        proc.signal_group(signal.SIGTERM)
        if not proc.wait(10):
            proc.signal_group(signal.SIGKILL)
            proc.wait(5)


def _post_alert(base: str, *, ends_at: datetime | None) -> None:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": ALERTNAME, "severity": "page", "keel_action": "freeze"},
        "annotations": {"summary": "the convergence error budget burns (e2e)"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    request = urllib.request.Request(
        f"{base}/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _status(fleet: Fleet) -> Any:
    return fleet.keelctl_json("freeze", "--status")


def test_a_firing_alert_freezes_deploys_and_its_resolve_lifts_the_freeze(
    fleet: Fleet, alertmanager: str
) -> None:
    fleet.apply_ok(fleet.manifest("web", replicas=1, env={"VERSION": "1"}))

    _post_alert(alertmanager, ends_at=None)
    frozen = wait_for(
        lambda: (s := _status(fleet))["frozen"] and s,
        timeout=60,
        interval=0.3,
        message="deploys frozen by the firing alert",
    )
    [held] = frozen["freezes"]
    assert (held["source"], held["actor"]) == (f"alert:{ALERTNAME}", "webhook")
    assert "the convergence error budget burns (e2e)" in held["reason"]
    refused = fleet.apply(fleet.manifest("web", replicas=1, env={"VERSION": "2"}))
    assert refused.returncode == 1 and f"alert:{ALERTNAME} freeze" in refused.stderr
    # An alert's freeze is not the operator's: unfreeze lifts nothing and says it still holds.
    still = fleet.keelctl_ok("unfreeze").stdout
    assert still.startswith("there was no operator's freeze to lift")
    assert "deploys are still frozen by:" in still and ALERTNAME in still

    _post_alert(alertmanager, ends_at=datetime.now(UTC) - timedelta(seconds=1))
    wait_for(
        lambda: _status(fleet)["frozen"] is False,
        timeout=60,
        interval=0.3,
        message="deploys unfrozen by the resolved alert",
    )
    fleet.apply_ok(fleet.manifest("web", replicas=1, env={"VERSION": "2"}))
    history = fleet.keelctl_json("events", "--for", "fleet/freeze")["events"]
    assert [(e["kind"], e["actor"]) for e in history] == [
        ("DeployFrozen", "webhook"),
        ("DeployUnfrozen", "webhook"),
    ]
    metrics = fleet.metrics()
    assert metrics['keel_alert_webhook_requests_total{result="ok"}'] >= 2
    assert metrics['keel_alert_webhook_requests_total{result="denied"}'] == 0
