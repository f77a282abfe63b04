"""Reading a manifest as keelctl sends it: YAML or JSON, never a key given twice.

`load_manifest` reads the file `keelctl apply -f` names (only apply imports this module, and
YAML with it). Both parsers would keep the last of two equal keys (`{"name": "a", "name": "b"}`
means `b`), and keelctl re-encodes the document before sending it, so the control plane's own
check (`keel.spec.load_json`) would never see the duplicate. These hooks refuse it here, naming
the key.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from keel.ctl.args import CtlError
from keel.fields import key_name
from keel.spec import MAX_MANIFEST_BYTES


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


def load_manifest(filename: str, *, stdin: Any = None) -> object:
    """The document in filename ('-' = stdin), parsed as YAML (JSON is YAML too)."""
    label = "<stdin>" if filename == "-" else filename
    try:
        if filename == "-":
            text = (stdin if stdin is not None else sys.stdin).read()
        else:
            with open(filename, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CtlError(f"cannot read {label}: {getattr(e, 'strerror', None) or e}") from e
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MANIFEST_BYTES:
        raise CtlError(
            f"{label}: the manifest is {size} bytes; the control plane accepts at most "
            f"{MAX_MANIFEST_BYTES} bytes"
        )
    stripped = text.lstrip()
    if filename.endswith(".json") or stripped.startswith(("{", "[")):
        # Real JSON first: YAML refuses tab indentation, which JSON allows.
        try:
            return json.loads(text, object_pairs_hook=unique_pairs)
        except DuplicateKey as e:
            raise CtlError(f"{label}: {e}") from e
        except RecursionError as e:
            raise CtlError(f"{label}: not valid JSON: nested too deeply") from e
        except json.JSONDecodeError as e:
            if filename.endswith(".json"):
                raise CtlError(f"{label}:{e.lineno}: not valid JSON: {e.msg}") from e
    try:
        doc = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader
    except DuplicateKey as e:
        raise CtlError(f"{label}: {e}") from e
    except RecursionError as e:
        raise CtlError(f"{label}: not valid YAML: nested too deeply") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        if context:
            problem = f"{context}, {problem}"
        raise CtlError(f"{label}{line}: not valid YAML: {problem}") from e
    if doc is None:
        raise CtlError(f"{label}: the file holds no document")
    return doc
