"""The agent's local socket: its HTTP routes (service/http.py) at a path of its own gateway's.

Why beside the HTTP port: every agent defaults to 127.0.0.1:9108, so on a host
with two agents the port answers for whichever bound it first, and
`edge-agent status` would describe the wrong gateway. The socket is named
after the gateway code, `<runtime directory>/<gateway>.sock`, so two agents
of different gateways never meet; a second agent of the same gateway finds
the first one answering there and does not take its socket (the supervisor
retries, as for a taken port).

The runtime directory, the same for the agent and for `edge-agent status`:

1. $RUNTIME_DIRECTORY: systemd sets it from the unit's RuntimeDirectory=
   (/run/edge-agent); tests and runs by hand may set it too.
2. /run/edge-agent when it exists: the unit's, seen from an operator's shell.
3. Else $TMPDIR or /tmp, in `edge-agent-<uid>`: runs outside systemd. The
   agent makes it 0700; both sides use it only while it is this user's own
   and closed to others, since anyone can create names in /tmp.

Access: mode 0660 and group edge-agent (when that group exists), set right
after bind() and before listen(), so nobody connects in between. The unit's
UMask=0077 would otherwise leave the socket to the service user and root;
with the group, operators in it can ask without sudo.

A socket left behind by a killed agent answers nothing: it is removed before
the new bind. On close the socket is removed only while it is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(component="local")

SYSTEM_DIRECTORY: Final = Path("/run/edge-agent")
SOCKET_GROUP: Final = "edge-agent"
SOCKET_MODE: Final = 0o660
CLAIM_TIMEOUT_S: Final = 1.0
"""How long a socket found at our path gets to accept before it is taken as stale."""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def runtime_directory() -> Path:
    """Where the local sockets are (the order is in the module docstring)."""
    given = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if given:
        return Path(given)
    if SYSTEM_DIRECTORY.is_dir():
        return SYSTEM_DIRECTORY
    return fallback_directory()


def fallback_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"edge-agent-{os.getuid()}"


def socket_path(gateway: str) -> Path:
    """The local socket of the agent of `gateway` (a gateway code, safe as a file name)."""
    return runtime_directory() / f"{gateway}.sock"


def trusted(directory: Path) -> bool:
    """False for a fallback directory someone else made or opened (see the module docstring)."""
    if directory != fallback_directory():
        return True
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return True  # nothing there to trust or distrust: no socket either
    private = not info.st_mode & 0o077
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and private


class LocalServer:
    """Serves `handle` (StatusServer.handle) on the local socket at `path`."""

    def __init__(self, path: Path, handle: Handler, group: str = SOCKET_GROUP) -> None:
        self._path = path
        self._handle = handle
        self._group = group
        self._server: asyncio.Server | None = None
        self._inode: int | None = None

    async def run(self) -> None:
        """Serve until cancelled. Raises OSError when the socket cannot be served (another
        agent of this gateway answers there, or the directory is not usable): the supervisor
        tries again after its backoff, and polling goes on meanwhile."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def start(self) -> None:
        sock = self._bind()
        try:
            self._server = await asyncio.start_unix_server(self._handle, sock=sock)
        except OSError:
            sock.close()
            raise
        log.info("local_socket_listening", path=str(self._path))

    def _bind(self) -> socket.socket:
        """A socket bound at the path, with its mode and group set, not yet listening."""
        path = self._path
        if path.parent == fallback_directory():
            path.parent.mkdir(mode=0o700, exist_ok=True)
        if not trusted(path.parent):
            raise OSError(f"{path.parent} is not this user's own private directory")
        _remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, SOCKET_MODE)
            self._set_group()
            self._inode = os.stat(path).st_ino
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot serve {path}: {exc}") from exc
        return sock

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self._path).st_ino == self._inode:  # not a successor's socket
                self._path.unlink()

    def _set_group(self) -> None:
        try:
            gid = grp.getgrnam(self._group).gr_gid
        except KeyError:
            return  # no such group here (a developer's machine): the owner's group stays
        try:
            os.chown(self._path, -1, gid)
        except PermissionError:
            log.warning("local_socket_group_not_set", path=str(self._path), group=self._group)


def _remove_stale(path: Path) -> None:
    """Remove the socket at `path` unless an agent answers there (then raise OSError).
    A blocking connect: a Unix socket accepts or refuses at once, but for a full backlog."""
    if not path.is_socket():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CLAIM_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # nobody listens: its agent is gone
        return
    except TimeoutError:
        pass  # a full backlog: an agent is there, only busy
    finally:
        probe.close()
    raise OSError(f"another edge-agent of this gateway answers on {path}")
