"""How `keelctl rollout status --wait` shows a rollout as it goes.

On a terminal, a rich progress bar (ready of desired, with updated and old remaining beside
it, the message beneath when it changes), as `keel.ctl.progress` does for operations; off a
terminal, one plain line per change (`rollout_output.progress_line`); with `-o json`, one JSON
object per change. rich is imported only here and only for a terminal. `keel.ctl.rollout`
feeds every status it reads to the view.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Protocol

from keel.ctl.output import to_json
from keel.ctl.progress import Lines, RichBar
from keel.ctl.rollout_output import counts, failure_text, progress_line
from keel.v1 import fleet_pb2

# States a rollout ends in: complete, or not.
SUCCEEDED = frozenset({"COMPLETE"})
ENDED = frozenset({"COMPLETE", "FAILED", "ROLLED_BACK", "ABORTED"})


class View(Protocol):
    def __enter__(self) -> View: ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, s: fleet_pb2.RolloutStatus) -> None: ...
    def say(self, text: str) -> None: ...
    def finish(self, s: fleet_pb2.RolloutStatus, *, now: datetime) -> None: ...


def view(*, json: bool) -> View:
    if json:
        return JsonView()
    if sys.stdout.isatty():
        return BarView()
    return LineView()


def _outcome(s: fleet_pb2.RolloutStatus, *, now: datetime) -> str:
    text = f"workload/{s.workload} revision {s.revision} {s.state}: {s.message}"
    if s.HasField("failure"):
        text += "\n" + failure_text(s.failure, now=now)
    return text


class LineView(Lines):
    """A line each time what it says changes."""

    def update(self, s: fleet_pb2.RolloutStatus) -> None:
        self.show(progress_line(s))

    def say(self, text: str) -> None:
        print(text, flush=True)

    def finish(self, s: fleet_pb2.RolloutStatus, *, now: datetime) -> None:
        print(_outcome(s, now=now), flush=True)


class JsonView:
    """One JSON object per change of the status (for scripts); the last is the outcome."""

    def __init__(self) -> None:
        self._last: fleet_pb2.RolloutStatus | None = None

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, s: fleet_pb2.RolloutStatus) -> None:
        if s == self._last:
            return
        self._last = s
        print(to_json(s, indent=None), flush=True)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def finish(self, s: fleet_pb2.RolloutStatus, *, now: datetime) -> None:
        return None


class BarView(RichBar):
    """A rich progress bar: ready of desired, the counts, and the message when it changes."""

    def update(self, s: fleet_pb2.RolloutStatus) -> None:
        total, done = max(1, s.desired), min(s.ready, s.desired)
        self.show(f"{s.workload} r{s.revision} {s.state}", total=total, done=done, detail=counts(s))
        self.note(s.message, style="dim")

    def say(self, text: str) -> None:
        self._progress.console.print(text, style="yellow", markup=False)

    def finish(self, s: fleet_pb2.RolloutStatus, *, now: datetime) -> None:
        style = "green" if s.state in SUCCEEDED else "red"
        self._console.print(_outcome(s, now=now), style=style, markup=False)
