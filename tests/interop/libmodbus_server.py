"""The libmodbus server of the interop tests: its register map, its build, its processes.

`libmodbus/mbserver.c` is a Modbus server on libmodbus 3.1.6, a C stack the
agent meets in the field (embedded Linux gateways, serial device firmware). Its
register map is mirrored here, so the tests name expected values in one place:
keep `KNOWN` here, `FIXED` in mbserver.c and the comment atop it in step.

Hazards:
- The binary is compiled once per source version into a build directory keyed by
  the hash of the source and of libmodbus' compiler flags; a changed source is
  built anew, an unchanged one never.
- Every process is started in a session of its own and ended by its process
  group, so socat's forked children (one per TCP connection) go with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_agent.demo.broker import free_port

SOURCE = Path(__file__).resolve().parent / "libmodbus" / "mbserver.c"
INSTALL_HINT = (
    "run `make test` (it installs them as root) or "
    "`sudo apt-get install libmodbus-dev socat pkg-config gcc`"
)
HOST = "127.0.0.1"
START_TIMEOUT = 10.0

Transport = Literal["tcp", "rtu", "rtu-over-tcp"]


class StartServer(Protocol):
    """The `libmodbus_server` fixture: start mbserver with these options (mbserver.c)."""

    def __call__(self, *args: str, transport: Transport = "tcp") -> MbServer: ...


# --- the register map (mbserver.c, top comment) -------------------------------------------

REGISTERS = 200
"""hr:0..199 and ir:0..199 exist; a read past them is exception 2 from libmodbus itself."""
BITS = 64
"""co:0..63 and di:0..63 exist."""
UNIT_REGISTER = 109
"""hr:109 holds the unit id that answered: a reply meant for another unit shows here."""


def _float32(value: float) -> float:
    """What a float32 register pair holds of `value`."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


FLOAT32 = _float32(21.3)
UINT64 = 2**53 + 1
"""9007199254740993: the first integer a JSON number (an IEEE double) cannot hold."""


@dataclass(frozen=True, slots=True)
class Known:
    """A value at a fixed address, for decoding tests."""

    name: str
    address: str
    type: str
    byte_order: str
    value: float | int | str
    words: tuple[int, ...]
    """The registers as mbserver.c writes them, by hand (not libmodbus' float helpers)."""


KNOWN: tuple[Known, ...] = (
    Known("F32.ABCD", "hr:100", "float32", "ABCD", FLOAT32, (0x41AA, 0x6666)),
    Known("F32.CDAB", "hr:102", "float32", "CDAB", FLOAT32, (0x6666, 0x41AA)),
    Known("U64.ABCD", "hr:104", "uint64", "ABCD", UINT64, (0x0020, 0, 0, 1)),
    Known("I16", "hr:108", "int16", "ABCD", -1234, (0xFB2E,)),
    Known("F32.BADC", "hr:110", "float32", "BADC", FLOAT32, (0xAA41, 0x6666)),
    Known("F32.DCBA", "hr:112", "float32", "DCBA", FLOAT32, (0x6666, 0xAA41)),
    Known("I32.ABCD", "hr:114", "int32", "ABCD", -123456789, (0xF8A4, 0x32EB)),
    Known("F64.ABCD", "hr:116", "float64", "ABCD", 21.3, (0x4035, 0x4CCC, 0xCCCC, 0xCCCD)),
    Known("I64.ABCD", "hr:120", "int64", "ABCD", -UINT64, (0xFFDF, 0xFFFF, 0xFFFF, 0xFFFF)),
    Known("NAME", "hr:124", "string", "ABCD", "TK-101", (0x544B, 0x2D31, 0x3031, 0)),
    Known("IR.F32.ABCD", "ir:100", "float32", "ABCD", FLOAT32, (0x41AA, 0x6666)),
)


def holding(i: int, unit: int = 1) -> int:
    """hr:i of `unit` as served, fixed values included."""
    if i == UNIT_REGISTER:
        return unit
    for known in KNOWN:
        area, start = known.address.split(":")
        if area == "hr" and int(start) <= i < int(start) + len(known.words):
            return known.words[i - int(start)]
    return 3 * i + 1


def input_register(i: int) -> int:
    return {100: 0x41AA, 101: 0x6666}.get(i, 3 * i + 2)


def coil(i: int) -> bool:
    return i % 3 == 0


def discrete_input(i: int) -> bool:
    return i % 4 == 1


# --- the build ----------------------------------------------------------------------------


class BuildError(RuntimeError):
    """mbserver cannot be built here; the message says what to install."""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def build(build_root: Path) -> Path:
    """The mbserver binary for the current source, compiled into `build_root` if not there yet."""
    missing = [tool for tool in ("cc", "pkg-config", "socat") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    flags = _run("pkg-config", "--cflags", "--libs", "libmodbus")
    if flags.returncode != 0:
        raise BuildError(f"libmodbus headers not found (pkg-config libmodbus): {INSTALL_HINT}")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + flags.stdout.encode()).hexdigest()[:16]
    binary = build_root / key / "mbserver"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"mbserver.{os.getpid()}.partial")
    compiled = _run("cc", "-O1", "-Wall", "-o", str(partial), str(SOURCE), *flags.stdout.split())
    if compiled.returncode != 0:
        raise BuildError(f"cc failed on {SOURCE}:\n{compiled.stderr}")
    os.replace(partial, binary)  # atomic: a concurrent session never runs half a binary
    return binary


# --- the processes ------------------------------------------------------------------------

