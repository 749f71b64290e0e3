"""service/local.py on real sockets: where the socket is, who may use it, and whose it is."""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from snapshots import healthy

from edge_agent.service import local
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.local import LocalServer, socket_path


def handler() -> StatusServer:
    return StatusServer("127.0.0.1", 0, healthy, HealthLimits())


async def get(path: Path, route: str = "/healthz") -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(f"GET {route} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


def other_group() -> str | None:
    """A group this process may give a file, other than its own: the unit's, or any (as root)."""
    names = {group.gr_name: group.gr_gid for group in grp.getgrall()}
    if local.SOCKET_GROUP in names:
        return local.SOCKET_GROUP
    if os.getuid() != 0:
        return None
    return next((name for name, gid in names.items() if gid != os.getgid()), None)


@pytest.fixture
async def served() -> AsyncIterator[LocalServer]:
    server = LocalServer(socket_path("GW-A"), handler().handle)
    await server.start()
    yield server
    await server.close()


def test_the_socket_is_named_after_the_gateway_in_the_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    assert socket_path("GW-A") == tmp_path / "GW-A.sock"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    expected = local.SYSTEM_DIRECTORY if local.SYSTEM_DIRECTORY.is_dir() else None
    assert socket_path("GW-A").parent == (expected or local.fallback_directory())


async def test_the_routes_are_served_with_mode_0660(served: LocalServer) -> None:
    path = socket_path("GW-A")
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert (await get(path)).startswith(b"HTTP/1.1 200 OK")


async def test_the_group_is_set_where_it_exists() -> None:
    """The unit's group where it exists; otherwise a group the test may give (as root)."""
    group = other_group()
    if group is None:
        pytest.skip("no edge-agent group, and not root to give the socket another")
    server = LocalServer(socket_path("GW-A"), handler().handle, group=group)
    await server.start()
    assert socket_path("GW-A").stat().st_gid == grp.getgrnam(group).gr_gid
    await server.close()


async def test_without_the_group_the_socket_keeps_its_owners_group() -> None:
    server = LocalServer(socket_path("GW-A"), handler().handle, group="no-such-group-here")
    await server.start()
    info = socket_path("GW-A").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, os.getgid())
    await server.close()


async def test_a_second_agent_of_the_gateway_does_not_take_the_socket(
    served: LocalServer,
) -> None:
    second = LocalServer(socket_path("GW-A"), handler().handle)
    with pytest.raises(OSError, match="another edge-agent of this gateway answers"):
        await second.start()
    await second.close()
    assert (await get(socket_path("GW-A"))).startswith(b"HTTP/1.1 200"), "the first one's socket"


async def test_agents_of_two_gateways_answer_each_on_its_own(served: LocalServer) -> None:
    other = LocalServer(socket_path("GW-B"), handler().handle)
    await other.start()
    assert (await get(socket_path("GW-B"))).startswith(b"HTTP/1.1 200")
    await other.close()
    assert not socket_path("GW-B").exists()
    assert socket_path("GW-A").exists()


async def test_a_killed_agents_socket_is_replaced() -> None:
    path = socket_path("GW-A")
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # bound, never listening: what a SIGKILL leaves
    left.close()
    server = LocalServer(path, handler().handle)
    await server.start()
    assert (await get(path)).startswith(b"HTTP/1.1 200")
    await server.close()
    assert not path.exists()


async def test_the_fallback_directory_is_private_and_a_foreign_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setattr(local, "SYSTEM_DIRECTORY", tmp_path / "absent")
    monkeypatch.setattr(local.tempfile, "gettempdir", lambda: str(tmp_path))
    server = LocalServer(socket_path("GW-A"), handler().handle)
    await server.start()
    assert stat.S_IMODE(local.fallback_directory().stat().st_mode) == 0o700
    await server.close()

    local.fallback_directory().chmod(0o777)  # as anyone could have made it in /tmp
    assert not local.trusted(local.fallback_directory())
    with pytest.raises(OSError, match="not this user's own private directory"):
        await server.start()
