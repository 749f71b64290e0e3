"""Fixtures for third-party servers: mbserver (libmodbus 3.1.6) built once, started per test.

`libmodbus_server(*args, transport=...)` starts one mbserver with the options of
mbserver.c (`--unit 2`, `--dead-unit 3`, `--hole 50:51`, ...) and stops it, and
its socat helpers, when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.libmodbus_server import BuildError, MbServer, StartServer, Transport, build


@pytest.fixture(scope="session")
def mbserver_binary(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """mbserver, compiled only when its source changed since the last session.

    A missing compiler or libmodbus fails the tests rather than skipping them: a
    skipped interop test reads as a passed one in a hurried review.
    """
    cache: pytest.Cache | None = getattr(request.config, "cache", None)  # None: -p no:cacheprovider
    root = cache.mkdir("libmodbus") if cache is not None else tmp_path_factory.mktemp("libmodbus")
    try:
        return build(Path(root))
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
