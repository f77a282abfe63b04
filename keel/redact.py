"""Taking secret_env values out of a workload's own output before Keel reports or relays it.

A workload may print its secrets (a crashing program that logs its configuration, say). The
agent knows the values it put in the process's environment (`agent.secretenv`), so it
redacts them where that output leaves the host: the stderr tail of a CRASH_LOOP message
(`agent.reconciler`), from which it would reach the instance's message, `keelctl stuck`, a
rollout's failure record and its events, and the log chunks `keelctl logs` fetches
(`agent.sync`, through `Streaming`). Every occurrence of a value, and of each line of a
multi-line value, becomes `[redacted secret_env NAME]`: a name, never a value.

What it cannot do: a value (or line) shorter than `MIN_LENGTH` characters is left alone, as
it would match ordinary text; an encoded form of the value (base64, URL-escaped, split by the
program) is not recognised; a value cut by the edge of a 4 KiB tail shows its other part.
"""

from __future__ import annotations

from collections.abc import Mapping

# Shorter values would match ordinary words and numbers; they are not redacted.
MIN_LENGTH = 4


# Said instead of the named marker whenever that marker's text would hold a value (a value that
# is its variable's name, or a piece of the marker's words).
PLAIN_MARKER = b"[redacted]"


class Redactor:
    """Replaces every occurrence of the given secret values in bytes or text."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        patterns: dict[bytes, set[str]] = {}
        for name, value in (values or {}).items():
            for piece in {value, value.strip(), *(line.strip() for line in value.splitlines())}:
                if len(piece) >= MIN_LENGTH:
                    patterns.setdefault(piece.encode(), set()).add(name)
        self._patterns = patterns
        self.names = frozenset(values or {})
        # A stream holds back at most this much, in case it is the start of a value.
        self.longest = max((len(p) for p in patterns), default=0)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def merged(self, other: Redactor) -> Redactor:
        """One redactor for the values of both."""
        r = Redactor()
        for pattern, names in (*self._patterns.items(), *other._patterns.items()):
            r._patterns.setdefault(pattern, set()).update(names)
        r.longest = max(self.longest, other.longest)
        r.names = self.names | other.names
        return r

    def starts_with(self, data: bytes) -> bool:
        """True if `data` is the beginning of a value (it may be one once more arrives)."""
        return any(p.startswith(data) for p in self._patterns)

    def spans(self, data: bytes) -> list[tuple[int, int, set[str]]]:
        """Where values occur, overlapping occurrences merged into one span, in order."""
        found: list[tuple[int, int, set[str]]] = []
        for pattern, names in self._patterns.items():
            at = data.find(pattern)
            while at >= 0:
                found.append((at, at + len(pattern), names))
                at = data.find(pattern, at + 1)
        return _merged(found)

    def scrub(self, data: bytes) -> bytes:
        """`data` with every value replaced by its marker."""
        if not self._patterns:
            return data
        return self._replace(data, self.spans(data))

    def text(self, text: str) -> str:
        if not self._patterns:
            return text
        return self.scrub(text.encode("utf-8", errors="surrogateescape")).decode(
            "utf-8", errors="replace"
        )

    def marker(self, names: set[str]) -> bytes:
        named = f"[redacted secret_env {', '.join(sorted(names))}]".encode()
        return PLAIN_MARKER if any(p in named for p in self._patterns) else named

    def _replace(self, data: bytes, spans: list[tuple[int, int, set[str]]]) -> bytes:
        out, at = [], 0
        for start, end, names in spans:
            out += [data[at:start], self.marker(names)]
            at = end
        out.append(data[at:])
        return b"".join(out)


def _merged(found: list[tuple[int, int, set[str]]]) -> list[tuple[int, int, set[str]]]:
    """Spans in order, those that overlap merged into one."""
    found.sort(key=lambda s: s[0])
    merged: list[tuple[int, int, set[str]]] = []
    for start, end, names in found:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2] | names)
        else:
            merged.append((start, end, set(names)))
    return merged


class Streaming:
    """Redacts a byte stream that arrives in chunks, a value split across chunks included.

    `feed` returns what can be sent now; it holds back the end of the data while that end
    could be the start of a value, or the end of a run of overlapping values that may go on
    (never more than the longest value), and `flush` returns what is held at the end.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._r = redactor
        self._held = b""
        # The names of the values the held bytes are part of, when they are the end of a run
        # of values already matched (then they are redacted whatever follows).
        self._secret_tail: set[str] = set()

    def feed(self, chunk: bytes) -> bytes:
        if not self._r:
            return chunk
        data = self._held + chunk
        spans = self._r.spans(data)
        if self._secret_tail:
            spans = _merged([(0, len(self._held), self._secret_tail), *spans])
        keep, self._secret_tail = self._undecided(data, spans)
        self._held = data[keep:]
        return self._r._replace(data[:keep], [s for s in spans if s[1] <= keep])

    def flush(self) -> bytes:
        data, self._held = self._held, b""
        if self._secret_tail and data:
            names, self._secret_tail = self._secret_tail, set()
            return self._r.marker(names)
        return self._r.scrub(data)

    def _undecided(
        self, data: bytes, spans: list[tuple[int, int, set[str]]]
    ) -> tuple[int, set[str]]:
        """Where the part that may still grow into a value begins (len(data): none), and the
        names of the values it is part of when it is the end of a run already matched."""
        last_end = spans[-1][1] if spans else 0
        # A span that reaches the end may extend into the next chunk (an overlapping value).
        if spans and last_end == len(data):
            start, _, names = spans[-1]
            keep = max(start, len(data) - self._r.longest)
            if keep > start:
                # A run longer than any value (a value that overlaps itself, repeated): its
                # marker goes now, and only its last bytes are held, so the hold stays bounded.
                spans[-1] = (start, keep, names)
                return keep, names
            return start, set()
        for start in range(max(last_end, len(data) - self._r.longest + 1), len(data)):
            if self._r.starts_with(data[start:]):
                return start, set()
        return len(data), set()
