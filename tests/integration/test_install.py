"""deploy/install.sh and uninstall.sh into a temporary root: idempotent, keeps config and data.

The wheel is built once from this tree; each install makes a real venv and
installs it with its dependencies (from pip's cache after the first run).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
UNINSTALL = ROOT / "deploy" / "uninstall.sh"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("edge_agent-*.whl")
    return built


def rebuilt(wheel: Path, directory: Path) -> Path:
    """The same version with different content: what a new build is to the installer."""
    copy = directory / wheel.name
    shutil.copy(wheel, copy)
    with zipfile.ZipFile(copy, "a") as archive:
        archive.writestr("edge_agent-rebuild.txt", "a later build\n")
    return copy


def run(script: Path, *args: str) -> str:
    result = subprocess.run(
        ["sh", str(script), *args, "--no-system"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def current(root: Path) -> str:
    return (root / "opt/edge-agent/bin").readlink().parent.name


def test_install_twice_upgrade_roll_back_and_uninstall(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    run(INSTALL, "--root", str(root), "--wheel", str(wheel))
    first = current(root)
    config = root / "etc/edge-agent/agent.yaml"
    assert config.read_text() == (ROOT / "deploy/agent.example.yaml").read_text()
    assert (root / "etc/systemd/system/edge-agent.service").read_text() == (
        ROOT / "deploy/systemd/edge-agent.service"
    ).read_text()
    assert (root / "etc/edge-agent/credentials").stat().st_mode & 0o777 == 0o700
    agent = root / "opt/edge-agent/bin/edge-agent"
    checked = subprocess.run(
        [str(agent), "check", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr

    config.write_text("# edited by the operator\n")
    again = run(INSTALL, "--root", str(root), "--wheel", str(wheel))
    assert f"release {first} is already installed" in again
    assert "keeping the existing" in again
    assert config.read_text() == "# edited by the operator\n"

    run(INSTALL, "--root", str(root), "--wheel", str(rebuilt(wheel, tmp_path)))
    second = current(root)
    assert second != first
    assert sorted(p.name for p in (root / "opt/edge-agent/releases").iterdir()) == sorted(
        [first, second]
    )

    run(INSTALL, "--root", str(root), "--rollback")
    assert current(root) == first
    subprocess.run([str(agent), "schema"], capture_output=True, check=True)  # it runs

    store = root / "var/lib/edge-agent/store.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"readings the platform has not received")
    run(UNINSTALL, "--root", str(root))
    assert not (root / "opt/edge-agent").exists()
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert config.read_text() == "# edited by the operator\n"
    assert store.exists()


def test_rollback_without_a_previous_release_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(INSTALL), "--root", str(tmp_path), "--no-system", "--rollback"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no previous release" in result.stderr
