"""deploy/systemd/edge-agent.service: hardened (exposure <= 2.0) and clean for systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.runtime import SHUTDOWN_S
from edge_agent.service.local import SYSTEM_DIRECTORY

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "edge-agent.service"
INSTALLED_BINARY = "/opt/edge-agent/bin/edge-agent"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_exposure_is_at_most_2_0() -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def test_verify_is_clean_with_the_test_venvs_binary(tmp_path: Path) -> None:
    """A copy whose ExecStart is this venv's edge-agent, so verify can check that it exists."""
    binary = Path(sys.executable).parent / "edge-agent"
    assert binary.exists(), "the project is not installed in this venv"
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_BINARY in text
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)), encoding="utf-8")
    result = analyze("verify", str(copy))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_the_unit_promises_what_the_agent_keeps() -> None:
    """Readiness and watchdog by sd_notify from the main process; a bad config (78) is final."""
    settings = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30s"
    assert settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"] == "78"
    assert settings["User"] == "edge-agent"
    # The status socket's directory, where `edge-agent status` looks (service/local.py).
    assert Path("/run", settings["RuntimeDirectory"]) == SYSTEM_DIRECTORY
    # The agent's own stop bound, with room for the interpreter to start and exit.
    assert float(settings["TimeoutStopSec"].removesuffix("s")) >= SHUTDOWN_S + 5
