"""What a bench run found, as one table and as JSON: figures against the issue's targets, and
how each scenario's cost grew with its size.

A scenario returns an `Outcome`: its `Figure`s (a value at the size run, with the target it is
judged by and the figure from elsewhere it is compared with) and its `Step`s (one per size:
what the size cost per unit). `print_tables` prints the figures table (scenario, figure,
value, size, target, anchor, result) and the growth table; `write_json` writes the same as
`bench/results/latest.json`, so two runs can be compared. Neighbours: the scenarios build
outcomes; `bench.suite` runs them and calls this.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import Cost

MET, MISSED, NOT_BUILT, FAILED, NO_TARGET = "met", "missed", "not built", "failed", "-"


@dataclass(frozen=True)
class Target:
    """A figure's target: met when the value is below `limit` (or at least it, `below=False`)."""

    text: str
    limit: float = math.nan  # NaN: judged by `Figure.holds` instead
    below: bool = True

    def met(self, value: float) -> bool:
        return value < self.limit if self.below else value >= self.limit


@dataclass
class Figure:
    name: str
    value: float | None  # None: not measured (not built, or the scenario failed)
    unit: str
    size: str  # the size it was measured at, and the size when that differs
    target: Target | None = None
    anchor: str = ""
    note: str = ""
    status: str = ""  # set for not built / failed
    # Set when the target is a rule other than value against limit (the SLI agreeing with a
    # measured figure): whether it holds.
    holds: bool | None = None

    @property
    def result(self) -> str:
        if self.status:
            return self.status
        if self.holds is not None:
            return MET if self.holds else MISSED
        if self.target is None:
            return NO_TARGET
        if self.value is None or math.isnan(self.value):
            return MISSED
        return MET if self.target.met(self.value) else MISSED

    def shown(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "-"
        v = self.value
        if math.isinf(v):
            return "never"
        if v == int(v) and not self.unit.startswith(("ms", "s", "%")):
            text = f"{v:,.0f}"  # a count
        elif abs(v) >= 100:
            text = f"{v:,.0f}"
        else:
            text = f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        return f"{text} {self.unit}".strip()


@dataclass
class Step:
    """One size of a scenario: what it cost, in total and per unit of size."""

    size: str
    units: float  # agents, instances...: what the per-unit figures divide by
    unit: str
    cost: Cost | None
    per_unit: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "units": self.units,
            "unit": self.unit,
            "cost": self.cost.as_json() if self.cost else None,
            "per_unit": {k: round(v, 4) for k, v in self.per_unit.items()},
            "extra": {k: round(v, 4) for k, v in self.extra.items()},
        }


@dataclass
class Outcome:
    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    status: str = "ran"  # ran | not built | failed
    error: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def fail(self, error: str) -> None:
        """The scenario stopped here: the figures already measured stand, `close` adds why."""
        self.status, self.error = FAILED, error

    def close(self) -> None:
        """Adds the row that says the scenario failed, and why, once it is done."""
        if self.status == FAILED and not any(f.status == FAILED for f in self.figures):
            self.figures.append(Figure("(stopped)", None, "", "", note=self.error, status=FAILED))

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.number,
            "title": self.title,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "figures": [
                {
                    **{k: v for k, v in asdict(f).items() if k != "target"},
                    "target": f.target.text if f.target else "",
                    "result": f.result,
                }
                for f in self.figures
            ],
            "steps": [s.as_json() for s in self.steps],
        }


def failed(number: int, title: str, error: str) -> Outcome:
    """A scenario that could not start: one row saying so, with why."""
    outcome = Outcome(number, title)
    outcome.fail(error)
    return outcome


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def figures_table(outcomes: Sequence[Outcome]) -> str:
    """One row per figure; a scenario's title, and a size or anchor the row above already
    shows, are not repeated."""
    rows = []
    for o in outcomes:
        size = anchor = ""
        for n, f in enumerate(o.figures):
            rows.append(
                [
                    str(o.number) if n == 0 else "",
                    o.title if n == 0 else "",
                    f.name,
                    f.shown() + (f" ({f.note})" if f.note and f.status != FAILED else ""),
                    f.size if f.size != size else "",
                    f.target.text if f.target else "",
                    f.anchor if f.anchor != anchor else "",
                    f.result + (f": {f.note}" if f.status == FAILED else ""),
                ]
            )
            size, anchor = f.size, f.anchor or anchor
    header = ["#", "scenario", "figure", "value", "size", "target", "anchor", "result"]
    return _table(header, rows)


def growth_table(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        for s in o.steps:
            c = s.cost
            per_unit = ", ".join(f"{k} {_number(v)}" for k, v in s.per_unit.items())
            rows.append(
                [
                    str(o.number),
                    s.size,
                    f"{c.seconds:.0f} s" if c else "-",
                    f"{c.cpu('controlplane'):.1f}" if c else "-",
                    f"{c.cpu('postgres'):.1f}" if c else "-",
                    f"{c.cpu('hollow'):.1f}" if c else "-",
                    f"{c.machine_busy_pct:.0f}% / {c.load_avg:.1f}" if c else "-",
                    per_unit,
                ]
            )
    header = ["#", "size", "window", "control plane %", "Postgres %", "hollow fleet %",
              "machine busy / load", "per unit"]  # fmt: skip
    return _table(header, rows)


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def print_tables(outcomes: Sequence[Outcome], *, profile: str) -> None:
    print(f"\nKeel bench ({profile} profile): figures at the size run, against the issue's targets")
    print(figures_table(outcomes))
    print(
        "\nHow the cost grows (CPU in % of one core over the measured window; machine busy is "
        "every core of the machine, the bench's load and anyone else's):"
    )
    print(growth_table(outcomes))


def write_json(path: Path, outcomes: Sequence[Outcome], *, run: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "run": {**run, "python": platform.python_version(), "machine": platform.machine()},
        "scenarios": [o.as_json() for o in outcomes],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
