"""`edge-agent top` against a running agent on the simulator, in an 80-column terminal.

The view runs on a pseudo-terminal, as over SSH: it is read as the bytes a
terminal would get, and quit with the keys a person presses.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Rig, agent_config
from live import device, start_live

from edge_agent.cli import EX_OK, STATUS_NOT_RUNNING
from edge_agent.demo.broker import free_port

pytestmark = pytest.mark.broker

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"
CURSOR_HOME = "\x1b[H"


@dataclass
class Terminal:
    """`edge-agent top` on a pseudo-terminal of 80 x 40."""

    process: subprocess.Popen[bytes]
    master: int
    slave: int
    output: bytes = b""

    def screen_text(self) -> str:
        return ESCAPES.sub("", self.output.decode(errors="replace"))

    def whole_screens(self) -> list[list[str]]:
        """Each screen drawn (from the cursor's return home), as lines; the last one drawn
        may still be coming, and is left out."""
        drawn = self.output.decode(errors="replace").split(CURSOR_HOME)[1:-1]
        return [ESCAPES.sub("", screen).split("\r\n") for screen in drawn]

    def read_until(self, pattern: str, within: float = 10.0) -> re.Match[str]:
        """The first match of `pattern` in what the terminal showed, waiting for it."""
        deadline = time.monotonic() + within
        while (found := re.search(pattern, self.screen_text())) is None:
            assert time.monotonic() < deadline, self.screen_text()[-2000:]
            self.read(0.2)
        return found

    def read(self, wait: float) -> bool:
        """Take what the terminal got within `wait`; False when nothing came."""
        if not select.select([self.master], [], [], wait)[0]:
            return False
        self.output += os.read(self.master, 65536)
        return True

    def exit_code(self, within: float = 5.0) -> int:
        """Wait for the program to end, and take all it wrote."""
        deadline = time.monotonic() + within
        while self.process.poll() is None and time.monotonic() < deadline:
            self.read(0.05)
        while self.read(0.05):
            pass
        return self.process.wait(0.1)


@pytest.fixture
def terminal(rig: Rig, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    """`top` on a terminal of 80 columns and 40 rows, or the rows a test's `rows` mark gives."""
    rows = mark.args[0] if (mark := request.node.get_closest_marker("rows")) else 40
    config, _ = start_live(rig)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 80, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "top", str(config)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    yield Terminal(process, master, slave)
    if process.poll() is None:
        process.kill()
        process.wait()
    os.close(master)
    os.close(slave)


def counters(shown: str) -> set[int]:
    return {int(n) for n in re.findall(r"HZ01\.CNT +(\d+) ", shown)}


def test_top_shows_values_as_they_change_and_the_alarm_and_quits_on_q(
    terminal: Terminal,
) -> None:
    terminal.read_until(r"HZ01\.CNT +\d+ ")
    terminal.read_until(r"HZ01\.LT101 +16\.0 +m +good +H")
    terminal.read_until(r"HZ01\.MSG +'<script>x</script>' +good")
    terminal.read_until(r"ACTIVE ALARM +KIND.*\n.*HZ01\.LT101 +H +16 m +15 m")
    deadline = time.monotonic() + 5
    while len(counters(terminal.screen_text())) < 2:
        assert time.monotonic() < deadline, "the counter did not move on the screen"
        terminal.read(0.2)
    screens = terminal.whole_screens()
    assert screens
    assert all(len(line) <= 80 for screen in screens for line in screen)

    os.write(terminal.master, b"q")
    assert terminal.exit_code() == EX_OK
    assert terminal.output.rstrip().endswith(LEAVE_ALTERNATE_SCREEN), "the shell's screen is back"
    modes = termios.tcgetattr(terminal.slave)[3]
    assert modes & termios.ICANON, "the terminal reads lines again"
    assert modes & termios.ECHO, "and echoes them"


@pytest.mark.rows(12)
def test_top_scrolls_what_does_not_fit_a_short_terminal(terminal: Terminal) -> None:
    terminal.read_until(r"lines 1-10 of \d+: arrows/PgUp/PgDn scroll")
    assert "HZ01.MSG" not in terminal.screen_text(), "the tags come after the alarms and uplink"
    os.write(terminal.master, b"\x1b[F")  # End
    terminal.read_until(r"HZ01\.MSG +'<script>x</script>' +good")
    os.write(terminal.master, b"q")
    assert terminal.exit_code() == EX_OK


def test_top_quits_cleanly_on_ctrl_c(terminal: Terminal) -> None:
    terminal.read_until(r"HZ01\.CNT +\d+ ")
    terminal.process.send_signal(signal.SIGINT)  # what the terminal sends for Ctrl-C
    assert terminal.exit_code() == EX_OK
    assert "Traceback" not in terminal.screen_text()
    assert terminal.output.rstrip().endswith(LEAVE_ALTERNATE_SCREEN)


def test_top_says_so_and_fails_when_no_agent_answers(tmp_path: Path) -> None:
    metrics = {"listen": f"127.0.0.1:{free_port()}"}
    config = agent_config(tmp_path, free_port(), [device(free_port())], metrics=metrics)
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "top", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == STATUS_NOT_RUNNING
    assert done.stdout == ""
    assert done.stderr.startswith("edge-agent top: no agent of gateway GW-TEST-01 answers (")
    assert "is it running?" in done.stderr
