"""Fixtures for third-party servers, each installed or built once and started per test.

`libmodbus_server(*args, transport=...)` starts one mbserver (libmodbus 3.1.6)
with the options of mbserver.c (`--unit 2`, `--dead-unit 3`, `--hole 50:51`,
...) and stops it, and its socat helpers, when the test ends.

`node_opcua_server(**options)` starts one OPC UA server on node-opcua
(opcua/server.js; options in opcua_server.NodeOpcuaServer) and stops it when the
test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.libmodbus_server import BuildError, MbServer, StartServer, Transport, build
from interop.opcua_server import InstallError, NodeOpcuaServer, install, node_binary
from interop.opcua_server import StartServer as StartNodeOpcua


@pytest.fixture(scope="session")
def mbserver_binary(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """mbserver, compiled only when its source changed since the last session.

    A missing compiler or libmodbus fails the tests rather than skipping them: a
    skipped interop test reads as a passed one in a hurried review.
    """
    try:
        return build(_kept_dir(request, tmp_path_factory, "libmodbus"))
    except BuildError as exc:
        pytest.fail(f"cannot build the libmodbus server: {exc}", pytrace=False)


@pytest.fixture
def libmodbus_server(mbserver_binary: Path, tmp_path: Path) -> Iterator[StartServer]:
    """Start mbserver processes; every one is stopped at the end of the test."""
    started: list[MbServer] = []

    def start(*args: str, transport: Transport = "tcp") -> MbServer:
        workdir = tmp_path / f"mbserver-{len(started)}"
        server = MbServer(mbserver_binary, workdir, list(args), transport)
        started.append(server)  # before start: a half-started server is stopped too
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def node_opcua_modules(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """node-opcua's node_modules, installed by `npm ci` only when the lock file changed.

    A missing node or npm, or an unreachable registry, fails the tests rather than
    skipping them, as for libmodbus.
    """
    try:
        return install(_kept_dir(request, tmp_path_factory, "node-opcua"))
    except InstallError as exc:
        pytest.fail(f"cannot install node-opcua: {exc}", pytrace=False)


@pytest.fixture
def node_opcua_server(node_opcua_modules: Path, tmp_path: Path) -> Iterator[StartNodeOpcua]:
    """Start server.js processes; every one is stopped at the end of the test."""
    started: list[NodeOpcuaServer] = []
    node = node_binary()

    def start(**options: object) -> NodeOpcuaServer:
        workdir = tmp_path / f"node-opcua-{len(started)}"
        server = NodeOpcuaServer(node, node_opcua_modules, workdir, dict(options))
        started.append(server)  # before start: a half-started server is stopped too
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


def _kept_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Path:
    """A directory kept across sessions (pytest's cache), or this session's own when the
    cache is off (-p no:cacheprovider)."""
    cache: pytest.Cache | None = getattr(request.config, "cache", None)
    return Path(cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name))
