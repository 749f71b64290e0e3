"""The node-opcua server of the interop tests: its address space, its install, its process.

`opcua/server.js` is an OPC UA server on node-opcua 2.x (JavaScript), a stack
the agent meets in the field (gateways, edge boxes, vendors' test servers). Its
address space is mirrored here (`KNOWN`, `BANK_SIZE`), so the tests name
expected values in one place: keep `KNOWN` and the comment atop server.js in step.

Hazards:
- node-opcua is installed with `npm ci` into a cache directory keyed by the hash
  of package.json and package-lock.json, behind a stamp file written last: an
  unchanged lock is never installed again, a changed one is installed anew, and
  an interrupted install is redone. A file lock serialises two sessions that
  install at once.
- The server runs in a session of its own and is ended by its process group,
  SIGTERM first (node-opcua closes its sessions), SIGKILL after 5 s.
- `restart()` keeps the port and the PKI folder: the server's certificate and
  the clients it trusts survive a restart, as on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from asyncua import Client, ua

PACKAGE = Path(__file__).resolve().parent / "opcua"
SERVER_JS = PACKAGE / "server.js"
LOCK_INPUTS = ("package.json", "package-lock.json")
INSTALL_HINT = (
    "run `make test` (it installs them as root) or `sudo apt-get install nodejs npm` "
    "(Node.js 18 or newer)"
)
NODE_ENV = "EDGE_AGENT_TEST_NODE"
"""Runs server.js with another `node` (e.g. Debian 12's 18.x beside a newer one on PATH)."""
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 5.0
CURRENT_SESSION_COUNT = (
    ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount
)
"""i=2277, which server.js keeps fed (it switches diagnostics on)."""
MIN_NODE = 18

NAMESPACE = "urn:edge-agent:interop:node-opcua"
UINT64_MAX = 2**64 - 1
BANK_SIZE = 8
"""Bank/T01..T08 by default (server.js --bank)."""


@dataclass(frozen=True, slots=True)
class Known:
    """A variable of server.js: its NodeId (s=, in NAMESPACE), its browse path, its value."""

    node: str
    browse_path: str
    type: str
    value: float | int | str | None
    status: str = "Good"


KNOWN: dict[str, Known] = {
    "RISING": Known("s=Plant.Rising", "Plant/Rising", "Double", None),  # +1 per update
    "CONSTANT": Known("s=Plant.Constant", "Plant/Constant", "Double", 21.5),
    "SENSOR_FAILED": Known(
        "s=Plant.SensorFailed", "Plant/SensorFailed", "Double", None, "BadSensorFailure"
    ),
    "UNCERTAIN": Known(
        "s=Plant.Uncertain", "Plant/Uncertain", "Double", 2.5, "UncertainLastUsableValue"
    ),
    "NO_COMM": Known("s=Plant.NoComm", "Plant/NoComm", "Double", None, "BadCommunicationError"),
    "COUNTER64": Known("s=Plant.Counter64", "Plant/Counter64", "UInt64", UINT64_MAX),
    "GAS": Known("s=Plant.Vent.Gas", "Plant/通风/瓦斯浓度", "Double", 0.42),
}


def bank(i: int) -> Known:
    """Bank/T<i> (from 1): a constant Double i + 0.5, for the operation-limit tests."""
    name = f"T{i:02d}"
    return Known(f"s=Bank.{name}", f"Bank/{name}", "Double", i + 0.5)


TEXT_SIZE, TEXT_LENGTH = 8, 3000
"""Text/L01..L08, each a String of 3000 characters."""


def text(i: int) -> Known:
    """Text/L<i> (from 1): the digit i % 10, TEXT_LENGTH times, for the message-size tests."""
    name = f"L{i:02d}"
    return Known(f"s=Text.{name}", f"Text/{name}", "String", str(i % 10) * TEXT_LENGTH)


# --- the install --------------------------------------------------------------------------


class InstallError(RuntimeError):
    """node-opcua cannot be installed or run here; the message says what to do."""


def _run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)


