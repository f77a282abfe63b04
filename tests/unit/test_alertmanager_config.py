"""The shipped Alertmanager configuration (deploy/alertmanager/alertmanager.yml) is valid and
routes exactly the alerts that carry `keel_action: freeze` (the page-level convergence
burn-rate alerts) to Keel's webhook, and every alert still to a person.

Runs amtool (`check-config`, `config routes test`); `make test` installs it where it can
(deploy/alertmanager/ensure-alertmanager). Without it these tests skip, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.rules.yml"
WEBHOOK = "keel-freeze"


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for group in doc["groups"] for r in group["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.skip(
            "amtool is not on PATH, so deploy/alertmanager/alertmanager.yml is not checked: "
            "run deploy/alertmanager/ensure-alertmanager (make test does), or apt-get install "
            "--no-install-recommends prometheus-alertmanager"
        )
    return path


def run_amtool(amtool: str, *args: str) -> str:
    argv = [amtool, *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (
        f"{' '.join(argv[1:])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def receivers_of(amtool: str, labels: dict[str, str]) -> set[str]:
    words = [f"{k}={v}" for k, v in sorted(labels.items())]
    out = run_amtool(amtool, "config", "routes", "test", f"--config.file={CONFIG}", *words)
    return set(out.strip().split(","))


def test_amtool_accepts_the_config(amtool: str) -> None:
    run_amtool(amtool, "check-config", str(CONFIG))


def test_the_page_level_burn_rate_alerts_carry_the_freeze_action() -> None:
    """docs/slos.md's budget policy: the 14.4x and 6x burn-rate pages freeze deploys; the 1x
    ticket and every other alert do not."""
    freezing = {
        (r["alert"], r["labels"].get("burn_rate"))
        for r in alert_rules()
        if r["labels"].get("keel_action") == "freeze"
    }
    assert freezing == {
        ("KeelConvergenceErrorBudgetBurn", "14.4"),
        ("KeelConvergenceErrorBudgetBurn", "6"),
    }


@pytest.mark.parametrize(
    "rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels'].get('burn_rate', '')}"
)
def test_each_alert_reaches_the_webhook_only_with_the_freeze_action(
    amtool: str, rule: dict[str, Any]
) -> None:
    """Routed with its own labels: to keel-freeze exactly when it carries keel_action=freeze,
    and always to the pager or the ticket queue by its severity."""
    labels = {k: str(v) for k, v in rule["labels"].items()} | {"alertname": rule["alert"]}
    receivers = receivers_of(amtool, labels)
    assert (WEBHOOK in receivers) == (labels.get("keel_action") == "freeze")
    person = "pager" if labels["severity"] == "page" else "tickets"
    assert person in receivers


def test_the_webhook_receiver_sends_resolves_with_a_bearer_token() -> None:
    """The resolve lifts the freeze, so it must be sent; the token authenticates the hook."""
    doc = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (receiver,) = [r for r in doc["receivers"] if r["name"] == WEBHOOK]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"].endswith("/hooks/alertmanager")
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer" and auth["credentials_file"].endswith(".token")
