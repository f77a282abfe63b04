"""keel.redact: every occurrence of a secret_env value becomes a marker naming the variable,
in one piece of text and in a stream cut into chunks anywhere; short values are left alone."""

from __future__ import annotations

import pytest

from keel.redact import MIN_LENGTH, Redactor, Streaming


@pytest.mark.parametrize(
    ("values", "text", "want"),
    [
        (
            {"DB_PASS": "hunter22"},
            "connect failed: password hunter22 refused\nretry hunter22",
            "connect failed: password [redacted secret_env DB_PASS] refused\n"
            "retry [redacted secret_env DB_PASS]",
        ),
        ({"DB_PASS": "hunter22"}, "nothing secret here\n", "nothing secret here\n"),
        # Two values that overlap in the output are hidden together: no piece of either shows.
        ({"A": "abcdef", "B": "defghi"}, "x abcdefghi y", "x [redacted secret_env A, B] y"),
        # One value inside another: the longer one's marker covers both.
        ({"A": "hidden", "B": "my-hidden-key"}, "k=my-hidden-key", "k=[redacted secret_env A, B]"),
        # A value that overlaps itself.
        ({"A": "abab"}, "ababab.", "[redacted secret_env A]."),
        # Each line of a multi-line value, wherever the program prints it.
        (
            {"KEY": "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----\n"},
            "loaded MIIBOgIBAAJBAK from env",
            "loaded [redacted secret_env KEY] from env",
        ),
        # Shorter than MIN_LENGTH: would match ordinary text, so not redacted.
        ({"PIN": "123"}, "pid 123 exited", "pid 123 exited"),
        ({"A": "naïve-café"}, "value=naïve-café!", "value=[redacted secret_env A]!"),
        # A value its marker would show (here: its variable's name) gets a marker without names.
        ({"DB_PASS": "DB_PASS"}, "pass=DB_PASS", "pass=[redacted]"),
    ],
    ids=[
        "repeated",
        "absent",
        "overlapping",
        "nested",
        "self-overlap",
        "lines",
        "short",
        "utf8",
        "named-like-its-variable",
    ],
)
def test_every_occurrence_is_replaced_by_a_marker_naming_the_variable(
    values: dict[str, str], text: str, want: str
) -> None:
    """The text comes back with each occurrence replaced, and no value in it."""
    got = Redactor(values).text(text)
    assert got == want
    for value in values.values():
        if len(value) >= MIN_LENGTH:
            assert value not in got


def test_no_values_leaves_output_as_it_is() -> None:
    """A workload without secret_env: the output is passed through untouched."""
    assert Redactor().text("a\ufffdb") == "a\ufffdb"
    assert not Redactor({"SHORT": "ab"})


def test_merged_redactors_take_out_the_values_of_both() -> None:
    """The values a process started with and its current ones (a file changed since)."""
    r = Redactor({"A": "old-value"}).merged(Redactor({"A": "new-value"}))
    assert r.text("old-value new-value") == "[redacted secret_env A] [redacted secret_env A]"
    assert r.names == {"A"}


OUTPUT = b"start\nDB_PASS=hunter22 and token tok-abcdef-123\nend hunter2" + b"2\n"
VALUES = {"DB_PASS": "hunter22", "TOKEN": "tok-abcdef-123"}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, len(OUTPUT)])
def test_a_stream_cut_anywhere_is_redacted_as_a_whole(size: int) -> None:
    """A value split across chunks is still redacted; the concatenated output equals the
    output redacted in one piece."""
    r = Redactor(VALUES)
    stream = Streaming(r)
    chunks = [OUTPUT[i : i + size] for i in range(0, len(OUTPUT), size)]
    sent = b"".join(stream.feed(c) for c in chunks) + stream.flush()
    assert sent == r.scrub(OUTPUT)
    assert b"hunter22" not in sent and b"tok-abcdef-123" not in sent


def test_a_stream_holds_back_only_what_may_start_a_value() -> None:
    """Whole lines go out at once; only an end that could begin a value waits for more."""
    stream = Streaming(Redactor(VALUES))
    assert stream.feed(b"plain line\n") == b"plain line\n"
    assert stream.feed(b"pass: hun") == b"pass: "
    assert stream.feed(b"ter22\n") == b"[redacted secret_env DB_PASS]\n"
    assert stream.feed(b"end hu") == b"end "
    assert stream.flush() == b"hu"


def test_a_value_cut_by_the_edge_of_a_tail_is_not_recognised() -> None:
    """The documented limit: a tail that begins inside a value shows the rest of it."""
    assert Redactor(VALUES).text("nter22 failed") == "nter22 failed"


@pytest.mark.parametrize("size", [1, 3, 64, 4096])
def test_a_value_repeated_over_itself_is_sent_on_and_never_held_past_the_longest(
    size: int,
) -> None:
    """A value that overlaps itself, printed over and over ("aaaa" in a run of a's): the run
    is one secret, so markers go out as it grows, at most the longest value is held, and
    nothing of it is ever sent in clear."""
    r = Redactor({"PIN": "aaaa"})
    stream = Streaming(r)
    run = b"x" + b"a" * 10_000 + b"y"
    sent = b""
    for i in range(0, len(run), size):
        sent += stream.feed(run[i : i + size])
        assert len(stream._held) <= r.longest
    sent += stream.flush()
    assert sent.startswith(b"x[redacted secret_env PIN]") and sent.endswith(b"]y")
    assert b"aaaa" not in sent.replace(b"[redacted secret_env PIN]", b"")
    assert b"a" not in sent.replace(b"[redacted secret_env PIN]", b"").replace(b"x", b"")
