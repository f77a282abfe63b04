"""What the liveness fault tests (a frozen agent, a network cut) share: the flags, placing a
workload on one host, watching the real workload processes, and the events they check.

`ProcessWatch` samples the process table in a thread: how many workload processes of each
workload run at once (the most ever seen is what `replicas + max_surge` must bound: processes
that really run, not what the control plane believes) and when each pid was first seen gone.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import psutil
from harness import Fleet
from procs import process_environ

# Short liveness for tests: NOT_READY after 3 s (the harness's --liveness-grace), UNKNOWN 2 s
# later, fenced 4 s after NOT_READY; judged every 200 ms.
LIVENESS_ARGS = [
    "--unknown-after",
    "2s",
    "--reschedule-after",
    "4s",
    "--self-fence-margin",
    "1s",
    "--liveness-interval",
    "200ms",
]


def place_on(fleet: Fleet, host: str, doc: dict[str, object], count: int) -> None:
    """Applies `doc` while only `host` takes new instances, and waits for `count` to run."""
    others = [h for h in fleet.hosts if h != host]
    fleet.keelctl_ok("cordon", *others, "--reason", "test placement")
    try:
        fleet.apply_ok(doc)
        fleet.wait_running(str(doc["name"]), count)
    finally:
        fleet.keelctl_ok("uncordon", *others)


def events(fleet: Fleet, obj: str) -> list[dict[str, str]]:
    """The events of `obj`, oldest first."""
    found = fleet.keelctl_json("events", "--for", obj, "--limit", "1000").get("events", [])
    return sorted(found, key=lambda e: int(e.get("id") or 0))


def event_time(event: dict[str, str]) -> datetime:
    """When an event was recorded (database time, this machine's clock)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(event["at"]).replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


class ProcessWatch:
    """Samples the workload processes of a test (by its server script) every `interval`."""

    def __init__(self, fleet: Fleet, *, interval: float = 0.05) -> None:
        self._script = str(fleet.server_script)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)
        self._lock = threading.Lock()
        self.most: Counter[str] = Counter()  # workload -> most processes seen at once
        self.gone_at: dict[int, float] = {}  # pid -> wall time first seen gone
        self._seen: dict[int, str] = {}  # pid -> workload
        self._workload_of: dict[int, str] = {}

    def __enter__(self) -> ProcessWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> Counter[str]:
        now = time.time()
        running: Counter[str] = Counter()
        alive: set[int] = set()
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            cmd = p.info.get("cmdline") or []
            if self._script not in cmd or p.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            workload = self._workload_of.get(p.pid)
            if workload is None:
                try:
                    workload = process_environ(p.pid).get("KEEL_WORKLOAD", "?")
                except OSError:
                    continue
                self._workload_of[p.pid] = workload
            running[workload] += 1
            alive.add(p.pid)
        with self._lock:
            for pid, workload in running_pids(alive, self._workload_of):
                self._seen.setdefault(pid, workload)
            for pid in self._seen:
                if pid not in alive:
                    self.gone_at.setdefault(pid, now)
            for workload, n in running.items():
                self.most[workload] = max(self.most[workload], n)
        return running

    def pids(self, workload: str) -> set[int]:
        """The pids of `workload` seen running so far."""
        with self._lock:
            return {pid for pid, w in self._seen.items() if w == workload}


def running_pids(alive: Iterable[int], workload_of: dict[int, str]) -> list[tuple[int, str]]:
    return [(pid, workload_of[pid]) for pid in alive]
