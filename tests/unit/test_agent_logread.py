"""Reading workload logs back: tail across rotated files, follow through copy-truncate."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import logread
from agent.runtime.logs import rotate_if_needed


def write_stream(d: Path, parts: list[bytes]) -> list[Path]:
    """Files of one stream, oldest first: parts[0] -> stdout.log.N ... parts[-1] -> stdout.log."""
    d.mkdir(parents=True, exist_ok=True)
    n = len(parts) - 1
    paths = []
    for i, data in enumerate(parts):
        suffix = f".{n - i}" if n - i > 0 else ""
        p = d / f"stdout.log{suffix}"
        p.write_bytes(data)
        paths.append(p)
    return paths


def tail(paths: list[Path], lines: int) -> bytes:
    return b"".join(logread.read_segments(logread.plan_tail(paths, lines)))


TAIL_CASES: list[tuple[str, list[bytes], int, bytes]] = [
    ("everything", [b"a\nb\n", b"c\n"], 0, b"a\nb\nc\n"),
    ("last line", [b"a\nb\n", b"c\n"], 1, b"c\n"),
    ("spans the rotated copy", [b"a\nb\n", b"c\n"], 2, b"b\nc\n"),
    ("more than there are", [b"a\n", b"b\n"], 10, b"a\nb\n"),
    ("no final newline", [b"a\nb\nc"], 2, b"b\nc"),
    ("three files", [b"1\n2\n", b"3\n4\n", b"5\n"], 4, b"2\n3\n4\n5\n"),
    ("empty live file", [b"a\nb\n", b""], 1, b"b\n"),
    ("nothing at all", [b""], 3, b""),
    ("a line split across the copy", [b"a\nhal", b"f\nz\n"], 2, b"half\nz\n"),
]


@pytest.mark.parametrize(
    ("parts", "lines", "expected"),
    [c[1:] for c in TAIL_CASES],
    ids=[c[0] for c in TAIL_CASES],
)
def test_tail_across_rotated_files(
    tmp_path: Path, parts: list[bytes], lines: int, expected: bytes
) -> None:
    """The last N lines of a stream come from its rotated copies and live file, in order."""
    write_stream(tmp_path / "i", parts)
    paths = logread.stream_files(tmp_path, "i", "stdout")
    assert tail(paths, lines) == expected


def test_stream_files_orders_oldest_first(tmp_path: Path) -> None:
    """`.10` is older than `.2`, which is older than `.1` and the live file."""
    d = tmp_path / "i"
    d.mkdir()
    for name in ("stdout.log", "stdout.log.1", "stdout.log.2", "stdout.log.10", "stderr.log"):
        (d / name).write_bytes(b"x")
    names = [p.name for p in logread.stream_files(tmp_path, "i", "stdout")]
    assert names == ["stdout.log.10", "stdout.log.2", "stdout.log.1", "stdout.log"]


def test_long_tail_is_chunked_and_bounded(tmp_path: Path) -> None:
    """A large tail is read in chunks of at most CHUNK_BYTES."""
    line = b"x" * 999 + b"\n"
    paths = write_stream(tmp_path / "i", [line * 100, line * 100])
    chunks = list(logread.read_segments(logread.plan_tail(paths, 150)))
    assert all(len(c) <= logread.CHUNK_BYTES for c in chunks)
    assert b"".join(chunks) == line * 150


def test_follow_reads_appended_bytes(tmp_path: Path) -> None:
    """A follower returns what was appended since it started, once."""
    p = tmp_path / "stdout.log"
    p.write_bytes(b"old\n")
    f = logread.Follower.at_end(p)
    assert f.read_new() == []
    with p.open("ab") as out:
        out.write(b"new 1\n")
    assert b"".join(f.read_new()) == b"new 1\n"
    assert f.read_new() == []


def test_follow_survives_copy_truncate_rotation(tmp_path: Path) -> None:
    """Unread bytes copied to .1 before the truncate are read from the copy, then the new file."""
    p = tmp_path / "stdout.log"
    p.write_bytes(b"a\n")
    f = logread.Follower.at_end(p)
    with p.open("ab") as out:
        out.write(b"b\nc\n")  # not read yet when the rotation happens
    assert rotate_if_needed(p, max_bytes=3, backups=2)
    assert p.stat().st_size == 0
    with p.open("ab") as out:
        out.write(b"d\n")
    assert b"".join(f.read_new()) == b"b\nc\nd\n"


def test_tail_text_keeps_whole_lines_within_the_limit(tmp_path: Path) -> None:
    """The stderr tail is at most max_bytes, cut at a line boundary, across rotation."""
    paths = write_stream(tmp_path / "i", [b"first line\n", b"second line\nthird\n"])
    assert logread.tail_text(paths, 4096) == "first line\nsecond line\nthird\n"
    assert logread.tail_text(paths, 12) == "third\n"
    assert logread.tail_text([], 100) == ""