_REQUEST = re.compile(r"req=(\d+) conn=(\d+) unit=(\d+) fc=(\d+) addr=(\d+) count=(\d+) -> (.+)")


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server logged it; outcome is reply, exception N, silent or dropped."""

    seq: int
    conn: int
    unit: int
    function_code: int
    address: int
    count: int
    outcome: str

    @classmethod
    def parse(cls, match: re.Match[str]) -> Request:
        seq, conn, unit, function_code, address, count = (int(match[i]) for i in range(1, 7))
        return cls(seq, conn, unit, function_code, address, count, match[7])


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see _end
        )


def live_group_members(group: int) -> list[int]:
    """The live processes of a process group; a zombie is dead and not counted."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold anything, so split after its ')'
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
            if int(pgrp) == group and state != "Z":
                members.append(int(stat.parent.name))
    return members


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _end(process: subprocess.Popen[bytes] | None) -> None:
    """End a process and its group; SIGKILL what is left after 5 s. Never raises.

    The group's other members (socat's forks, one per TCP connection) go first,
    so that socat reaps them: orphans would be left to PID 1, which in a
    container may never reap them.
    """
    if process is None:
        return
    deadline = time.monotonic() + 5
    if process.poll() is None:
        _signal([p for p in live_group_members(process.pid) if p != process.pid], signal.SIGTERM)
        while len(live_group_members(process.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.terminate()
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _signal(live_group_members(process.pid), signal.SIGKILL)


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], after: int = 0) -> None:
    """Until `process` writes `text` into `log` past offset `after` (a restart appends)."""
    deadline = time.monotonic() + START_TIMEOUT
    while text not in log.read_text(errors="replace")[after:]:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not say {text!r}:\n{log.read_text()}")
        time.sleep(0.01)


@dataclass
class MbServer:
    """mbserver and, for RTU, the socat processes that carry its frames.

    tcp: mbserver listens on `port`. rtu: mbserver opens one end of a socat pty
    pair, the agent `serial_port`, the other. rtu-over-tcp: as rtu, and a second
    socat bridges TCP `port` to the agent's end of the pair, as a serial device
    server in transparent mode does.
    """

    binary: Path
    workdir: Path
    args: list[str]
    transport: Transport = "tcp"
    host: str = HOST
    _port: int = field(default=0, init=False)
    _server: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _helpers: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)

    @property
    def port(self) -> int:
        if self.transport == "rtu":
            raise AttributeError("an rtu server has no TCP port: use serial_port")
        return self._port

    @property
    def serial_port(self) -> str:
        """The agent's end of the pty pair."""
        if self.transport == "tcp":
            raise AttributeError("a tcp server has no serial port: use host and port")
        return str(self.workdir / "agent-pty")

    @property
    def log(self) -> Path:
        return self.workdir / "mbserver.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.transport != "rtu":
            self._port = self._port or free_port()
        if self.transport != "tcp":
            self._pty_pair()
        if self.transport == "rtu-over-tcp":
            self._tcp_bridge()
        self._start_server()

    def stop(self) -> None:
        """End every process of this server; safe to call twice."""
        _end(self._server)
        for helper in reversed(self._helpers):
            _end(helper)
        self._helpers.clear()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop mbserver (the device), wait `down_for` seconds, start it again; blocks.

        A pty pair and a TCP bridge stay up, as a serial line and its device server
        outlive a device that reboots. From a test's event loop, run it in a thread
        (`asyncio.to_thread`) to poll while the device is away.
        """
        _end(self._server)
        time.sleep(down_for)
        self._start_server()

    def _start_server(self) -> None:
        where = ["--tcp", str(self._port)] if self.transport == "tcp" else ["--rtu", self._pty]
        command = [str(self.binary), *where, "--verbose", *self.args]
        logged = len(self.log.read_text(errors="replace")) if self.log.exists() else 0
        self._server = _start(command, self.log)
        _wait_for(self.log, "READY", self._server, after=logged)

    @property
    def _pty(self) -> str:
        return str(self.workdir / "server-pty")

    def _pty_pair(self) -> None:
        log = self.workdir / "socat-pty.log"
        ends = [f"pty,raw,echo=0,link={path}" for path in (self._pty, self.serial_port)]
        self._helpers.append(_start(["socat", "-d", "-d", *ends], log))
        _wait_for(log, "starting data transfer loop", self._helpers[-1])

    def _tcp_bridge(self) -> None:
        log = self.workdir / "socat-tcp.log"
        listen = f"TCP-LISTEN:{self._port},bind={HOST},reuseaddr,fork"
        # -t 0: the child of a closed connection goes at once; by default it stays 0.5 s,
        # reading the pty, and takes answers meant for the agent's next connection.
        serial = f"FILE:{self.serial_port},raw,echo=0"
        command = ["socat", "-d", "-d", "-t", "0", listen, serial]
        self._helpers.append(_start(command, log))
        _wait_for(log, "listening on", self._helpers[-1])

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """This server's processes: the socat helpers, then mbserver."""
        return [p for p in (*self._helpers, self._server) if p is not None]

    # what the server saw

    def requests(self) -> list[Request]:
        """Every request logged so far, across restarts, in order."""
        found = _REQUEST.finditer(self.log.read_text(errors="replace"))
        return [Request.parse(match) for match in found]

    def function_codes(self) -> set[int]:
        return {r.function_code for r in self.requests()}

    def connections(self) -> int:
        """TCP connections mbserver accepted (tcp only), across restarts."""
        return self.log.read_text(errors="replace").count("accept conn=")

    def device_fields(self) -> dict[str, Any]:
        """The fields of a ModbusDevice that reach this server."""
        if self.transport == "rtu":
            # A pty has no line settings: 9600 8N1 is what mbserver asks, parity N
            # because a pty refuses any other (stty parenb fails).
            serial = {"port": self.serial_port, "baudrate": 9600, "parity": "N"}
            return {"transport": "rtu", "serial": serial}
        return {"transport": self.transport, "host": self.host, "port": self._port}
