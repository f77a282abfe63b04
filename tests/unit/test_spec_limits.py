"""Every value of a manifest is range-checked before anything is written: the rules of
keel.fields and keel.quantities as keel.spec applies them, each refusal naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from keel.ctl.documents import DuplicateKey, UniqueKeyLoader, unique_pairs
from keel.spec import (
    MAX_DEPTH,
    MAX_MANIFEST_BYTES,
    SpecError,
    load_json,
    parse_manifest,
    parse_workload,
)


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web",
        "selector": {"role": "web"},
        "spec": {
            "command": ["sleep", "100"],
            "env": {"GREETING": "hello"},
            "resources": {"cpu": "100m", "memory": "64Mi"},
        },
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = base
        for key in parents:
            node = node[key]
        node[last] = value
    return base


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"spec__resources": {"cpu": "99999999999999999999999"}}, "spec.resources.cpu", "at most"),
        ({"spec__resources": {"cpu": 10**40}}, "spec.resources.cpu", "at most"),
        (
            {"spec__resources": {"memory": "99999999999999999999Ti"}},
            "spec.resources.memory",
            "at most",
        ),
        ({"replicas": 10**40}, "replicas", "<= 100000"),
        ({"replicas": -(10**5000)}, "replicas", ">= 0"),
        ({"max_surge": 2**31}, "max_surge", "<= 100000"),
        ({"deadline": "99999999999h"}, "deadline", "at most"),
        ({"spec__stop_grace": "9999999999999999999999s"}, "spec.stop_grace", "at most"),
        ({"name": "we\x00b"}, "name", "NUL"),
        ({"spec__command": ["sleep\x00", "1"]}, "spec.command[0]", "NUL"),
        ({"spec__command": ["sleep", "\ud800"]}, "spec.command[1]", "surrogate"),
        ({"spec__command": ["x" * 40_000]}, "spec.command[0]", "at most 32768 characters"),
        ({"spec__env": {"A": "x\x00y"}}, "spec.env.A", "NUL"),
        ({"spec__env": {"A\x00B": "x"}}, "spec.env.", "NUL"),
        ({"selector": {"role": "w\x00b"}}, "selector.role", "NUL"),
        ({"selector": {"role": "two\nlines"}}, "selector.role", "control characters"),
        ({"selector": {"role": "two\u2028lines"}}, "selector.role", "control characters"),
        ({"selector": {"role": "a\x85b"}}, "selector.role", "control characters"),
        ({"selector": {"role": "\u202eevil"}}, "selector.role", "control characters"),
        ({"selector": {"k" * 300: "v"}}, "selector.", "at most 253"),
        ({"selector": {"role": "v" * 300}}, "selector.role", "at most 253"),
        ({"selector": {"ro le": "web"}}, "selector.ro le", "not a valid name"),
        ({"name": "x" * 10_000}, "name", "at most 63"),
        ({"spec__colour\x00": "blue"}, "spec.'colour\\x00'", "unknown field"),
    ],
)
def test_out_of_range_or_unstorable_values_are_refused_naming_the_field(
    changes: dict[str, Any], field: str, rule: str
) -> None:
    """Each value Postgres or protobuf could not hold is a SpecError naming its field."""
    with pytest.raises(SpecError) as caught:
        parse_workload(doc(**changes))
    assert caught.value.field.startswith(field), caught.value
    assert rule in caught.value.rule, caught.value
    assert len(str(caught.value)) < 400, "the message echoes too much of the input"


def test_the_largest_accepted_resources_fit_int64_summed_over_every_replica() -> None:
    """At the limits, replicas x cpu and replicas x memory still fit a bigint."""
    from keel.quantities import MAX_CPU_MILLIS, MAX_MEMORY_MIB
    from keel.spec import MAX_REPLICAS

    assert MAX_CPU_MILLIS * MAX_REPLICAS < 2**63
    assert MAX_MEMORY_MIB * MAX_REPLICAS < 2**63
    w = parse_workload(doc(spec__resources={"cpu": "1000000", "memory": "1024Ti"}))
    assert w.spec.resources.cpu_millis == MAX_CPU_MILLIS
    assert w.spec.resources.memory_mib == MAX_MEMORY_MIB


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ('{"name": "a", "name": "b"}', "name", "given twice"),
        ('{"name": "a", "spec": {"env": {"A": "1", "A": "2"}}}', "A", "given twice"),
        ("[" * 100_000 + "]" * 100_000, "manifest_json", f"at most {MAX_DEPTH} levels"),
        ('{"name": "web", "replicas": NaN}', "manifest_json", "NaN"),
        ('{"name": "web", "replicas": ' + "9" * 5000 + "}", "manifest_json", "too many digits"),
        ("{not json", "manifest_json", "not valid JSON"),
        (" " * (MAX_MANIFEST_BYTES + 1), "manifest_json", f"at most {MAX_MANIFEST_BYTES} bytes"),
    ],
)
def test_manifest_text_is_refused_before_it_is_parsed_naming_the_rule(
    text: str, field: str, rule: str
) -> None:
    """Duplicate keys, deep nesting, NaN, huge numbers and oversized text: SpecError."""
    with pytest.raises(SpecError) as caught:
        parse_manifest(text)
    assert caught.value.field == field, caught.value
    assert rule in caught.value.rule, caught.value


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    """The depth scan skips strings: a command argument full of brackets is fine."""
    d = doc(spec__command=["echo", "[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{", '\\"[[['])
    assert load_json(json.dumps(d), "manifest_json") == d
    assert parse_manifest(json.dumps(d)).spec.command[1].startswith("[[[")


def test_keelctl_refuses_duplicate_keys_in_yaml_and_json() -> None:
    """keelctl re-encodes the document, so it refuses duplicates itself, naming the key."""
    with pytest.raises(DuplicateKey, match="line 2: name: given twice"):
        yaml.load("name: a\nname: b\n", Loader=UniqueKeyLoader)
    with pytest.raises(DuplicateKey, match="name: given twice"):
        json.loads('{"name": "a", "name": "b"}', object_pairs_hook=unique_pairs)
    assert yaml.load("a: {b: 1}\nc: [1, 2]\n", Loader=UniqueKeyLoader) == {
        "a": {"b": 1},
        "c": [1, 2],
    }


def test_an_operators_reason_is_refused_with_what_an_alerts_reason_has_replaced() -> None:
    """One rule for a line a person reads: `convert.reason` refuses it from an operator, and
    `fields.one_line` (text from Alertmanager) replaces it."""
    from controlplane.convert import reason
    from keel.fields import one_line

    for bad in ("a\u2028b", "a\x85b", "a\u202eb", "a\u2066b", "a\x9bb", "a\x7fb", "a\tb"):
        with pytest.raises(SpecError, match=r"^reason: must not contain control characters"):
            reason(bad)
        assert reason(one_line(bad, 1024)) == "a b"
