"""`edge-agent demo`: broker, simulated tank farm and agent on loopback, and nothing left behind.

It runs from the built wheel, not the source tree: the demo's site and plant
must ship in the package (`edge-agent demo` from an installed package).

The demo runs as a real process for 38 s: long enough for the scenario's gas
leak (H crossed about 11 s in, cleared by about 28 s), frozen flow
transmitter (STUCK about 24-30 s) and cut 4-20 mA wire (FAULT 26-31 s) to
raise and clear their alarms. While it runs, the test records every process descended from it
(Mosquitto, the simulator, the agent), so that afterwards it can prove each
one is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.demo.broker import find_mosquitto

DURATION_S = 38
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.broker


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    started: int
    """Start time in clock ticks since boot: tells a pid from a later reuse of it."""
    state: str
    args: str


def processes() -> dict[int, Proc]:
    """Every process visible in /proc, by pid."""
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        found[pid] = Proc(pid, int(fields[1]), int(fields[19]), fields[0], args.strip())
    return found


def descendants(root: int, table: dict[int, Proc]) -> list[Proc]:
    """The processes below `root`, children first."""
    below: list[Proc] = []
    parents = {root}
    while True:
        layer = [p for p in table.values() if p.ppid in parents and p not in below]
        if not layer:
            return below
        below += layer
        parents = {p.pid for p in layer}


def alive(proc: Proc, table: dict[int, Proc]) -> bool:
    """The same process (same pid and start time) still exists and is not a zombie."""
    now = table.get(proc.pid)
    return now is not None and now.started == proc.started and now.state != "Z"


def assert_alarms_shown(lines: list[str], report: str) -> None:
    """The leak's first and second level, the frozen flow and the cut wire: each raised,
    then cleared."""
    for kind, tag in (
        ("level1", "GT201"),  # as config/demo.yaml names the gas detector's H and HH
        ("level2", "GT201"),
        ("STUCK", "FT101"),
        ("FAULT", "GT202"),
    ):
        shown = [
            state
            for line in lines
            for state in ("RAISED", "CLEARED")
            if re.search(rf"ALARM .* {state} +{kind} +HZ01\.{tag} ", line)
        ]
        assert shown[:2] == ["RAISED", "CLEARED"], f"{kind} of {tag}: {shown}\n{report}"


def assert_output(stdout: str, report: str) -> None:
    """Readings, the alarms, the legend of the quality marks and the closing summary."""
    lines = stdout.splitlines()
    readings = [line for line in lines if re.search(r"\brt\s+seq\s+\d+", line)]
    assert len(readings) >= 10, report
    assert any("HZ01.GT201=" in line for line in readings), report
    assert_alarms_shown(lines, report)
    assert "quality marks:" in stdout, report
    assert len([line for line in lines if "gateway OFFLINE" in line]) <= 1, report
    assert re.search(r"alarms \d+ raised and \d+ cleared", stdout), report
    assert re.search(r"seq 1-\d+, no gap", stdout), report


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree, unpacked where an installation would put it."""
    built = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(built), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = built.glob("*.whl")
    site = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_installs_the_drivers_under_the_products_name(installed: Path) -> None:
    # A top-level `drivers` in site-packages would clash with any other project's.
    assert sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")) == [
        "edge_agent"
    ]
    drivers = installed / "edge_agent" / "drivers"
    assert drivers.is_dir()
    assert not drivers.is_symlink()
    assert (drivers / "py.typed").is_file()
    assert (drivers / "simulator" / "scenarios" / "demo.yaml").is_file()


@pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed")
def test_the_demo_shows_readings_and_an_alarm_raised_and_cleared_and_leaves_no_process(
    tmp_path: Path, installed: Path
) -> None:
    """`edge-agent demo --duration 38`, from the installed package outside the source tree,
    prints rt, RAISED and CLEARED and a summary, exits 0, leaves no process and keeps its
    logs."""
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "demo", "--duration", str(DURATION_S)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(installed)},
        )
    seen: dict[int, Proc] = {}
    code: int | None = None
    try:
        deadline = time.monotonic() + DURATION_S + 30
        while (code := demo.poll()) is None and time.monotonic() < deadline:
            for proc in descendants(demo.pid, processes()):
                seen.setdefault(proc.pid, proc)
            time.sleep(0.25)
        if code is None:
            demo.send_signal(signal.SIGTERM)  # its own clean stop, then the hard way
            try:
                demo.wait(20)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
        table = processes()
        leftovers = [p for p in seen.values() if alive(p, table)]
    finally:
        # A failing run must not leave its children behind for the next test.
        for proc in seen.values():
            if alive(proc, processes()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    report = f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert code == 0, f"the demo did not exit 0 within {DURATION_S + 30} s (code {code})\n{report}"

    assert_output(stdout, report)

    kinds = {
        "mosquitto": [p for p in seen.values() if "mosquitto" in p.args],
        "simulator": [p for p in seen.values() if "edge_agent simulate" in p.args],
        "agent": [p for p in seen.values() if "edge_agent run" in p.args],
    }
    assert all(kinds.values()), f"children not seen while the demo ran: {kinds}"
    assert not leftovers, f"left running after the demo exited: {leftovers}"

    # Nothing anywhere still uses the demo's working directory, and its logs are kept.
    banner = re.search(r"logs in (\S+?);", stdout)
    assert banner, report
    workdir = banner.group(1)
    users = [p for p in processes().values() if workdir in p.args and p.pid != os.getpid()]
    assert not users, f"processes still using {workdir}: {users}"
    assert (Path(workdir) / "agent.log").stat().st_size > 0
    assert f"kept in {workdir}" in stdout, report
    shutil.rmtree(workdir)
