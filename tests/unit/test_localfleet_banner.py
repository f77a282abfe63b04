"""What the local fleet (`make run`) prints once it is up: the replicas' metrics addresses read
as a person would write them, and a workload kept from an earlier run is named as kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.localfleet import layout


@pytest.mark.parametrize(
    ("replicas", "says", "never"),
    [
        (1, "(control plane)", "replica"),
        (2, "(control plane; replica 2: 127.0.0.1:9468)", "9468-"),
        (3, "(control plane; replicas 2-3: 127.0.0.1:9468-9469)", "replica 2:"),
    ],
)
def test_the_banner_names_the_replicas_metrics_without_a_range_of_one(
    replicas: int, says: str, never: str
) -> None:
    """One extra replica is "replica 2: ADDRESS", not "replicas 2-2: ...:9468-9468"."""
    text = layout.banner("127.0.0.1:7443", Path("/s"), Path("/s/logs"), "web", replicas)
    assert f"http://{layout.CONTROLPLANE_METRICS}/metrics {says}" in text
    assert never not in text.split("Metrics:")[1].splitlines()[0]


def test_a_workload_kept_from_an_earlier_run_is_named_in_the_banner() -> None:
    """The note says it was left as it is and how to apply the example on purpose."""
    note = layout.kept_note("web", Path("examples/web.yaml"), {"generation": 5})
    assert note == (
        "web exists (generation 5) from an earlier run: left as it is, examples/web.yaml not "
        "applied again (keelctl apply -f examples/web.yaml does it)"
    )
    text = layout.banner("127.0.0.1:7443", Path("/s"), Path("/s/logs"), "web", kept=note)
    assert f"\n{note}.\n" in text
    fresh = layout.banner("127.0.0.1:7443", Path("/s"), Path("/s/logs"), "web")
    assert "earlier run" not in fresh
