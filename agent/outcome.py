"""The one place a reconcile pass's outcome goes: convergence, metrics, reports and its span.

`agent.reconciler` calls `Outcomes.pass_done` after every pass with every desired instance's
status (`agent.status`); it feeds the convergence tracker (`agent.convergence`, whose notion
of "matching" is `keel.model.converged`), the metrics (`agent.metrics`), sends the reports
that changed since the last ones to the sink (the sync client, `agent.sync`), and records a
pass that acted as a root span "agent.reconcile". It also keeps what was reported last, so a
reconnect's full report and a confirmed removal are not sent twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from agent.convergence import ConvergenceTracker
from agent.metrics import AgentMetrics, PassOutcome
from agent.status import InstanceReport
from keel import tracing
from keel.model import Desired, converged

_tracer = tracing.tracer("keel.agent")


class StatusSink(Protocol):
    """Where status reports go (the sync client); reports are dropped while disconnected."""

    @property
    def connected(self) -> bool: ...

    def report(self, reports: Sequence[InstanceReport]) -> None: ...


class Outbox:
    """Where the reconciler's reports go: the open stream, or nowhere while disconnected.

    Built first and handed to both sides: the reconciler reports into it, the sync client
    opens it with each stream (`open(send)`) and closes it when the stream ends. So neither
    needs the other to exist first.
    """

    def __init__(self) -> None:
        self._send: Callable[[Sequence[InstanceReport]], None] | None = None

    @property
    def connected(self) -> bool:
        return self._send is not None

    def open(self, send: Callable[[Sequence[InstanceReport]], None]) -> None:
        self._send = send

    def close(self) -> None:
        self._send = None

    def report(self, reports: Sequence[InstanceReport]) -> None:
        if self._send is not None and reports:
            self._send(reports)


class Outcomes:
    def __init__(self, *, host: str, metrics: AgentMetrics, sink: StatusSink) -> None:
        self._host = host
        self._log = structlog.get_logger("agent.outcome").bind(host=host)
        self.metrics = metrics
        self.sink = sink
        self._convergence = ConvergenceTracker()
        self._reported: dict[str, InstanceReport] = {}

    def desired_changed(self, instance_id: str, desired: Desired, *, at: float) -> None:
        """A new desired state arrived: the convergence clock of that change starts."""
        self._convergence.changed(instance_id, desired, at=at)

    def pass_done(
        self,
        reports: Mapping[str, InstanceReport],
        desired: Mapping[str, Desired],
        *,
        actions: int,
        ok: bool,
        retries: int,
        revision: int,
        started_ns: int,
        now: float,
    ) -> None:
        """`reports` and `desired`: every desired instance's status and desired state."""
        matching = {iid: converged(desired[iid], r.phase, r.ready) for iid, r in reports.items()}
        done = self._convergence.observe(matching, now=now)
        for c in done:
            self._log.debug(
                "converged", instance=c.instance_id, change=c.change, seconds=round(c.seconds, 3)
            )
        self.metrics.pass_done(
            PassOutcome(
                ok=ok,
                retries=retries,
                converged=done,
                unconverged=self._convergence.unconverged,
                oldest_unconverged_s=self._convergence.oldest_age(now),
                phases=Counter(r.phase for r in reports.values()),
                stuck=Counter(r.stuck.reason for r in reports.values() if r.stuck is not None),
                revision=revision,
            )
        )
        self._send_changes(reports)
        if actions:
            # Only passes that did something: an idle agent ticks every probe interval.
            span = _tracer.start_span(
                "agent.reconcile",
                context=otel_context.Context(),
                start_time=started_ns,
                attributes={
                    "keel.host": self._host,
                    "keel.actions": actions,
                    "keel.converged": len(done),
                },
            )
            if not ok:
                span.set_status(Status(StatusCode.ERROR, "reconcile pass failed"))
            span.end()

    def full_report(self, reports: Mapping[str, InstanceReport]) -> list[InstanceReport]:
        """All of `reports` (sent after Hello), remembered as reported."""
        self._reported = dict(reports)
        return list(reports.values())

    def confirm_removed(self, report: InstanceReport) -> bool:
        """Send a removal confirmation; False while disconnected (the tombstone stays)."""
        if not self.sink.connected:
            return False
        self.sink.report([report])
        return True

    def forget(self, instance_id: str) -> None:
        self._reported.pop(instance_id, None)

    def _send_changes(self, reports: Mapping[str, InstanceReport]) -> None:
        if not self.sink.connected:
            return  # the full report after the next Hello covers everything
        changed = []
        for iid, report in reports.items():
            if self._reported.get(iid) != report:
                changed.append(report)
                self._reported[iid] = report
        if changed:
            self.sink.report(changed)
