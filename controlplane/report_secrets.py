"""secret_env values taken out of agents' reports on the control plane's side as well.

The agent redacts the values its workload prints from the stderr tail it reports
(`keel.redact`, `agent.reconciler`). An older agent does not, and an instance's message goes
far: the instance row, `keelctl stuck` and `describe instance`, a rollout's failure record and
its RolloutRolledBack event (`controlplane.rollout_judge` reads the rows). So `sync.AgentSync`
keeps, for each stream, the sealed secret_env of every instance it assigned (`remember`, no
plain value held), and `redacted` opens them (`SecretBox.open`) only for a report that
carries a message, replacing each value in it before `reports.ReportWriter` stores it. A
stream that resumed from the agent's revision was sent only what changed since: the first
report with a message about an instance it has not seen makes it read the host's whole set,
once (`incomplete`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controlplane.instance_store import InstanceRow
from controlplane.secrets import SecretBox, SecretsUnopenable
from controlplane.store import Report
from keel.model import Desired, WorkloadSpec
from keel.redact import Redactor


class AssignedSecrets:
    """The sealed secret_env of the instances one stream has assigned, by instance id."""

    def __init__(self) -> None:
        self._sealed: dict[str, tuple[str, WorkloadSpec]] = {}
        self._seen: set[str] = set()  # every instance assigned, with secrets or without
        self._complete = False  # the host's whole set has been remembered

    def remember(self, rows: Iterable[InstanceRow], *, full: bool) -> None:
        """The assignments sent: a full set replaces what was kept; a removal forgets."""
        if full:
            self._sealed.clear()
            self._seen.clear()
            self._complete = True
        for row in rows:
            self._seen.add(row.id)
            if row.spec.secret_env and row.desired is not Desired.REMOVED:
                self._sealed[row.id] = (row.workload, row.spec)
            else:
                self._sealed.pop(row.id, None)

    def remember_all(self, rows: Iterable[InstanceRow]) -> None:
        """The host's whole set, read while the stream runs: merged, not replacing, since the
        stream may meanwhile have remembered assignments newer than this read."""
        self.remember(rows, full=False)
        self._complete = True

    def incomplete(self, reports: Iterable[Report]) -> bool:
        """True if a report's message is about an instance this stream was never sent (it
        resumed from the agent's revision): the host's whole set should be remembered."""
        return not self._complete and any(
            r.message and r.instance_id not in self._seen for r in reports
        )

    def redacted(self, report: Report, *, secrets: SecretBox) -> Report:
        """`report` with its instance's secret values out of its message."""
        kept = self._sealed.get(report.instance_id)
        if kept is None or not report.message:
            return report
        try:
            spec = secrets.open(*kept)
        except SecretsUnopenable:
            # Counted and logged by `open`; the agent could not have been given the values
            # either, so it started nothing that could print them.
            return report
        values = {n: s.value for n, s in spec.secret_env.items() if s.value is not None}
        return replace(report, message=Redactor(values).text(report.message))
