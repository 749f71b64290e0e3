"""deploy/install.sh and uninstall.sh into a temporary root; `make dist`, the tarball they come in.

systemctl, useradd, getent and chown are stand-ins on PATH that record their calls,
so a test sees what the installer would do to the system without doing it. Each
release is a real venv with the real dependencies (from pip's cache after the
first run): two of them, most of this module's time; a third from a small wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
with (ROOT / "pyproject.toml").open("rb") as _pyproject:
    VERSION = tomllib.load(_pyproject)["project"]["version"]
STANDIN = """#!/bin/sh
# A stand-in for a system command: records the call; getent finds the user once
# useradd made it.
name=$(basename "$0")
echo "$name $*" >> "$STANDIN_LOG"
case $name in
    getent) [ -e "$STANDIN_LOG.user" ] ;;
    useradd) touch "$STANDIN_LOG.user" ;;
esac
"""


@dataclass(frozen=True)
class Ran:
    stdout: str
    systemctl: list[str]


@dataclass(frozen=True)
class Gateway:
    """A temporary root, and stand-ins that record what the installer asks of the system."""

    root: Path
    env: dict[str, str]
    log: Path

    def run(self, script: Path | str, *args: str, cwd: Path | None = None) -> Ran:
        self.log.write_text("")
        result = subprocess.run(
            [str(script), "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env=self.env,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        calls = self.log.read_text().splitlines()
        return Ran(
            result.stdout,
            [c.removeprefix("systemctl ") for c in calls if c.startswith("systemctl ")],
        )

    def current(self) -> str:
        return (self.root / "opt/edge-agent/bin").readlink().parent.name

    def releases(self) -> set[str]:
        return {p.name for p in (self.root / "opt/edge-agent/releases").iterdir()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """This tree as its release tarball unpacks: edge-agent-VERSION/, without what
    building and testing leave in a checkout (which the installer leaves out too)."""
    tree = tmp_path / f"edge-agent-{VERSION}"
    junk = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(
        ROOT, tree, symlinks=True, ignore=shutil.ignore_patterns(*junk, ".hypothesis", ".soak.log")
    )
    return tree


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    bin_dir = tmp_path / "standins"
    bin_dir.mkdir()
    standin = bin_dir / "standin"
    standin.write_text(STANDIN)
    standin.chmod(0o755)
    for name in ("systemctl", "useradd", "getent", "chown"):
        (bin_dir / name).symlink_to(standin)
    log = tmp_path / "system-calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STANDIN_LOG": str(log)}
    return Gateway(tmp_path / "root", env, log)


@pytest.fixture(scope="module")
def python_without_pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's python3 with python3-venv but not python3-pip: `-m pip` fails, venvs get pip."""
    env = tmp_path_factory.mktemp("python") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    return env / "bin" / "python"


def installed_file(gateway: Gateway, release: str, name: str) -> Path:
    (lib,) = (gateway.root / "opt/edge-agent/releases" / release / "lib").glob("python3*")
    return lib / "site-packages" / name


