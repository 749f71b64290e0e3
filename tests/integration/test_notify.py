"""sd_notify and the watchdog as systemd sees them: a datagram socket and a real child process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Rig, agent_config, counter_device

from edge_agent import poller, runtime
from edge_agent.config.schema import AgentConfig
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.service.notify import Notifier, watchdog_interval

# The child: READY, watchdog pings every 50 ms (WATCHDOG_USEC=100000), then a
# STATUS=stalled marker, a 1 s stall of the kind named by argv[1], STATUS=resumed,
# more pings, STOPPING.
CHILD = """
import asyncio, sys, time
from edge_agent.service.notify import Notifier, watchdog_interval
from edge_agent.service.watchdog import Watchdog

async def main() -> None:
    notifier = Notifier.from_environ()
    progress = True
    watchdog = Watchdog(notifier, watchdog_interval(), lambda: None if progress else "stalled")
    task = asyncio.create_task(watchdog.run())
    notifier.ready("polling 1 device\\nand more")
    await asyncio.sleep(0.5)
    notifier.status("stalled")
    if sys.argv[1] == "block":
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)
    else:
        progress = False
    await asyncio.sleep(1.0)
    progress = True
    notifier.status("resumed")
    await asyncio.sleep(0.5)
    notifier.stopping()
    task.cancel()

asyncio.run(main())
"""

Message = tuple[float, str]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end: a bound datagram socket and the NOTIFY_SOCKET value naming it."""
    with bound_socket(tmp_path) as bound:
        yield bound


@pytest.fixture(scope="module")
def progress_stall(tmp_path_factory: pytest.TempPathFactory) -> list[Message]:
    """What systemd hears from a child whose progress() is False for 1 s (run once)."""
    with bound_socket(tmp_path_factory.mktemp("notify")) as (receiver, address):
        return run_child("progress", address, receiver)


@contextlib.contextmanager
def bound_socket(directory: Path) -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(directory / "notify"))
        yield receiver, str(directory / "notify")


def run_child(stall: str, address: str, receiver: socket.socket) -> list[Message]:
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, stall], env=env)
    try:
        messages = receive_until_stopping(receiver)
    finally:
        assert child.wait(10) == 0
    return messages


def receive_until_stopping(receiver: socket.socket) -> list[Message]:
    receiver.settimeout(10)
    messages: list[Message] = []
    while not messages or messages[-1][1] != "STOPPING=1":
        messages.append((time.monotonic(), receiver.recv(4096).decode()))
    return messages


def pings_between(messages: list[Message], first: str, last: str) -> list[float]:
    texts = [text for _, text in messages]
    start, end = texts.index(first), texts.index(last)
    return [at for at, text in messages[start:end] if text == "WATCHDOG=1"]


def test_ready_comes_first_with_a_one_line_status(progress_stall: list[Message]) -> None:
    """READY=1 carries its STATUS on one line; pings follow; STOPPING=1 comes last."""
    messages = [text for _, text in progress_stall]
    assert messages[0] == "READY=1\nSTATUS=polling 1 device and more"
    assert messages.count("WATCHDOG=1") >= 10
    assert messages[-1] == "STOPPING=1"


