"""agent.secretenv and agent.runtime.identity: the values and the user a start uses, and
the errors that keep an instance from starting (naming the file or user, never a value)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import StartFailed
from agent.runtime.identity import resolve
from agent.secretenv import MAX_SECRET_FILE_BYTES, redactor, secret_values, withheld
from keel.model import SecretValue, WorkloadSpec
from keel.redact import Redactor


def spec(**secrets: SecretValue) -> WorkloadSpec:
    return WorkloadSpec(command=("/bin/true",), secret_env=dict(secrets))


def test_values_and_files_resolve_with_one_trailing_newline_dropped(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_text("from-file\n")
    got = secret_values(spec(A=SecretValue(value="plain"), B=SecretValue(file=str(f))))
    assert got == {"A": "plain", "B": "from-file"}


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (None, "cannot read"),
        (b"x" * (MAX_SECRET_FILE_BYTES + 1), "larger than"),
        (b"a\x00b", "NUL"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_an_unusable_file_fails_the_start_naming_variable_and_path(
    tmp_path: Path, content: bytes | None, rule: str
) -> None:
    f = tmp_path / "s"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(StartFailed, match=rule) as err:
        secret_values(spec(DB=SecretValue(file=str(f))))
    assert "secret_env.DB: " in str(err.value) and str(f) in str(err.value)


def test_a_value_that_arrived_sealed_fails_the_start() -> None:
    with pytest.raises(StartFailed, match="without its value"):
        secret_values(spec(DB=SecretValue(sealed="")))


def test_no_user_and_the_agents_own_user_need_no_change() -> None:
    assert resolve("") is None
    import pwd

    assert resolve(pwd.getpwuid(os.geteuid()).pw_name) is None


def test_an_unknown_user_fails_the_start_with_the_name() -> None:
    with pytest.raises(StartFailed, match=r"'no-such-user-keel' .* does not exist"):
        resolve("no-such-user-keel")


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_as_root_another_user_resolves_to_its_ids() -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    run_as = resolve("nobody")
    assert run_as is not None
    assert (run_as.uid, run_as.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert nobody.pw_gid in run_as.groups


def test_redactor_knows_started_and_current_values_and_names_the_unknown(tmp_path: Path) -> None:
    """What is redacted from an instance's output: the values its process started with and
    those its spec resolves to now; a variable known neither way is named (output withheld)."""
    f = tmp_path / "token"
    f.write_text("token-now\n")
    s = spec(A=SecretValue(value="plain-value"), B=SecretValue(file=str(f)))
    r, unknown = redactor(s, Redactor({"B": "token-then"}))
    assert unknown == []
    assert r.text("plain-value token-now token-then") == (
        "[redacted secret_env A] [redacted secret_env B] [redacted secret_env B]"
    )
    f.unlink()
    assert redactor(s, Redactor({"B": "token-then"}))[1] == []
    assert redactor(s, Redactor())[1] == ["B"]
    assert "secret_env.B" in withheld(["B"])
