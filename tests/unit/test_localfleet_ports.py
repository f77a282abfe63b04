"""The local fleet (`make run`) checks every port it will listen on before it starts anything:
a port another process holds is a LocalFleetError naming the port, its owner and what to do."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.localfleet import LocalFleetError, launcher, layout
from keel.localfleet.processes import check_port_free


@pytest.fixture
def held() -> Iterator[int]:
    """A loopback port this process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_taken_port_names_its_owner_and_the_way_out(held: int) -> None:
    with pytest.raises(LocalFleetError) as caught:
        check_port_free("127.0.0.1", held, hint="Stop it, or pass --listen with another port.")
    message = str(caught.value)
    assert f"127.0.0.1:{held} is already in use by pid {os.getpid()}" in message
    assert "Is another local fleet (`make run`) still running?" in message
    assert message.endswith("Stop it, or pass --listen with another port.")


def test_a_free_port_passes() -> None:
    check_port_free("127.0.0.1", _free_port(), hint="Unused.")


def test_a_taken_metrics_port_stops_the_fleet_before_it_starts(
    held: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control plane's metrics port taken (another `make run`, say): refused up front,
    with nothing started and no state dir written."""
    monkeypatch.setattr(layout, "CONTROLPLANE_METRICS", f"127.0.0.1:{held}")
    state = tmp_path / "keel"
    with pytest.raises(LocalFleetError) as caught:
        launcher.run(
            state_dir=state,
            workload=tmp_path / "web.yaml",
            listen=f"127.0.0.1:{_free_port()}",
        )
    assert f"127.0.0.1:{held} is already in use" in str(caught.value)
    assert "metrics ports (9464 and up) cannot be moved" in str(caught.value)
    assert not state.exists()