def node_binary() -> str:
    """The `node` that runs server.js: $EDGE_AGENT_TEST_NODE, else the one on PATH."""
    wanted = os.environ.get(NODE_ENV) or "node"
    node = shutil.which(wanted)
    if node is None:
        raise InstallError(f"{wanted} not found: {INSTALL_HINT}")
    version = _run(node, "--version")
    match = re.match(r"v(\d+)\.", version.stdout)
    if version.returncode != 0 or match is None:
        raise InstallError(f"{node} --version failed ({version.stderr.strip()}): {INSTALL_HINT}")
    if int(match[1]) < MIN_NODE:
        raise InstallError(
            f"{node} is Node.js {version.stdout.strip()}; node-opcua 2.163 needs 18 or newer: "
            f"{INSTALL_HINT}"
        )
    return node


def install(cache_root: Path) -> Path:
    """The node_modules folder for the current lock file, installed by `npm ci` if not there."""
    node_binary()
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(f"npm not found: {INSTALL_HINT}")
    digest = hashlib.sha256()
    for name in LOCK_INPUTS:
        digest.update((PACKAGE / name).read_bytes())
    target = cache_root / digest.hexdigest()[:16]
    stamp = target / ".installed"
    if stamp.exists():
        return target / "node_modules"
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing the same lock
        if not stamp.exists():
            _npm_ci(npm, target)
    return target / "node_modules"