def small_wheel(directory: Path) -> Path:
    """A wheel of this version, as built elsewhere: the installer names it by its hash
    and hands it to pip, as it hands pip the source; without dependencies, it installs fast."""
    wheel = directory / f"edge_agent-{VERSION}-py3-none-any.whl"
    info = f"edge_agent-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("edge_agent/__init__.py", "")
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: edge-agent\nVersion: {VERSION}\n"
        )
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def assert_laid_out(gateway: Gateway, source: Path, installed: Ran) -> None:
    """What a first install leaves: docs/operations.md's table, and an agent that runs."""
    config = gateway.root / "etc/edge-agent/agent.yaml"
    assert config.read_text() == (source / "deploy/agent.example.yaml").read_text()
    unit = gateway.root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == (source / "deploy/systemd/edge-agent.service").read_text()
    assert (gateway.root / "etc/edge-agent/credentials").stat().st_mode & 0o777 == 0o700
    assert "created the system user edge-agent" in installed.stdout
    assert installed.systemctl == ["daemon-reload", "try-restart edge-agent.service"]
    agent = gateway.root / "opt/edge-agent/bin/edge-agent"
    checked = subprocess.run(
        [str(agent), "check", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def assert_uninstall_keeps_config_and_store(gateway: Gateway) -> None:
    config = gateway.root / "etc/edge-agent/agent.yaml"
    kept = config.read_text()
    store = gateway.root / "var/lib/edge-agent/store.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"readings the platform has not received")
    removed = gateway.run(gateway.root / "opt/edge-agent/share/uninstall.sh")
    assert removed.systemctl == ["disable --now edge-agent.service", "daemon-reload"]
    assert not (gateway.root / "opt/edge-agent").exists()
    assert not (gateway.root / "etc/systemd/system/edge-agent.service").exists()
    assert (config.read_text(), store.exists()) == (kept, True)


def test_reruns_upgrades_and_rollbacks_keep_two_releases_and_restart_only_on_a_change(
    gateway: Gateway, source: Path, python_without_pip: Path
) -> None:
    install = source / "deploy/install.sh"
    python = ("--python", str(python_without_pip))
    installed = gateway.run("deploy/install.sh", *python, cwd=source)  # as the guide has it
    assert_laid_out(gateway, source, installed)
    first = gateway.current()
    config = gateway.root / "etc/edge-agent/agent.yaml"
    config.write_text("# edited by the operator\n")
    again = gateway.run(install, *python)
    assert f"release {first} is already installed" in again.stdout
    assert "keeping the existing" in again.stdout
    assert (gateway.releases(), again.systemctl) == ({first}, [])
    assert config.read_text() == "# edited by the operator\n"

    init = source / "edge_agent/__init__.py"
    init.write_text(init.read_text() + "# a later change\n")
    upgrade = gateway.run(install, *python)
    second = gateway.current()
    assert second != first
    assert installed_file(gateway, second, "edge_agent/__init__.py").read_text() == (
        init.read_text()
    )
    assert (gateway.releases(), upgrade.systemctl) == (
        {first, second},
        ["try-restart edge-agent.service"],
    )

    third = gateway.run(install, *python)
    assert (gateway.current(), gateway.releases(), third.systemctl) == (
        second,
        {first, second},
        [],
    )

    back = gateway.run(gateway.root / "opt/edge-agent/share/install.sh", "--rollback")
    assert (gateway.current(), back.systemctl) == (first, ["try-restart edge-agent.service"])
    agent = gateway.root / "opt/edge-agent/bin/edge-agent"
    subprocess.run([str(agent), "schema"], capture_output=True, check=True)  # it runs

    forward = gateway.run(install, *python)  # the newer release is still there
    assert f"release {second} is already installed" in forward.stdout
    assert (gateway.current(), forward.systemctl) == (second, ["try-restart edge-agent.service"])

    wheel = small_wheel(source.parent)
    newest = f"{VERSION}-{hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]}"
    gateway.run(install, "--wheel", str(wheel), *python)
    assert (gateway.current(), gateway.releases()) == (newest, {second, newest})
    again = gateway.run(install, "--wheel", str(wheel), *python)
    assert f"release {newest} is already installed" in again.stdout
    assert again.systemctl == []

    assert_uninstall_keeps_config_and_store(gateway)


def test_a_python_without_ensurepip_is_refused_before_anything_is_done(
    tmp_path: Path, source: Path
) -> None:
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ensurepip'\")\n")
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shadow.parent} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    root = tmp_path / "root"
    result = subprocess.run(
        [str(source / "deploy/install.sh"), "--root", str(root), "--python", str(python)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (69, "")
    assert "apt-get install python3-venv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not root.exists()


def test_rollback_without_a_previous_release_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ROOT / "deploy/install.sh"), "--root", str(tmp_path), "--no-system", "--rollback"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no previous release" in result.stderr


def test_make_dist_packs_the_committed_tree_and_its_installer(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("make dist archives a git commit; this tree is not a checkout")
    subprocess.run(["make", "-s", "-C", str(ROOT), "dist", f"DIST={tmp_path}"], check=True)
    with tarfile.open(tmp_path / f"edge-agent-{VERSION}.tar.gz") as tar:
        files = {m.name: m for m in tar.getmembers() if not m.isdir()}
        commit = tar.pax_headers["comment"]  # git archive records its commit there
    committed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert set(files) == {f"edge-agent-{VERSION}/{name}" for name in committed}
    assert files[f"edge-agent-{VERSION}/deploy/install.sh"].mode & 0o111
