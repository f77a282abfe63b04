"""controlplane.secrets: the key file and sealing (deterministic, bound to workload and
variable, several keys for rotation), with errors that name the key and never a value."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controlplane.secrets import (
    SecretBox,
    SecretKeyError,
    SecretsUnopenable,
    load_or_create,
    new_key_line,
)
from keel.model import SecretValue, WorkloadSpec

SECRET = "correct-horse-battery"


def spec(**secrets: SecretValue) -> WorkloadSpec:
    return WorkloadSpec(command=("/bin/true",), secret_env=dict(secrets))


def box(path: Path) -> SecretBox:
    return load_or_create(path, on_open_failure=lambda: None)


def test_first_start_creates_a_key_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The key file is created 0600 and read back the same on the next start."""
    path = tmp_path / "state" / "secret.key"
    first = box(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert box(path).sealing_key_id == first.sealing_key_id


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    box(path)
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        box(path)


def test_a_line_that_is_not_a_key_is_refused_by_line_number(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("# comment\nnot-a-key\n")
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match="line 2"):
        box(path)


def test_sealing_is_deterministic_and_a_changed_value_changes_the_text(tmp_path: Path) -> None:
    """Same value, same text (an unchanged apply stays unchanged); another value, another."""
    b = box(tmp_path / "k")
    one = b.seal("db", spec(P=SecretValue(value=SECRET)))
    assert one == b.seal("db", spec(P=SecretValue(value=SECRET)))
    assert one != b.seal("db", spec(P=SecretValue(value=SECRET + "!")))
    sealed = one.secret_env["P"].sealed
    assert sealed is not None and SECRET not in sealed and not one.plain_secrets()
    assert b.open("db", one).secret_env["P"] == SecretValue(value=SECRET)


def test_files_pass_through_sealing_untouched(tmp_path: Path) -> None:
    b = box(tmp_path / "k")
    s = spec(F=SecretValue(file="/etc/x"))
    assert b.seal("db", s) == s and b.open("db", s) == s


def test_a_text_moved_to_another_workload_or_variable_does_not_open(tmp_path: Path) -> None:
    """Associated data binds a text to its workload and variable."""
    b = box(tmp_path / "k")
    sealed = b.seal("db", spec(P=SecretValue(value=SECRET))).secret_env["P"]
    failures: list[int] = []
    b2 = load_or_create(tmp_path / "k", on_open_failure=lambda: failures.append(1))
    with pytest.raises(SecretsUnopenable) as err:
        b2.open("web", spec(P=sealed))
    assert "workload web: secret_env.P" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(SecretsUnopenable):
        b2.open("db", spec(Q=sealed))
    assert len(failures) == 2


def test_a_rotated_key_file_opens_old_texts_and_seals_with_the_new_key(tmp_path: Path) -> None:
    """New key first, old key kept: old texts open, new ones use the new key."""
    path = tmp_path / "k"
    old = box(path)
    sealed = old.seal("db", spec(P=SecretValue(value=SECRET)))
    path.write_text(new_key_line() + "\n" + path.read_text())
    rotated = box(path)
    assert rotated.sealing_key_id != old.sealing_key_id
    assert rotated.open("db", sealed).secret_env["P"].value == SECRET
    resealed = rotated.seal("db", spec(P=SecretValue(value=SECRET))).secret_env["P"].sealed
    assert resealed is not None and rotated.sealing_key_id in resealed


def test_without_the_key_that_sealed_a_value_the_error_names_the_key(tmp_path: Path) -> None:
    sealed = box(tmp_path / "a").seal("db", spec(P=SecretValue(value=SECRET)))
    other = box(tmp_path / "b")
    with pytest.raises(SecretsUnopenable, match="does not hold") as err:
        other.open("db", sealed)
    assert "runbooks/secret-key.md" in str(err.value) and SECRET not in str(err.value)
