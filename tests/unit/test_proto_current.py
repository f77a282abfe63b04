"""The committed keel/v1 modules are what `make proto` makes from proto/keel/v1 today."""

from __future__ import annotations

from keel.protogen import stale_files


def test_generated_modules_match_the_proto_files() -> None:
    """keel/v1 is regenerated after every .proto change (run `make proto` when this fails)."""
    assert stale_files() == [], "keel/v1 is stale: run `make proto` and commit the result"
