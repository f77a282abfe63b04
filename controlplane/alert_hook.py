"""The Alertmanager webhook receiver: `POST /hooks/alertmanager` on the metrics port.

An alert routed here with the label `keel_action=freeze` freezes deploys while it fires and
lifts its freeze when it resolves (`freeze.alerts_changed`: one row per alert, keyed by its
fingerprint; Alertmanager's re-sends change nothing). Other alerts are ignored. The receiver
needs no leadership: it is one database write, on whichever replica Alertmanager reaches.

Authentication: `Authorization: Bearer TOKEN` (Alertmanager's `http_config.authorization`)
with a token of role `webhook` (`controlplane.tokens`: written 0600 to `<state-dir>/
hooks.token` on first start; the role may call no RPC). It is checked like every token (hash
compared in constant time); a refusal is 401 with no detail, counted in
`keel_auth_denied_total{reason}` and logged without the token.

The body is Alertmanager's webhook payload, version 4, at most `MAX_BODY` bytes. A body that
is not such a payload (not UTF-8, not JSON, nested too deeply, a label or annotation that is
not a string) is 400 with a message naming the field; the database away (or slower than the
timeout) is 503, which Alertmanager retries; nothing answers 500 or shows a stack. The
freeze's reason is the alert's summary (or description), else its name and a few chosen
labels (`REASON_LABELS`, never the others: a label may hold a secret), made one bounded line
without control characters by `keel.fields.one_line`, the rule an operator's reason obeys.

The HTTP server runs on its own threads (`keel.endpoint`: scrapes never wait for the event
loop); a delivery is handed to the event loop (`asyncio.run_coroutine_threadsafe`), which owns
the pool. Neighbours: `freeze` (the rows), `freeze_metrics`, `main` (serves it).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from controlplane import freeze
from controlplane.errors import Unavailable
from controlplane.freeze_metrics import FreezeMetrics
from controlplane.sql import Database
from controlplane.tokens import WEBHOOK, Caller, TokenStore
from keel import fields

log = structlog.get_logger("keel.alert_hook")

PATH = "/hooks/alertmanager"
# A notification of a few thousand alerts fits; anything larger is not one.
MAX_BODY = 1024 * 1024
# Only alerts carrying this label and value freeze deploys.
ACTION_LABEL, ACTION_FREEZE = "keel_action", "freeze"
# Alertmanager's fingerprints are hex (an alert's name: `freeze.ALERTNAME`).
_FINGERPRINT = re.compile(r"[0-9a-zA-Z]{1,64}")
# The freeze's reason: one line, as long as an operator's reason may be.
MAX_REASON = 1024
# The labels an alert's reason names when it has no summary or description (besides its
# alertname): chosen, since any other label may hold anything.
REASON_LABELS = ("severity", "instance", "job")


class BadPayload(ValueError):
    """The body is not an Alertmanager webhook payload (version 4); the message names why."""


@dataclass(frozen=True)
class Delivery:
    """What one notification asks: freezes for its firing alerts, lifts for its resolved ones."""

    firing: list[freeze.AlertFreeze]
    resolved: list[tuple[str, str]]  # (alertname, fingerprint)
    ignored: int  # alerts without keel_action=freeze


# The words a message uses for a JSON value's kind (never a Python type's name).
_KINDS: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise BadPayload(f"{where}{key}: must be {_KINDS[kind]}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    return fields.one_line(json.dumps(value), 60)


def _strings(obj: dict[str, Any], where: str) -> dict[str, str]:
    """A labels or annotations object, every value a string (Alertmanager sends no other)."""
    for key, value in obj.items():
        if not isinstance(value, str):
            raise BadPayload(
                f"{where}.{fields.one_line(key, 60)}: must be a string, got {_shown(value)}"
            )
    return obj


def parse(body: bytes) -> Delivery:
    """The freezes a webhook payload sets and lifts; BadPayload naming the field otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("the body is not UTF-8 (Alertmanager sends JSON in UTF-8)") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BadPayload(
            "the body is JSON nested too deeply to be an Alertmanager webhook payload"
        ) from None
    except json.JSONDecodeError as exc:
        raise BadPayload(f"the body is not JSON ({exc})") from None
    except ValueError:  # Python's limit on a number's digits (its message names a function)
        raise BadPayload("the body holds a number of more than 4300 digits") from None
    try:
        return _delivery(doc)
    except RecursionError:  # a value nested too deeply to be shown in a message
        raise BadPayload(
            "the body is JSON nested too deeply to be an Alertmanager webhook payload"
        ) from None


