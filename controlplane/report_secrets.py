"""secret_env values taken out of agents' reports on the control plane's side as well.

The agent redacts the values its workload prints from the stderr tail it reports
(`keel.redact`, `agent.reconciler`). An older agent does not, and an instance's message goes
far: the instance row, `keelctl stuck` and `describe instance`, a rollout's failure record and
its RolloutRolledBack event (`controlplane.rollout_judge` reads the rows). So `sync.AgentSync`
keeps, for each stream, the sealed secret_env of every instance it assigned (`remember`, no
plain value held), and `redacted` opens them (`SecretBox.open`) only for a report that
carries a message, replacing each value in it before `reports.ReportWriter` stores it.
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

    def remember(self, rows: Iterable[InstanceRow], *, full: bool) -> None:
        """The assignments sent: a full set replaces what was kept; a removal forgets."""
        if full:
            self._sealed.clear()
        for row in rows:
            if row.spec.secret_env and row.desired is not Desired.REMOVED:
                self._sealed[row.id] = (row.workload, row.spec)
            else:
                self._sealed.pop(row.id, None)

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
