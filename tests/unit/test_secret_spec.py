"""spec.secret_env and spec.user: the rules at apply, errors that never quote a secret, and
what a document (keelctl describe) and the wire show of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel import convert
from keel.model import SecretValue, WorkloadSpec
from keel.spec import SpecError, parse_manifest, parse_workload, workload_to_doc
from keel.spec_secrets import REDACTED

SECRET = "hunter2-s3cr3t"


def doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"command": ["/bin/true"]}
    base.update(spec)
    return {"name": "db", "spec": base}


def test_a_value_and_a_file_reference_parse() -> None:
    """A string is the value; {file: PATH} names a file on the host."""
    w = parse_workload(doc(secret_env={"DB_PASS": SECRET, "TOKEN": {"file": "/etc/keel/t"}}))
    assert w.spec.secret_env == {
        "DB_PASS": SecretValue(value=SECRET),
        "TOKEN": SecretValue(file="/etc/keel/t"),
    }
    assert SECRET not in repr(w)


@pytest.mark.parametrize(
    ("secret_env", "field", "rule"),
    [
        ({"1BAD": "x"}, "spec.secret_env.1BAD", "not a valid name"),
        ({"A" * 300: "x"}, "spec.secret_env." + "'" + "A" * 40 + "...'", "at most 253"),
        ({"KEEL_X": "x"}, "spec.secret_env.KEEL_X", "reserved for Keel"),
        ({"A": 5}, "spec.secret_env.A", "must be a string or {file: PATH}, got integer"),
        ({"A": {"file": "rel/path"}}, "spec.secret_env.A.file", "must be an absolute path"),
        ({"A": {"file": ""}}, "spec.secret_env.A.file", "required"),
        ({"A": {"path": "/x"}}, "spec.secret_env.A.path", "unknown field"),
        ({"A": REDACTED}, "spec.secret_env.A", "the placeholder keelctl shows"),
        ({"A": "x" * 40_000}, "spec.secret_env.A", "at most"),
        ({"A": "a\x00b"}, "spec.secret_env.A", "NUL"),
    ],
)
def test_bad_secret_env_names_the_field_and_the_rule(
    secret_env: dict[str, Any], field: str, rule: str
) -> None:
    """Each rule refuses with the field and the rule."""
    with pytest.raises(SpecError) as err:
        parse_workload(doc(secret_env=secret_env))
    assert err.value.field == field
    assert rule in err.value.rule


def test_a_variable_is_either_plain_or_secret() -> None:
    """The same name in env and secret_env is refused."""
    with pytest.raises(SpecError, match="either plain or secret") as err:
        parse_workload(doc(env={"A": "1"}, secret_env={"A": SECRET}))
    assert err.value.field == "spec.secret_env.A"


def test_no_error_quotes_a_secret_value() -> None:
    """A value refused for its size or characters is never echoed back."""
    for bad in (SECRET * 3000, SECRET + "\x00"):
        with pytest.raises(SpecError) as err:
            parse_manifest(json.dumps(doc(secret_env={"A": bad})))
        assert SECRET not in str(err.value)


def test_a_command_cannot_expand_a_secret() -> None:
    """${SECRET} in the command line would show the value to every user of the host."""
    with pytest.raises(SpecError, match="visible to every user") as err:
        parse_workload(doc(command=["/bin/app", "--pass=${DB_PASS}"], secret_env={"DB_PASS": "x"}))
    assert err.value.field == "spec.command[1]"


@pytest.mark.parametrize("user", ["nobody", "www-data", "_svc", "app.user", "a" * 32])
def test_a_user_name_is_accepted(user: str) -> None:
    assert parse_workload(doc(user=user)).spec.user == user


@pytest.mark.parametrize("user", ["", "Root", "1000", "a b", "a" * 33, "x;rm", 5])
def test_a_bad_user_names_the_field_and_the_rule(user: object) -> None:
    with pytest.raises(SpecError) as err:
        parse_workload(doc(user=user))
    assert err.value.field == "spec.user"


def test_described_workload_shows_sealed_values_redacted_and_cannot_be_applied_back() -> None:
    """A sealed value is REDACTED in the document; applying that document is refused."""
    w = parse_workload(doc(secret_env={"A": {"file": "/run/a"}}, user="nobody"))
    sealed = WorkloadSpec(
        command=w.spec.command,
        secret_env={"A": SecretValue(file="/run/a"), "B": SecretValue(sealed="keel1:x:y")},
        user="nobody",
    )
    shown = workload_to_doc(type(w)(name="db", spec=sealed))
    assert shown["spec"]["secret_env"] == {"A": {"file": "/run/a"}, "B": REDACTED}
    assert shown["spec"]["user"] == "nobody"
    with pytest.raises(SpecError, match="placeholder"):
        parse_workload(shown)


def test_round_trip_with_plain_values() -> None:
    """parse(doc(w)) == w holds with secret_env and user."""
    w = parse_workload(doc(secret_env={"A": SECRET, "B": {"file": "/b"}}, user="nobody"))
    assert parse_workload(workload_to_doc(w)) == w


def test_a_spec_without_them_stores_as_before() -> None:
    """Absent fields are not written: a stored spec from before compares equal (no roll)."""
    stored = parse_workload(doc()).spec.to_json()
    assert "secret_env" not in stored and "user" not in stored
    assert WorkloadSpec.from_json(stored) == parse_workload(doc()).spec


def test_the_wire_carries_a_value_a_file_or_redacted() -> None:
    """spec_to_pb: a plain value as is (the agent's assignment), a sealed one as redacted."""
    spec = WorkloadSpec(
        command=("/bin/true",),
        secret_env={
            "V": SecretValue(value=SECRET),
            "F": SecretValue(file="/f"),
            "S": SecretValue(sealed="keel1:abc:zzz"),
        },
        user="nobody",
    )
    msg = convert.spec_to_pb(spec)
    assert msg.secret_env["V"].value == SECRET
    assert msg.secret_env["F"].file == "/f"
    assert msg.secret_env["S"].redacted and "keel1" not in str(msg)
    back = convert.spec_from_pb(msg)
    assert back.secret_env["V"] == SecretValue(value=SECRET)
    assert back.secret_env["F"] == SecretValue(file="/f")
    assert back.secret_env["S"] == SecretValue(sealed="")
    assert back.user == "nobody"