def _npm_ci(npm: str, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)  # what an interrupted install left
    target.mkdir(parents=True)
    for name in LOCK_INPUTS:
        shutil.copyfile(PACKAGE / name, target / name)
    # No package in the lock has an install script or native code (README): skip scripts.
    done = _run(npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", cwd=target)
    if done.returncode != 0:
        raise InstallError(
            f"npm ci failed in {target} (exit {done.returncode}); the registry must be "
            f"reachable:\n{done.stderr[-3000:]}"
        )
    (target / ".installed").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


# --- the process --------------------------------------------------------------------------


class StartServer(Protocol):
    """The `node_opcua_server` fixture: start server.js with these options (see NodeOpcuaServer)."""

    def __call__(self, **options: Any) -> NodeOpcuaServer: ...


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end(process: subprocess.Popen[bytes] | None, *, hard: bool = False) -> None:
    """End server.js and its process group: SIGTERM (or SIGKILL when `hard`), SIGKILL after
    5 s. Never raises."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if _group_alive(process.pid):  # a child the leader left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


_FLAGS = {
    "operation_limit",
    "max_sessions",
    "update_ms",
    "bank",
    "max_message_size",
    "policies",
    "modes",
}
_OPTIONS = {"port", "trust", *_FLAGS}


@dataclass
class NodeOpcuaServer:
    """One server.js process, its log and its PKI folder (in `workdir`).

    Options: port (0: a free one, kept across restarts), trust (client
    certificate files put into pki/trusted/certs before the server starts), and
    server.js's flags: operation_limit (every OperationLimits value; 0: none),
    max_sessions (10), update_ms (100: how often Plant/Rising changes), bank (8
    Bank/T.. constants), max_message_size (the MaxMessageSize it acknowledges
    and sends at most; 0: node-opcua's), policies (None, Basic256Sha256), modes
    (None, Sign, SignAndEncrypt).
    """

    node: str
    node_modules: Path
    workdir: Path
    options: dict[str, Any]
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _ready_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        unknown = set(self.options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown server.js options {sorted(unknown)}; known: {_OPTIONS}")
        self.port = int(self.options.get("port", 0))

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{HOST}:{self.port}"

    @property
    def pki(self) -> Path:
        """node-opcua's PKI folder: own/, trusted/certs/, rejected/, issuers/."""
        return self.workdir / "pki"

    @property
    def certificate(self) -> Path:
        """The server's own certificate (PEM), for a client's trust list."""
        return self.pki / "own" / "certs" / "certificate.pem"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def trust(self, client_certificate: Path) -> Path:
        """Put a client certificate into trusted/certs/, as an operator does.

        A running node-opcua sees it only after polling the folder (every 0.5 s, as
        server.js sets it) and finding the file unchanged for 2 s: pass `trust=[...]`
        to the fixture to have it trusted from the start.
        """
        trusted = self.pki / "trusted" / "certs"
        trusted.mkdir(parents=True, exist_ok=True)
        target = trusted / client_certificate.name
        shutil.copyfile(client_certificate, target)
        return target

    def rejected(self) -> list[Path]:
        """The client certificates the server refused so far (node-opcua writes them here)."""
        folder = self.pki / "rejected"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for certificate in self.options.get("trust", ()):
            self.trust(Path(certificate))
        script = self._place_script()
        command = [self.node, str(script), "--pki", str(self.pki), "--port", str(self.port)]
        for key, value in self.options.items():
            if key in _FLAGS:
                text = ",".join(value) if isinstance(value, list | tuple) else str(value)
                command += [f"--{key.replace('_', '-')}", text]
        logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: see _end
            )
        self.port = self._wait_ready(logged)
        self._ready_at = time.monotonic()

    @property
    def age(self) -> float:
        """Seconds since the server (last) said READY: how old its constants are."""
        return time.monotonic() - self._ready_at

    def _place_script(self) -> Path:
        """server.js in the work folder, beside a link to the installed node_modules.

        Node looks for `require("node-opcua")` in the node_modules of the script's folder
        first, then of each folder above it: next to the pinned install, no other copy
        (one a developer installed in the repository, say) can be taken instead.
        """
        modules = self.workdir / "node_modules"
        if not modules.is_symlink():
            modules.symlink_to(self.node_modules, target_is_directory=True)
        script = self.workdir / SERVER_JS.name
        shutil.copyfile(SERVER_JS, script)
        return script

    def _wait_ready(self, after: int) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while True:
            text = self.log.read_bytes()[after:].decode(errors="replace")
            ready = re.search(r"READY port=(\d+)", text)
            if ready:
                return int(ready[1])
            if self._process.poll() is not None or time.monotonic() > deadline:
                _end(self._process)
                raise RuntimeError(f"{SERVER_JS.name} did not say READY:\n{text[-4000:]}")
            time.sleep(0.02)

    def stop(self, *, hard: bool = False) -> None:
        """End the server (SIGTERM; `hard`: SIGKILL, a crash); safe to call twice."""
        _end(self._process, hard=hard)

    def restart(self, down_for: float = 0.0, *, hard: bool = False) -> None:
        """Stop, wait `down_for` seconds, start again on the same port; blocks.

        From a test's event loop, run it in a thread (`asyncio.to_thread`) to read
        while the server is away.
        """
        self.stop(hard=hard)
        time.sleep(down_for)
        self.start()

    def log_lines(self, prefix: str) -> list[str]:
        """server.js's own lines that start with `prefix` (session_activated, ...)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if line.startswith(prefix)]

    async def current_session_count(self) -> int:
        """Server/ServerDiagnostics/ServerDiagnosticsSummary/CurrentSessionCount, read by a
        client of its own (its session is counted too); raises what its connect raises
        (BadTooManySessions from a full server), within CLIENT_TIMEOUT each step."""
        client = Client(self.endpoint, timeout=CLIENT_TIMEOUT)
        async with asyncio.timeout(CLIENT_TIMEOUT):
            await client.connect()
        try:
            node = client.get_node(ua.NodeId(CURRENT_SESSION_COUNT))
            async with asyncio.timeout(CLIENT_TIMEOUT):
                return int(await node.read_value())
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLIENT_TIMEOUT):
                    await client.disconnect()
