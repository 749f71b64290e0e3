"""Fixtures for third-party servers, each installed or built once and started per test.

`libmodbus_server(*args, transport=...)` starts one mbserver (libmodbus 3.1.6)
with the options of mbserver.c (`--unit 2`, `--dead-unit 3`, `--hole 50:51`,
...) and stops it, and its socat helpers, when the test ends.

`node_opcua_server(**options)` starts one OPC UA server on node-opcua
(opcua/server.js; options in opcua_server.NodeOpcuaServer) and stops it when the
test ends.

`rabbitmq` and `ejabberd` are MQTT brokers (brokers.py), each a private node
started once per session on free ports and stopped at its end: a start costs
RabbitMQ 10-15 s. Tests restart them (`restart()`) and change what they refuse,
and put it back before they end; their logs stay in the session's temporary
folder (`rabbitmq0/`, `ejabberd0/`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from interop.brokers import BrokerError, Ejabberd, RabbitMq
from interop.libmodbus_server import BuildError, MbServer, StartServer, Transport, build
from interop.opcua_server import InstallError, NodeOpcuaServer, install, node_binary
from interop.opcua_server import StartServer as StartNodeOpcua

Node = TypeVar("Node", RabbitMq, Ejabberd)


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


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    """RabbitMQ 3.10 with its MQTT plugin (MQTT 3.1.1), a node of its own on free ports.

    Not installed, or not starting, fails the tests rather than skipping them, as for
    libmodbus.
    """
    yield from _node(lambda: RabbitMq(tmp_path_factory.mktemp("rabbitmq")))


@pytest.fixture(scope="session")
def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ejabberd]:
    """ejabberd 23.01 with mod_mqtt (MQTT 5), a node of its own on free ports; fails the
    tests when it is not installed or cannot start, as for libmodbus."""
    yield from _node(lambda: Ejabberd(tmp_path_factory.mktemp("ejabberd")))


def _node(make: Callable[[], Node]) -> Iterator[Node]:
    """Start a broker for the session and stop it at its end; a broker that cannot start
    fails every test that needs it, with what to install or what its log says."""
    try:
        node = make()
        node.start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the broker: {exc}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()


def _kept_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Path:
    """A directory kept across sessions (pytest's cache), or this session's own when the
    cache is off (-p no:cacheprovider)."""
    cache: pytest.Cache | None = getattr(request.config, "cache", None)
    return Path(cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name))
