"""The Alertmanager webhook's payload: which alerts freeze, which lift, and every refusal
naming the field (tables over `alert_hook.parse`, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.alert_hook import BadPayload, bearer, parse
from controlplane.freeze import AlertFreeze
from keel.fields import check_text


def _alert(
    status: str = "firing",
    *,
    name: str = "KeelConvergenceBudgetBurnFast",
    fingerprint: str = "3f1a9c0d2b4e5f67",
    action: str | None = "freeze",
    **extra: Any,
) -> dict[str, Any]:
    labels = {"alertname": name, "severity": "page"}
    if action is not None:
        labels["keel_action"] = action
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "the convergence error budget burns fast"},
        "startsAt": "2026-12-02T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
        **extra,
    }


def _payload(*alerts: dict[str, Any], version: object = "4") -> bytes:
    return json.dumps(
        {
            "version": version,
            "groupKey": "{}:{}",
            "status": "firing",
            "receiver": "keel-freeze",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "truncatedAlerts": 0,
            "alerts": list(alerts),
        }
    ).encode()


def test_a_firing_freeze_alert_freezes_with_its_summary_as_reason() -> None:
    delivery = parse(_payload(_alert()))
    assert delivery.firing == [
        AlertFreeze(
            "KeelConvergenceBudgetBurnFast",
            "3f1a9c0d2b4e5f67",
            "KeelConvergenceBudgetBurnFast: the convergence error budget burns fast",
        )
    ]
    assert (delivery.resolved, delivery.ignored) == ([], 0)


def test_a_resolved_freeze_alert_lifts_by_name_and_fingerprint() -> None:
    delivery = parse(_payload(_alert("resolved", fingerprint="ab12")))
    assert delivery.firing == []
    assert delivery.resolved == [("KeelConvergenceBudgetBurnFast", "ab12")]


def test_alerts_without_the_freeze_action_are_ignored_and_counted() -> None:
    delivery = parse(_payload(_alert(action=None), _alert(action="page"), _alert(fingerprint="f")))
    assert delivery.ignored == 2
    assert [a.fingerprint for a in delivery.firing] == ["f"]


def test_without_annotations_the_reason_names_the_labels() -> None:
    alert = _alert()
    del alert["annotations"]
    [firing] = parse(_payload(alert)).firing
    assert firing.reason == "KeelConvergenceBudgetBurnFast firing (severity=page)"


def test_a_long_multiline_summary_becomes_one_bounded_line() -> None:
    alert = _alert()
    alert["annotations"] = {"summary": "line one\nline two\t" + "x" * 5000}
    [firing] = parse(_payload(alert)).firing
    assert "\n" not in firing.reason and "\t" not in firing.reason
    assert len(firing.reason) == 1024 and firing.reason.endswith("...")


def test_control_characters_in_a_summary_never_reach_the_reason() -> None:
    """Escape sequences, bells, C1 controls, line separators and bidi overrides are replaced:
    the reason is what `check_text(single_line=True)` would accept from an operator."""
    alert = _alert()
    alert["annotations"] = {"summary": "\x1b[2J\x1b[31mFAKE\x07 \u202eevil\u2028\x85x\ud800\x00"}
    [firing] = parse(_payload(alert)).firing
    assert firing.reason == "KeelConvergenceBudgetBurnFast: [2J [31mFAKE evil x\ufffd"
    check_text(firing.reason, "reason", limit=1024, single_line=True)


def test_without_a_summary_the_reason_names_only_the_chosen_labels() -> None:
    """Any other label may hold a secret: only alertname, severity, instance and job."""
    alert = _alert(annotations={"description": " "})
    alert["labels"] |= {"password": "hunter2", "job": "keel\x1b[0m", "instance": "cp-1:9100"}
    [firing] = parse(_payload(alert)).firing
    assert firing.reason == (
        "KeelConvergenceBudgetBurnFast firing (severity=page,instance=cp-1:9100,job=keel [0m)"
    )
    assert "hunter2" not in firing.reason


def test_the_same_alert_twice_is_one_and_resolved_wins() -> None:
    delivery = parse(_payload(_alert(), _alert(), _alert("resolved")))
    assert delivery.firing == []
    assert delivery.resolved == [("KeelConvergenceBudgetBurnFast", "3f1a9c0d2b4e5f67")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", r"^the body is not JSON \("),
        (b"\xff\xfe", r"^the body is not UTF-8"),
        (b'{"version": "4", "alerts": ["\xc3\x28"]}', r"^the body is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, r"^the body is JSON nested too deeply"),
        (b'{"version": ' + b"9" * 5000 + b"}", r"^the body holds a number of more than 4300"),
        (b'{"version": "4", "alerts": ' + b"[" * 100_000, r"^the body is JSON nested too deeply"),
        (b"[]", r"^the body must be a JSON object"),
        (_payload(_alert(), version="3"), r'^version: expected "4"'),
        (_payload(_alert(), version=None), r'^version: expected "4" .*got nothing'),
        (json.dumps({"version": "4"}).encode(), r"^alerts: must be an array, got nothing"),
        (_payload("x"), r"^alerts\[0\]: must be an object"),  # type: ignore[arg-type]
        (
            _payload({"status": "firing", "labels": []}),
            r"^alerts\[0\]\.labels: must be an object, got \[\]$",
        ),
        (
            _payload(_alert(labels={"alertname": "A", "x": {"nested": [1, 2]}})),
            r'^alerts\[0\]\.labels\.x: must be a string, got \{"nested": \[1, 2\]\}$',
        ),
        (
            _payload(_alert(annotations={"summary": 3})),
            r"^alerts\[0\]\.annotations\.summary: must be a string, got 3$",
        ),
        (
            _payload(_alert(annotations="text")),
            r'^alerts\[0\]\.annotations: must be an object, got "text"$',
        ),
        (_payload(_alert(name="bad name!")), r"^alerts\[0\]\.labels\.alertname: must be"),
        (_payload(_alert(fingerprint="")), r"^alerts\[0\]\.fingerprint: must be"),
        (_payload(_alert(fingerprint="../x")), r"^alerts\[0\]\.fingerprint: must be"),
        (_payload(_alert(), _alert("pending")), r'^alerts\[1\]\.status: must be "firing"'),
    ],
)
def test_a_body_that_is_not_a_v4_payload_is_refused_naming_the_field(
    body: bytes, message: str
) -> None:
    with pytest.raises(BadPayload, match=message):
        parse(body)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("Bearer abc.def", "abc.def"),
        ("bearer  abc.def ", "abc.def"),
        ("Basic dXNlcjpwYXNz", ""),
        ("abc.def", ""),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer(header) == token
