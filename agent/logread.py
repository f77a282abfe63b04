"""Reading workload logs back: the tail across rotated files, following, the stderr tail.

`agent.runtime.logs` writes `<state-dir>/logs/<instance>/{stdout,stderr}.log` and rotates them
by copy-then-truncate into `.1`, `.2`, ... (`.1` the newest copy). Here the files of one stream
are read as one byte stream, oldest first: `plan_tail` finds where its last N lines begin,
`read_segments` yields that in bounded chunks, `Follower` yields what is appended afterwards
(surviving a copy-truncate rotation) and `tail_text` is the end of stderr that a CRASH_LOOP
message carries. Blocking file I/O, all of it: `agent.sync` and the reconciler call it
through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

STREAMS = ("stdout", "stderr")
# The most data one LogChunk carries.
CHUNK_BYTES = 64 * 1024
# Backwards scans read this much at a time.
_BLOCK = 64 * 1024


def stream_files(log_dir: Path, instance_id: str, stream: str) -> list[Path]:
    """The files of one stream that exist, oldest first: `.N` ... `.1`, then the live file."""
    live = log_dir / instance_id / f"{stream}.log"
    rotated: list[tuple[int, Path]] = []
    directory = live.parent
    if directory.is_dir():
        for p in directory.iterdir():
            suffix = p.name.removeprefix(live.name + ".")
            if suffix != p.name and suffix.isdigit():
                rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if live.exists():
        files.append(live)
    return files


def live_file(log_dir: Path, instance_id: str, stream: str) -> Path:
    return log_dir / instance_id / f"{stream}.log"


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of one file."""

    path: Path
    start: int
    end: int


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def plan_tail(paths: Sequence[Path], lines: int) -> list[Segment]:
    """The segments holding the last `lines` lines of `paths` read as one stream (0 = all).

    Sizes are taken now: what is appended later is the follower's. A final newline ends the
    last line rather than starting an empty one.
    """
    files = [(p, _size(p)) for p in paths]
    if lines <= 0:
        return [Segment(p, 0, size) for p, size in files if size > 0]
    found = 0
    newest = True
    picked: list[Segment] = []
    for path, size in reversed(files):
        if size == 0:
            continue
        start: int | None = None
        try:
            with open(path, "rb") as f:
                hi = size
                if newest:
                    f.seek(size - 1)
                    if f.read(1) == b"\n":
                        hi = size - 1
                    newest = False
                while hi > 0 and start is None:
                    lo = max(0, hi - _BLOCK)
                    f.seek(lo)
                    block = f.read(hi - lo)
                    j = len(block)
                    while (k := block.rfind(b"\n", 0, j)) >= 0:
                        found += 1
                        if found == lines:
                            start = lo + k + 1
                            break
                        j = k
                    hi = lo
        except FileNotFoundError:
            continue  # rotated away meanwhile: its bytes are in the next copy
        if start is not None:
            if start < size:
                picked.append(Segment(path, start, size))
            break
        picked.append(Segment(path, 0, size))
    return list(reversed(picked))


def read_segments(segments: Sequence[Segment], *, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The bytes of `segments` in order, at most `chunk` bytes at a time."""
    for seg in segments:
        try:
            with open(seg.path, "rb") as f:
                f.seek(seg.start)
                remaining = seg.end - seg.start
                while remaining > 0:
                    data = f.read(min(chunk, remaining))
                    if not data:
                        break  # truncated by a rotation meanwhile
                    remaining -= len(data)
                    yield data
        except FileNotFoundError:
            continue


def stderr_tail(log_dir: Path, instance_id: str, max_bytes: int) -> str:
    """The end of the instance's stderr, across rotated files (blocking: run in a thread)."""
    return tail_text(stream_files(log_dir, instance_id, "stderr"), max_bytes)


def tail_text(paths: Sequence[Path], max_bytes: int) -> str:
    """The last whole lines of `paths` (one stream) in at most `max_bytes`, as text."""
    files = [(p, _size(p)) for p in paths]
    total = sum(size for _, size in files)
    skip = max(0, total - max_bytes)
    segments: list[Segment] = []
    for path, size in files:
        if skip >= size:
            skip -= size
            continue
        segments.append(Segment(path, skip, size))
        skip = 0
    data = b"".join(read_segments(segments))
    if total > max_bytes:
        # Cut at a line boundary rather than show half a line.
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data = data[cut + 1 :]
    return data.decode("utf-8", errors="replace")


class Follower:
    """What is appended to one live log file after `offset`, across copy-truncate rotation.

    A rotation shows as the live file shrinking or as a new `.1` copy (the file may have grown
    back past our offset by the time we look, so the size alone cannot tell).
    """

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._copy = path.with_name(path.name + ".1")
        self._copy_seen = _identity(self._copy)

    @classmethod
    def at_end(cls, path: Path) -> Follower:
        return cls(path, _size(path))

    def read_new(self, *, limit: int = 16 * CHUNK_BYTES) -> list[bytes]:
        """Chunks appended since the last call (at most about `limit` bytes; the rest later)."""
        size = _size(self.path)
        copy_now = _identity(self._copy)
        out: list[bytes] = []
        if size < self.offset or copy_now != self._copy_seen:
            # Copied to `.1` then truncated: what we had not read yet is at the end of the copy.
            # (Lines written between the copy and the truncate are lost to everyone.)
            copied = copy_now[1] if copy_now is not None else 0
            if copied > self.offset:
                out.extend(read_segments([Segment(self._copy, self.offset, copied)]))
            self.offset = 0
        self._copy_seen = copy_now
        end = min(size, self.offset + limit)
        if end > self.offset:
            for data in read_segments([Segment(self.path, self.offset, end)]):
                self.offset += len(data)
                out.append(data)
        return out


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, or None: a rotation changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
