"""How `keelctl drain --wait` and `keelctl op watch` show an operation as it runs.

On a terminal, a progress bar (rich: moved of total, what is under way and blocked, the ETA,
and the current blocker beneath it); off a terminal, one plain line per change
(`operation_output.progress_line`); with `-o json`, one JSON object per version of the record.
rich is imported only here and only for a terminal, so the other commands start as fast as
before. `keel.ctl.operations` feeds every version of the record to the view.
"""

from __future__ import annotations

import sys
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from keel.ctl.operation_output import progress_line, result_text, seconds_text
from keel.ctl.output import to_json
from keel.v1 import fleet_pb2


class View(Protocol):
    def __enter__(self) -> View: ...
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def update(self, op: fleet_pb2.Operation, *, now: datetime | None) -> None: ...
    def finish(self, op: fleet_pb2.Operation) -> None: ...


def view(*, json: bool) -> View:
    if json:
        return JsonView()
    if sys.stdout.isatty():
        return BarView()
    return LineView()


class Lines:
    """Off a terminal, a line each time what it says changes: the base of the line views here
    and in `keel.ctl.rollout_progress`."""

    def __init__(self) -> None:
        self._last = ""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, line: str) -> None:
        if line != self._last:
            print(line, flush=True)
            self._last = line


class LineView(Lines):
    """A line each time what it says changes."""

    def update(self, op: fleet_pb2.Operation, *, now: datetime | None) -> None:
        self.show(progress_line(op))

    def finish(self, op: fleet_pb2.Operation) -> None:
        print(result_text(op), flush=True)


class JsonView:
    """One JSON object per version of the operation (for scripts)."""

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, op: fleet_pb2.Operation, *, now: datetime | None) -> None:
        print(to_json(op, indent=None), flush=True)

    def finish(self, op: fleet_pb2.Operation) -> None:
        return None


class RichBar:
    """A rich progress bar of one task (a description, done of total, a detail column) and a
    note printed beneath it when the note changes: the bar of `op watch` / `drain --wait`
    (`BarView` here) and of `rollout status --wait` (`keel.ctl.rollout_progress`)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._console = console if console is not None else Console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
            transient=False,
        )
        self._task: Any = None
        self._note = ""

    def __enter__(self) -> Any:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def show(self, description: str, *, total: int, done: int, detail: str) -> None:
        if self._task is None:
            self._task = self._progress.add_task(
                description, total=total, completed=done, detail=detail
            )
        else:
            self._progress.update(
                self._task, description=description, total=total, completed=done, detail=detail
            )

    def note(self, text: str, *, style: str) -> None:
        if text and text != self._note:
            self._progress.console.print(text, style=style, markup=False)
        self._note = text


class BarView(RichBar):
    """A rich progress bar: moved of total, the counts, the ETA, and the current blocker."""

    def update(self, op: fleet_pb2.Operation, *, now: datetime | None) -> None:
        p = op.progress
        detail = f"{p.in_flight} under way, {p.blocked} blocked, eta {seconds_text(p.eta_s)}"
        self.show(
            f"{op.id} {op.state}", total=max(1, p.moved + p.remaining), done=p.moved, detail=detail
        )
        blocker = ""
        if p.blockers:
            b = p.blockers[0]
            blocker = f"blocked: {b.instance} {b.reason}: {b.message} (next: {b.next_command})"
        self.note(blocker, style="yellow")

    def finish(self, op: fleet_pb2.Operation) -> None:
        style = "green" if op.state == "SUCCEEDED" else "red"
        self._console.print(result_text(op), style=style, markup=False)
