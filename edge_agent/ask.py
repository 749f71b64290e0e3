"""Ask the running agent of a config for its /status, and take the answer only from that agent.

`ask(config, path)` asks the agent's local socket (service/local.py) first,
then, with metrics.enabled, its HTTP port. The port proves nothing: every
agent defaults to 127.0.0.1:9108, so on a host with two agents it answers for
whichever bound it first. So an answer counts only when its snapshot names
this config's gateway code and this file's digest; any other is a `Stranger`,
never described.

The digest is the SHA-256 of the config file's bytes (config.loader.file_digest),
what `sha256sum` prints, not the `config` hash of the retained `meta`: that one
covers only what the platform is told of the tags, so two agents of one
gateway whose files differ in the store, the broker or the port would pass
for each other. The file's digest tells them apart, and tells an agent still
running the file as it was before an edit (a reload hashes it again). The
price: an edited comment counts as an edit until the agent reloads.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from edge_agent.config.loader import file_digest
from edge_agent.config.schema import AgentConfig
from edge_agent.service.local import socket_path, trusted

QUERY_TIMEOUT_S: Final = 3.0
_ANY_ADDRESS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
"""An agent listening on every address answers on loopback."""

Connect = Callable[[], http.client.HTTPConnection]


@dataclass(frozen=True, slots=True)
class Running:
    """This config's agent answered: its /status and /tags documents, and where."""

    document: dict[str, Any]
    where: str
    tags: dict[str, Any] | None = None
    """The /tags document (each tag's value and active alarms); None when it could not be
    had after /status was."""


@dataclass(frozen=True, slots=True)
class Stranger:
    """Something else answered where this config's agent would: what and where."""

    where: str
    why: str


@dataclass(frozen=True, slots=True)
class Silent:
    """Nothing answered: where it was asked, and why each place said nothing."""

    tried: tuple[str, ...]


Answer = Running | Stranger | Silent


class _Silence(Exception):
    """Nothing answered at one place; the message says why."""


def ask(config: AgentConfig, path: Path, timeout: float = QUERY_TIMEOUT_S) -> Answer:
    """The running agent of `config` (loaded from `path`), asked on its local socket, then
    on its HTTP port; else the first `Stranger` met, else `Silent`. Raises
    ConfigFileMissing when `path` can no longer be read."""
    digest = file_digest(path)
    tried: list[str] = []
    stranger: Stranger | None = None
    for where, connect in _places(config, timeout):
        try:
            document = _get(connect(), "/status")
        except _Silence as silence:
            tried.append(f"{where}: {silence}")
            continue
        answer = judge(config, digest, document, where)
        if isinstance(answer, Running):
            return dataclasses.replace(answer, tags=_tags(connect))
        # The port is asked still: an agent of this gateway from another file may hold
        # the socket, and this file's agent answer on its own port.
        stranger = stranger or answer
    return stranger or Silent(tuple(tried))


def _tags(connect: Connect) -> dict[str, Any] | None:
    """The /tags document, or None when it cannot be had (alarms are then counted by kind)."""
    try:
        tags = _get(connect(), "/tags")
    except _Silence:
        return None
    return tags if isinstance(tags, dict) else None


def _places(config: AgentConfig, timeout: float) -> list[tuple[str, Connect]]:
    """Where the agent of `config` answers, the local socket first."""
    path = str(socket_path(config.gateway.code))
    places: list[tuple[str, Connect]] = []
    if trusted(Path(path).parent):
        places.append((path, partial(_UnixConnection, path, timeout)))
    if config.metrics.enabled:
        listen = config.metrics.address()
        host = _ANY_ADDRESS.get(listen.host, listen.host)
        connect = partial(http.client.HTTPConnection, host, listen.port, timeout=timeout)
        places.append((config.metrics.listen, connect))
    return places


def judge(config: AgentConfig, digest: str, document: Any, where: str) -> Running | Stranger:
    """`Running` when `document` is the /status of the agent of `config`, loaded from a
    file of this `digest`; else `Stranger`."""
    if not (isinstance(document, dict) and isinstance(document.get("snapshot"), dict)):
        return Stranger(where, f"something that is not edge-agent answers on {where}")
    gateway, held = document["snapshot"].get("gateway"), document["snapshot"].get("config_digest")
    if gateway is None:
        return Stranger(where, f"an edge-agent too old to name its gateway answers on {where}")
    if gateway != config.gateway.code:
        return Stranger(
            where,
            f"gateway {gateway} answers on {where}, not {config.gateway.code}: is its agent "
            "running? Agents on one host need a metrics.listen each",
        )
    if held != digest:
        return Stranger(
            where,
            f"gateway {gateway} answers on {where}, running another config file "
            f"({str(held)[:19]}; this one is {digest[:19]}): another file of this gateway, "
            "or this one edited since the agent loaded it (systemctl reload edge-agent)",
        )
    return Running(document, where)


def _get(connection: http.client.HTTPConnection, route: str) -> Any:
    """The parsed body (None when it is not JSON, or not a 200: not ours, or an agent that
    cannot tell); raises _Silence when nothing answers."""
    try:
        connection.request("GET", route)
        response = connection.getresponse()
        body = response.read()
    except FileNotFoundError:
        raise _Silence("no socket") from None
    except ConnectionRefusedError:
        raise _Silence("refused") from None
    except PermissionError:
        raise _Silence("permission denied (run as root or join group edge-agent)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Silence(str(exc) or type(exc).__name__) from None
    finally:
        connection.close()
    try:
        return json.loads(body) if response.status == 200 else None
    except ValueError:
        return None


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: http.client's, with the connect replaced."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