def _delivery(doc: Any) -> Delivery:
    if not isinstance(doc, dict):
        raise BadPayload("the body must be a JSON object (Alertmanager's webhook payload)")
    if doc.get("version") != "4":
        raise BadPayload(
            f'version: expected "4" (Alertmanager webhook payload version 4), got '
            f"{_shown(doc.get('version'))}"
        )
    alerts = _field(doc, "alerts", list, "")
    firing: dict[tuple[str, str], freeze.AlertFreeze] = {}
    resolved: dict[tuple[str, str], None] = {}
    ignored = 0
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]."
        if not isinstance(alert, dict):
            raise BadPayload(f"alerts[{i}]: must be an object, got {_shown(alert)}")
        labels = _strings(_field(alert, "labels", dict, where), f"{where}labels")
        annotations = alert.get("annotations")
        if annotations is not None:
            annotations = _strings(_field(alert, "annotations", dict, where), f"{where}annotations")
        if labels.get(ACTION_LABEL) != ACTION_FREEZE:
            ignored += 1
            continue
        name = labels.get("alertname")
        if not isinstance(name, str) or not freeze.ALERTNAME.fullmatch(name):
            raise BadPayload(
                f"{where}labels.alertname: must be an alert name ([a-zA-Z_:][a-zA-Z0-9_:]*, at "
                f"most 200 characters), got {_shown(name)}"
            )
        fingerprint = alert.get("fingerprint")
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise BadPayload(
                f"{where}fingerprint: must be Alertmanager's fingerprint (1-64 letters and "
                f"digits), got {_shown(fingerprint)}"
            )
        status = alert.get("status")
        key = (name, fingerprint)
        if status == "firing":
            firing[key] = freeze.AlertFreeze(name, fingerprint, reason(name, labels, annotations))
        elif status == "resolved":
            resolved[key] = None
        else:
            raise BadPayload(f'{where}status: must be "firing" or "resolved", got {_shown(status)}')
    # An alert both firing and resolved in one notification: resolved wins (its latest word).
    return Delivery(
        firing=[a for k, a in firing.items() if k not in resolved],
        resolved=list(resolved),
        ignored=ignored,
    )


def reason(name: str, labels: dict[str, str], annotations: dict[str, str] | None) -> str:
    """The freeze's reason, as stored and shown: the alert's summary (or description), else
    its name and `REASON_LABELS`, never its other labels (a label may hold anything, a secret
    too); made one bounded line without control characters (`keel.fields.one_line`)."""
    for key in ("summary", "description"):
        text = (annotations or {}).get(key, "")
        if text.strip():
            return fields.one_line(f"{name}: {text}", MAX_REASON)
    shown = ",".join(f"{k}={labels[k]}" for k in REASON_LABELS if labels.get(k, "").strip())
    return fields.one_line(f"{name} firing" + (f" ({shown})" if shown else ""), MAX_REASON)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    result: str  # the metric's label

    def headers(self) -> list[tuple[str, str]]:
        extra = [("WWW-Authenticate", 'Bearer realm="keel"')] if self.status == 401 else []
        return [("Content-Type", "text/plain; charset=utf-8"), *extra]


_STATUS_TEXT = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    405: "405 Method Not Allowed",
    411: "411 Length Required",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}
_DENIED = Answer(401, "unauthorized\n", "denied")


