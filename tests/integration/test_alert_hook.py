"""The Alertmanager webhook served beside /metrics, on a real Postgres: only the webhook token
gets in (401 without detail otherwise, counted); a firing freeze alert freezes deploys, a
re-send changes nothing, its resolve lifts it; bad bodies get 400/405/411/413 naming why; and
/metrics still answers."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane import freeze
from controlplane.alert_hook import MAX_BODY, PATH, AlertHook
from controlplane.metrics import Metrics, serve_metrics
from controlplane.store import Store
from controlplane.tokens import TokenStore


@dataclass
class Hook:
    address: str
    metrics: Metrics
    webhook_token: str
    admin_token: str
    changed: list[str]

    async def post(
        self,
        body: bytes,
        *,
        token: str | None = None,
        method: str = "POST",
        path: str = PATH,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """The request, sent from a thread (the server hands it to this event loop)."""

        def send() -> tuple[int, str]:
            host, port = self.address.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                sent = dict(headers or {})
                if token is not None:
                    sent["Authorization"] = f"Bearer {token}"
                conn.request(method, path, body=body if method == "POST" else None, headers=sent)
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            finally:
                conn.close()

        return await asyncio.to_thread(send)

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def hook(store: Store, tmp_path: Path) -> AsyncIterator[Hook]:
    tokens = TokenStore(store.pool, cache_s=5.0)
    await tokens.bootstrap(tmp_path)
    metrics = Metrics()
    changed: list[str] = []
    app = AlertHook(
        db=store.pool,
        tokens=tokens,
        metrics=metrics.freeze,
        on_denied=metrics.count_auth_denied,
        loop=asyncio.get_running_loop(),
        timeout_s=10.0,
        on_changed=lambda: changed.append("changed"),
    )
    server = serve_metrics(metrics, "127.0.0.1:0", routes={PATH: app}, read_timeout_s=5.0)
    assert server is not None
    try:
        yield Hook(
            server.address,
            metrics,
            (tmp_path / "hooks.token").read_text().strip(),
            (tmp_path / "admin.token").read_text().strip(),
            changed,
        )
    finally:
        await asyncio.to_thread(server.close)


def _payload(status: str, *, fingerprint: str = "c0ffee00") -> bytes:
    alert = {
        "status": status,
        "labels": {"alertname": "KeelBurn", "severity": "page", "keel_action": "freeze"},
        "annotations": {"summary": "budget burning"},
        "startsAt": "2026-12-02T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }
    return json.dumps({"version": "4", "status": status, "alerts": [alert]}).encode()


async def test_only_the_webhook_token_gets_in_and_refusals_say_nothing(
    hook: Hook, store: Store
) -> None:
    """No token, another role's token, a wrong secret: 401 `unauthorized`, nothing written,
    each counted by reason; the token appears in no answer."""
    cases = [
        (None, "missing"),
        (hook.admin_token, "role"),
        (hook.webhook_token[:-2] + "zz", "unknown"),
        ("", "malformed"),
    ]
    for token, reason in cases:
        before = hook.sample("keel_auth_denied_total", reason=reason)
        status, text = await hook.post(_payload("firing"), token=token)
        assert (status, text) == (401, "unauthorized\n")
        assert hook.sample("keel_auth_denied_total", reason=reason) == before + 1
    assert await freeze.status(store.pool) == []
    assert hook.sample("keel_alert_webhook_requests_total", result="denied") == len(cases)


async def test_a_caller_without_the_token_gets_401_before_its_body_is_read(hook: Hook) -> None:
    """The headers promise a 1 MiB body and none is sent: a missing or wrong token is answered
    at once (the read timeout is 5 s), not after the server waited for the body."""

    def send(authorization: str) -> tuple[bytes, float]:
        host, port = hook.address.rsplit(":", 1)
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                f"POST {PATH} HTTP/1.1\r\nHost: keel\r\nContent-Length: {MAX_BODY}\r\n"
                f"{authorization}\r\n".encode()
            )
            first = conn.recv(64)
        return first, time.monotonic() - started

    for authorization in ("", "Authorization: Bearer wrong.token\r\n"):
        first, took = await asyncio.to_thread(send, authorization)
        assert first.split(b" ")[1] == b"401" and took < 2.5, (first, took)
    assert hook.sample("keel_alert_webhook_requests_total", result="denied") == 2


async def test_a_firing_alert_freezes_a_resend_changes_nothing_its_resolve_lifts(
    hook: Hook, store: Store
) -> None:
    status, text = await hook.post(_payload("firing"), token=hook.webhook_token)
    assert status == 200
    assert json.loads(text) == {"set": 1, "lifted": 0, "ignored": 0, "frozen": True}
    [held] = await freeze.status(store.pool)
    assert (held.source, held.fingerprint, held.actor) == ("alert:KeelBurn", "c0ffee00", "webhook")
    assert held.reason == "KeelBurn: budget burning"
    assert hook.changed == ["changed"]  # this replica's keel_deploy_frozen follows at once
    status, text = await hook.post(_payload("firing"), token=hook.webhook_token)
    assert json.loads(text)["set"] == 0 and hook.changed == ["changed"]
    status, text = await hook.post(_payload("resolved"), token=hook.webhook_token)
    assert json.loads(text) == {"set": 0, "lifted": 1, "ignored": 0, "frozen": False}
    assert hook.changed == ["changed", "changed"]
    assert await freeze.status(store.pool) == []
    assert hook.sample("keel_alert_webhook_requests_total", result="ok") == 3


async def test_bad_requests_are_named_and_change_nothing(hook: Hook, store: Store) -> None:
    token = hook.webhook_token
    status, text = await hook.post(b"{oops", token=token)
    assert status == 400 and text.startswith("the body is not JSON (")
    status, text = await hook.post(b"[" * 100_000, token=token)
    assert (status, text) == (
        400,
        "the body is JSON nested too deeply to be an Alertmanager webhook payload\n",
    )
    status, text = await hook.post(b"\xff{}", token=token)
    assert status == 400 and text.startswith("the body is not UTF-8")
    status, text = await hook.post(b'{"version": "2", "alerts": []}', token=token)
    assert status == 400 and text.startswith('version: expected "4"')
    status, text = await hook.post(b"", token=token, method="GET")
    assert status == 405 and "takes POST" in text
    status, text = await hook.post(
        b"{}", token=token, headers={"Content-Length": str(MAX_BODY + 1)}
    )
    assert status == 413 and f"at most {MAX_BODY} bytes" in text
    assert await freeze.status(store.pool) == []
    assert "Traceback" not in text


async def test_metrics_are_still_served_beside_the_hook(hook: Hook) -> None:
    status, text = await hook.post(b"", method="GET", path="/metrics")
    assert status == 200
    assert "keel_deploy_frozen 0.0" in text
    assert 'keel_alert_webhook_requests_total{result="ok"}' in text
