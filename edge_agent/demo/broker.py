"""A private Mosquitto on a free loopback port, for the demo and the tests.

Configured not to drop what it acknowledged (`max_queued_messages 0`,
`persistence true`), so a subscriber with a persistent session sees every
message, across a stop and start of the broker on the same port.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = (
    "Mosquitto is not installed: run `sudo apt-get install mosquitto` "
    "(Debian/Ubuntu; the binary lands in /usr/sbin), then try again."
)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


class Mosquitto:
    """One broker process; `stop()` and `start()` again keep its port and its saved sessions."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        """`extra` is appended to the generated mosquitto.conf (e.g. an `acl_file` line)."""
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self._binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._conf = workdir / "mosquitto.conf"
        self._conf.write_text(
            # Started as root, Mosquitto drops to the user `mosquitto`, which could not
            # write its persistence file in our private directory: stay who we are.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"
            f"log_dest file {workdir}/mosquitto.log\n" + extra
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self._binary, "-c", str(self._conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGTERM, so the broker saves its sessions and queued messages."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