def bearer(header: str | None) -> str | None:
    """The token of `Bearer TOKEN`; None without the header, "" when it is not that form."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AlertHook:
    """The WSGI application for `PATH`; see the module docstring.

    `loop` is the event loop that owns `db` and `tokens`; `timeout_s` bounds how long a
    delivery may wait for it (then 503, and Alertmanager sends it again); `on_changed` is
    called (on the loop) after a delivery set or lifted a freeze."""

    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenStore,
        metrics: FreezeMetrics,
        on_denied: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
        timeout_s: float,
        on_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._on_changed = on_changed
        self._tokens = tokens
        self._metrics = metrics
        self._on_denied = on_denied
        self._loop = loop
        self._timeout_s = timeout_s

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        answer = self._answer(environ)
        self._metrics.count_hook(answer.result)
        start_response(_STATUS_TEXT[answer.status], answer.headers())
        return [answer.body.encode()]

    def _answer(self, environ: dict[str, Any]) -> Answer:
        """Runs on a server thread: checks the token, then reads the body (a caller without
        the token gets its 401 before a byte of it is read), and hands it to the event loop."""
        if environ.get("REQUEST_METHOD") != "POST":
            return Answer(405, f"{PATH} takes POST (Alertmanager's webhook)\n", "bad_request")
        peer = str(environ.get("REMOTE_ADDR", ""))
        who = self._on_loop(self._check(environ.get("HTTP_AUTHORIZATION"), peer=peer), peer=peer)
        if isinstance(who, Answer):
            return who
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return Answer(411, "a Content-Length is required\n", "bad_request")
        if length < 0 or length > MAX_BODY:
            return Answer(413, f"the body must be at most {MAX_BODY} bytes\n", "too_large")
        try:
            body = environ["wsgi.input"].read(length)
        except OSError:  # the client went away or stalled past the read timeout
            return Answer(400, "the body could not be read in full\n", "bad_request")
        answer = self._on_loop(self.handle(who, body, peer=peer), peer=peer)
        assert isinstance(answer, Answer)
        return answer

    def _on_loop(self, work: Coroutine[Any, Any, Answer | Caller], *, peer: str) -> Answer | Caller:
        """`work` run on the event loop, waited for up to the timeout (then 503)."""
        try:
            future = asyncio.run_coroutine_threadsafe(work, self._loop)
        except RuntimeError:  # the loop has stopped: the control plane is stopping
            work.close()
            return Answer(503, "the control plane is stopping; try again\n", "unavailable")
        try:
            return future.result(timeout=self._timeout_s)
        except TimeoutError:
            future.cancel()
            return Answer(503, "the control plane did not finish in time; try again\n",
                          "unavailable")  # fmt: skip
        except Exception as exc:  # never a 500 with a stack; the log has what happened
            log.error("webhook delivery failed", error=repr(exc), peer=peer)
            return Answer(503, "the control plane could not take this delivery; try again\n",
                          "unavailable")  # fmt: skip

    async def _check(self, authorization: str | None, *, peer: str) -> Answer | Caller:
        """The caller, if its token is the webhook's; else the 401 (or 503) to answer."""
        try:
            who = await self._caller(authorization, peer=peer)
        except Unavailable:
            return Answer(503, "the database is unavailable; try again\n", "unavailable")
        return _DENIED if who is None else who

    async def handle(self, who: Caller, body: bytes, *, peer: str = "") -> Answer:
        """Reads the payload and writes its freezes (on the event loop), for `who`."""
        try:
            delivery = parse(body)
        except BadPayload as exc:
            log.warning("webhook payload refused", error=str(exc), peer=peer, caller=who.name)
            return Answer(400, f"{exc}\n", "bad_request")
        try:
            outcome = await freeze.alerts_changed(
                self._db, firing=delivery.firing, resolved=delivery.resolved, actor=who.name
            )
        except Unavailable:
            return Answer(503, "the database is unavailable; try again\n", "unavailable")
        if outcome.set or outcome.lifted:
            self._on_changed()
        log.info("webhook delivery", peer=peer, caller=who.name, set=outcome.set,
                 lifted=outcome.lifted, ignored=delivery.ignored)  # fmt: skip
        reply = {
            "set": outcome.set,
            "lifted": outcome.lifted,
            "ignored": delivery.ignored,
            "frozen": bool(outcome.freezes),
        }
        return Answer(200, json.dumps(reply) + "\n", "ok")

    async def _caller(self, authorization: str | None, *, peer: str) -> Caller | None:
        token = bearer(authorization)
        if token is None:
            reason = "missing"
        elif not token:
            reason = "malformed"
        else:
            verdict = await self._tokens.verify(token)
            if isinstance(verdict, Caller) and verdict.role == WEBHOOK:
                return verdict
            reason = verdict.reason if not isinstance(verdict, Caller) else "role"
        self._on_denied(reason)
        log.warning("webhook call refused", reason=reason, peer=peer)
        return None