def test_pings_stop_while_the_event_loop_is_blocked(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """A callback that blocks the loop for 1 s leaves a 1 s hole in the 50 ms pings."""
    receiver, address = notify_socket
    messages = run_child("block", address, receiver)
    pings = [at for at, text in messages if text == "WATCHDOG=1"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) >= 0.9
    assert pings_between(messages, "STATUS=resumed", "STOPPING=1"), "pings resume"


def test_pings_stop_while_the_pipeline_makes_no_progress(progress_stall: list[Message]) -> None:
    """progress() False: no ping at all between the stall and the recovery."""
    messages = progress_stall
    assert pings_between(messages, "READY=1\nSTATUS=polling 1 device and more", "STATUS=stalled")
    assert pings_between(messages, "STATUS=stalled", "STATUS=resumed") == []
    assert pings_between(messages, "STATUS=resumed", "STOPPING=1")


def test_an_abstract_namespace_socket_is_reached() -> None:
    """NOTIFY_SOCKET=@name means the abstract socket "\\0name"."""
    name = f"edge-agent-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        receiver.settimeout(5)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping()
        assert receiver.recv(64) == b"STOPPING=1"
        notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("up")


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    """systemd gone (or a stale variable): the send fails quietly, returning False."""
    assert not Notifier(str(tmp_path / "nobody")).watchdog()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_for_this_process_only(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval(environ) == expected


def test_the_agent_tells_systemd_ready_status_watchdog_and_stopping(
    rig: Rig, notify_socket: tuple[socket.socket, str]
) -> None:
    """`edge-agent run` under a notify socket: READY before polling with its summary, a new
    STATUS once the device and the uplink are up, pings every half WatchdogSec while it
    commits, and STOPPING on SIGTERM."""
    receiver, address = notify_socket
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    config = rig.agent_config([counter_device(sim.port, 0.2, level=False)])
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    agent = rig.spawn("agent", "run", str(config), env=env)
    receiver.settimeout(15)
    heard = [receiver.recv(4096).decode()]
    while (
        "STATUS=1/1 devices up; back-log 0; uplink connected" not in heard
        or heard.count("WATCHDOG=1") < 3
    ):
        heard.append(receiver.recv(4096).decode())
    assert agent.popen is not None
    agent.popen.send_signal(signal.SIGTERM)
    while heard[-1] != "STOPPING=1":
        heard.append(receiver.recv(4096).decode())
    assert agent.popen.wait(10) == 0, agent.log()

    assert heard[0] == "READY=1\nSTATUS=0/1 devices up; back-log 0; uplink down"


async def test_the_agents_pings_stop_when_a_read_hangs(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's liveness: commits go on, but a read that never returns stops the pings."""
    receiver, address = notify_socket
    monkeypatch.setattr(poller, "STALL_AFTER_S", 0.5)
    monkeypatch.setattr(
        runtime, "build_driver", lambda device, report_every: HangingDriver(device.name)
    )
    config = AgentConfig.model_validate(
        yaml.safe_load(agent_config(tmp_path, 1, [counter_device(1, 0.1)]).read_text())
        | {"metrics": {"enabled": False}}
    )
    agent = runtime.Agent(config, systemd=runtime.Systemd(Notifier(address), 0.2))
    # Listen while the agent runs, as systemd does: a unix datagram queue holds
    # only net.unix.max_dgram_qlen (10) messages, and the rest would be dropped.
    heard: list[str] = []
    listening = asyncio.create_task(listen(receiver, heard))
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(3.0)  # 30 pings if none were withheld
    stop.set()
    await running
    await asyncio.wait_for(listening, 5.0)

    assert heard[-1] == "STOPPING=1"
    # Pings until the read hung for its interval (0.1 s) and the stall limit: about 0.7 s.
    assert heard.count("WATCHDOG=1") <= 15, "pings for about the first second only"
    assert heard.count("WATCHDOG=1") >= 1


async def listen(receiver: socket.socket, heard: list[str]) -> None:
    """Append every message systemd's end receives, up to STOPPING=1."""
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()
    while not heard or heard[-1] != "STOPPING=1":
        heard.append((await loop.sock_recv(receiver, 4096)).decode())


class HangingDriver:
    """Answers one read, then hangs in the next one for good."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.link = LinkState.UP
        self._reads = 0

    async def read(self) -> list[Sample]:
        self._reads += 1
        if self._reads > 1:
            await asyncio.Event().wait()
        return [Sample("HZ01.CNT", 1, 1, Quality.GOOD), Sample("HZ01.LT101", 1, 1.0, Quality.GOOD)]

    async def close(self) -> None:
        pass
