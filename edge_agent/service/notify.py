"""sd_notify: tell systemd that the agent is ready, what it is doing, that it lives, that it stops.

API (the runtime calls these; every call is a no-op when NOTIFY_SOCKET is unset,
so the same code runs under systemd, in a terminal and in tests):

    notifier = Notifier.from_environ()
    notifier.ready("polling 3 devices")   # after the config loaded and the store opened
    notifier.status("3/3 devices up, backlog 0")   # any time; one line
    notifier.watchdog()                   # see watchdog.py, which calls it
    notifier.stopping()                   # first thing on SIGTERM
    watchdog_interval()                   # WatchdogSec= as seconds, or None

The protocol (sd_notify(3)): one datagram of newline-separated KEY=VALUE
assignments to the AF_UNIX socket named by $NOTIFY_SOCKET; a name starting
with '@' is in the abstract namespace. No C library is needed.

Hazards:
- A send never blocks the event loop (MSG_DONTWAIT): if systemd does not drain
  its queue the message is dropped, which for a watchdog ping is what a hung
  manager deserves anyway. Failures are logged once per kind of error.
- The unit must say NotifyAccess=main (or all): systemd ignores datagrams from
  other processes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(component="notify")


class Notifier:
    """Sends sd_notify messages to one socket, or nowhere when there is none."""

    def __init__(self, address: str | None) -> None:
        self._name = address
        self._address = _socket_address(address) if address else None
        self._socket: socket.socket | None = None
        self._failures: set[str] = set()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> bool:
        """The config is loaded and the store open: systemd may start what waits for us."""
        return self.send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, line: str) -> bool:
        """A one-line summary shown by `systemctl status edge-agent`."""
        return self.send(f"STATUS={_one_line(line)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def send(self, message: str) -> bool:
        """Send one datagram; True when it was handed to the socket."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            kind = type(exc).__name__
            if kind not in self._failures:
                self._failures.add(kind)
                log.warning("notify_failed", socket=self._name, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """WatchdogSec= in seconds, when systemd watches this very process; else None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (we were started by the watched one)
    return int(usec) / 1_000_000


def _socket_address(name: str) -> str | bytes:
    """'@name' is Linux's abstract namespace: a leading NUL byte instead of the '@'."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def _one_line(text: str) -> str:
    """A newline would start a new assignment; STATUS is one line."""
    return " ".join(text.split())
