"""A private Mosquitto on a free loopback port, for the demo and the tests.

Configured not to drop what it acknowledged (`max_queued_messages 0`,
`persistence true`), so a subscriber with a persistent session sees every
message, across a stop and start of the broker on the same port.

Options for the uplink tests: a second listener with TLS (certificates from
`make_test_pki`, made with the `openssl` command), and a password file
(made with `mosquitto_passwd`) that turns anonymous access off.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files for TLS tests: a CA, a server certificate for 127.0.0.1 and localhost
    signed by it, a client certificate signed by it, and a second CA that signed nothing."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(directory: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> Path:
    key, csr, cert, ext = (directory / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return cert


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_test_pki(directory: Path) -> Pki:
    """Make throw-away certificates (valid 2 days) with the `openssl` command."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(directory, "test-ca")
    other_ca, _ = _ca(directory, "other-ca")
    server = _signed(
        directory,
        "server",
        ca,
        ca_key,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = _signed(directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=ca,
        server_cert=server,
        server_key=server.with_suffix(".key"),
        client_cert=client,
        client_key=client.with_suffix(".key"),
        other_ca=other_ca,
    )


def make_password_file(path: Path, username: str, password: str) -> Path:
    """A Mosquitto password file with one user, made with `mosquitto_passwd -b`."""
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    subprocess.run([binary, "-b", str(path), username, password], check=True, capture_output=True)
    return path


class Mosquitto:
    """One broker process; `stop()` and `start()` again keep its port and its saved sessions."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: str = "",
        *,
        tls: Pki | None = None,
        require_client_certificate: bool = False,
        password_file: Path | None = None,
    ) -> None:
        """`extra` is appended to the generated mosquitto.conf (e.g. an `acl_file` line).

        With `tls`, a second listener on `tls_port` speaks TLS 1.2+ with the PKI's
        server certificate, and asks for a client certificate when
        `require_client_certificate`. With `password_file`, only its users may connect.
        """
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self._binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.tls_port = free_port() if tls is not None else None
        self.pki = tls
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._conf = workdir / "mosquitto.conf"
        access = (
            "allow_anonymous true\n"
            if password_file is None
            else f"allow_anonymous false\npassword_file {password_file}\n"
        )
        self._conf.write_text(
            # Started as root, Mosquitto drops to the user `mosquitto`, which could not
            # write its persistence file in our private directory: stay who we are.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            + _tls_listener(self.tls_port, tls, require_client_certificate)
            + access
            + "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"
            f"log_dest file {workdir}/mosquitto.log\n" + extra
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (benchmarks read its CPU time in /proc)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self._binary, "-c", str(self._conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        if self.tls_port is not None:
            wait_for_port(self.tls_port)

    def log(self) -> str:
        """The broker's own log, for post-mortems and for tests that check what it saw."""
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

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


def _tls_listener(port: int | None, pki: Pki | None, require_certificate: bool) -> str:
    if port is None or pki is None:
        return ""
    return (
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca}\n"
        f"certfile {pki.server_cert}\n"
        f"keyfile {pki.server_key}\n"
        "tls_version tlsv1.2\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
    )
