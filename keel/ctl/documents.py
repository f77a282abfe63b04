"""Reading a manifest as keelctl sends it: YAML or JSON, never a key given twice.

Both parsers would keep the last of two equal keys (`{"name": "a", "name": "b"}` means `b`),
and keelctl re-encodes the document before sending it, so the control plane's own check
(`keel.spec.load_json`) would never see the duplicate. These hooks refuse it here, naming the
key. `keel.ctl.main.load_manifest` uses them.
"""

from __future__ import annotations

from typing import Any

import yaml

from keel.fields import key_name


class DuplicateKey(ValueError):
    """A mapping in the manifest names the same key twice."""

    def __init__(self, key: object, line: int | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{key_name(key)}: given twice in the same mapping")


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: a dict, or DuplicateKey."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKey instead of keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let SafeLoader report it
                break
            if duplicate:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
