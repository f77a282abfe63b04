"""What a benchmark window cost: CPU per group of processes, RSS, the machine's own load.

A `Window` samples named groups of processes (the control plane, Postgres, the hollow fleet,
the bench itself) at its start, while it runs (`sample`, for peak RSS and for processes that
come and go) and at its end, and reports each group's CPU as a percentage of one core over the
window. A group is a callable returning its processes now, so Postgres' backends started
during the window count. CPU of a process that exited during the window is lost unless its
parent reaped it (then it is in the parent's children times, which are added: how a postmaster
accounts for its backends). The machine's busy share says how much the rest of the machine
(other users of a shared box) took meanwhile. Neighbours: the scenarios open windows;
`bench.report` prints what they return. Percentiles of exact samples are here too.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

Group = Callable[[], Sequence[psutil.Process]]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of exact samples (NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    out: dict[int, float] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return out


def _rss(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


@dataclass
class Usage:
    """One group's cost over a window."""

    cpu_pct: float  # of one core
    rss_max_mib: float


@dataclass
class Cost:
    """Every group's cost over one window, and the machine's."""

    seconds: float
    groups: dict[str, Usage]
    machine_busy_pct: float  # of the whole machine (all cores)
    load_avg: float  # 1-minute load average at the end
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def cpu(self, group: str) -> float:
        return self.groups[group].cpu_pct

    def as_json(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 2),
            "cpu_pct_of_one_core": {k: round(u.cpu_pct, 1) for k, u in self.groups.items()},
            "rss_max_mib": {k: round(u.rss_max_mib, 1) for k, u in self.groups.items()},
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "load_avg_1m": round(self.load_avg, 2),
            "cores": self.cores,
        }


class Window:
    """CPU and RSS of named process groups between `__init__` and `close` (see module doc)."""

    def __init__(self, groups: Mapping[str, Group]) -> None:
        self._groups = groups
        self._start = time.monotonic()
        self._busy = _busy_seconds()
        # Per group: the CPU seconds of each process when first seen, and the latest.
        self._first: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._rss_max: dict[str, int] = dict.fromkeys(groups, 0)
        self._seen_at_start: dict[str, set[int]] = {}
        for name, group in groups.items():
            procs = group()
            first = _cpu_seconds(procs)
            self._first[name] = dict(first)
            self._last[name] = dict(first)
            self._seen_at_start[name] = set(first)
            self._rss_max[name] = _rss(procs)

    def sample(self) -> None:
        """Records the processes now (peak RSS; CPU of processes that may exit before close)."""
        for name, group in self._groups.items():
            procs = group()
            now = _cpu_seconds(procs)
            for pid, seconds in now.items():
                # A process born during the window counts from zero.
                self._first[name].setdefault(
                    pid, 0.0 if pid not in self._seen_at_start[name] else seconds
                )
                self._last[name][pid] = seconds
            self._rss_max[name] = max(self._rss_max[name], _rss(procs))

    def close(self) -> Cost:
        self.sample()
        seconds = max(1e-6, time.monotonic() - self._start)
        groups = {}
        for name in self._groups:
            used = sum(self._last[name][pid] - self._first[name][pid] for pid in self._last[name])
            groups[name] = Usage(
                cpu_pct=100.0 * max(0.0, used) / seconds,
                rss_max_mib=self._rss_max[name] / (1024 * 1024),
            )
        cores = os.cpu_count() or 1
        busy = 100.0 * (_busy_seconds() - self._busy) / (seconds * cores)
        return Cost(seconds, groups, busy, os.getloadavg()[0], cores)
