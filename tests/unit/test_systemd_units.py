"""deploy/systemd/: the units load in systemd (`systemd-analyze verify`) and keep the settings
the operator guide promises: the agent's restart leaves workloads running (KillMode=process),
the control plane is sandboxed, and each starts the binary this package installs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/usr/local/bin/"  # where the units expect the console scripts (README: install)
BIN = Path(sys.executable).parent


def unit(name: str) -> dict[str, dict[str, str]]:
    # strict=False: a unit may repeat a key; the last one is what systemd uses for these.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return {section: dict(parser[section]) for section in parser.sections()}


@pytest.mark.parametrize("name", ["keel-controlplane.service", "keel-agent.service"])
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` passes. It insists the ExecStart binary exists, so the copy it
    checks starts the console script of this environment instead of /usr/local/bin's."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (it comes with systemd)")
    text = (UNITS / name).read_text()
    assert INSTALLED in text
    (tmp_path / name).write_text(text.replace(INSTALLED, f"{BIN}/"))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_restarting_the_agent_leaves_its_workloads_running() -> None:
    """Only the agent's own process is signalled; it restarts whatever made it exit."""
    service = unit("keel-agent.service")["Service"]
    assert service["KillMode"] == "process"
    assert service["Restart"] == "always"
    assert service["ExecStart"].startswith(f"{INSTALLED}keel-agent ")
    # A workload run as another user must reach its working directory under the state dir.
    assert service["StateDirectoryMode"] == "0711"


def test_the_control_plane_is_sandboxed() -> None:
    service = unit("keel-controlplane.service")["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectoryMode": "0700",
        "User": "keel",
    }.items():
        assert service[key] == value, key
    assert service["ExecStart"].startswith(f"{INSTALLED}keel-controlplane ")


def test_the_agent_keeps_only_the_sandboxing_its_workloads_can_live_with() -> None:
    """Workloads inherit the agent's sandbox: nothing that hides the file system from them."""
    service = unit("keel-agent.service")["Service"]
    assert service["NoNewPrivileges"] == "yes"
    for unfit in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "User"):
        assert unfit not in service, unfit
