"""A steady write load through keelctl: one apply a second, each a new workload `tick-NNN`
(replicas 0: nothing to run) under a request id of its own, recorded with its outcome. The
database outage tests run it across an outage, then retry every failed write with its own id.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import Fleet


@dataclass
class Write:
    n: int
    name: str
    request_id: str
    manifest: Path
    sent_at: float  # time.monotonic()
    done_at: float = 0.0
    result: subprocess.CompletedProcess[str] | None = None

    @property
    def acknowledged(self) -> bool:
        return self.result is not None and self.result.returncode == 0


class WriteLoad:
    """Applies one new workload every `interval` seconds in a thread until close()."""

    def __init__(self, fleet: Fleet, *, interval: float = 1.0, count: int = 60) -> None:
        self._fleet = fleet
        self._interval = interval
        # Written up front: the thread only runs keelctl.
        self._pending = [
            Write(n, f"tick-{n:03d}", f"tick-{n:03d}-req", fleet.write_manifest(_tick(n)), 0.0)
            for n in range(count)
        ]
        self.writes: list[Write] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-load", daemon=True)

    def _run(self) -> None:
        for write in self._pending:
            if self._stop.is_set():
                return
            write.sent_at = time.monotonic()
            write.result = self.send(write, timeout="5s")
            write.done_at = time.monotonic()
            self.writes.append(write)
            self._stop.wait(max(0.0, write.sent_at + self._interval - time.monotonic()))

    def send(self, write: Write, *, timeout: str) -> subprocess.CompletedProcess[str]:
        """keelctl apply of the write's manifest, under its own request id."""
        return self._fleet.keelctl(
            "--request-id", write.request_id, "--timeout", timeout, "apply", "-f",
            str(write.manifest),
        )  # fmt: skip

    def acknowledged_since(self, since: float) -> int:
        return sum(1 for w in list(self.writes) if w.sent_at >= since and w.acknowledged)

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _tick(n: int) -> dict[str, object]:
    return {"name": f"tick-{n:03d}", "replicas": 0, "spec": {"command": ["sleep", "1000"]}}
