"""Shared fixtures: a private Mosquitto, the platform subscriber, the simulator and agent processes.

Everything is real and on loopback: the broker is Mosquitto started on a free
port, the PLC is the project's pymodbus simulator in its own process, and the
agent runs as `python -m edge_agent run` so it can be killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from edge_agent.clock import CLOCK_ENV
from edge_agent.demo.broker import Mosquitto, free_port, wait_for_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.demo.proxy import Proxy

ENTERPRISE = "91370200MA3C00000K"
GATEWAY = "GW-TEST-01"
PREFIX = "safety/v1"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A command run in-process (main(["read", ...])) configures structlog onto the
    captured stderr of its test; later tests must not log into that closed stream."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _runtime_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local sockets (service/local.py) in a directory of each test's own, as systemd gives
    its unit one: agents that tests run side by side under one gateway code, and a
    `status` asked in one test, never meet another test's."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def platform(broker: Mosquitto) -> Iterator[PlatformSubscriber]:
    """Subscribed before any agent starts, with a persistent session."""
    subscriber = PlatformSubscriber(broker.port, PREFIX, client_id="test-platform")
    subscriber.start()
    yield subscriber
    subscriber.stop()


@dataclass
class Process:
    """A child process with its output in a log file, for post-mortems."""

    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    kills: list[float] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """Set for the child on top of this one's environment."""

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The clock is taken as synchronised unless a test says otherwise: readings
            # would carry q=1 on a machine whose NTP state is unsynced (edge_agent/clock.py).
            env={**os.environ, CLOCK_ENV: "synced", "PYTHONUNBUFFERED": "1", **self.env},
        )

    def kill9(self) -> None:
        assert self.popen is not None
        self.kills.append(time.time())
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (-9 if it had to be killed after `timeout`).

        Never raises, so a fixture's teardown stops every process it started.
        """
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `edge-agent ARGS...` processes; all are stopped at the end of the test."""
    started: list[Process] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        process = Process(list(args), tmp_path / f"{name}.log", env=env or {})
        process.start()
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        if process.popen is not None and process.popen.poll() is None:
            process.terminate()


@dataclass
class Plant:
    device: str
    port: int
    process: Process


@pytest.fixture
def plant(tmp_path: Path, spawn: Callable[..., Process]) -> Callable[[list[dict[str, Any]]], Plant]:
    """Serve one simulated Modbus device whose points are given as scenario entries."""

    def start(points: list[dict[str, Any]], device: str = "plc-1") -> Plant:
        port = free_port()
        scenario = tmp_path / f"scenario-{device}.yaml"
        scenario.write_text(
            yaml.safe_dump(
                {"devices": [{"name": device, "port": port, "unit": 1, "points": points}]}
            )
        )
        process = spawn(f"sim-{device}", "simulate", str(scenario))
        wait_for_port(port)
        return Plant(device, port, process)

    return start


def agent_config(
    tmp_path: Path,
    broker_port: int,
    devices: list[dict[str, Any]],
    store: dict[str, Any] | None = None,
    *,
    metrics: dict[str, Any] | None = None,
    gateway: str = GATEWAY,
    **uplink: Any,
) -> Path:
    """Write an agent config for the test rig and return its path.

    `store` is merged into the store section; `uplink` keys override the
    uplink section, and a `mqtt` dict is merged into the loopback broker settings.
    The metrics server listens on a free port unless `metrics` says otherwise, so
    agents of tests run in parallel do not contend for 9108. `gateway` is the
    gateway code (and client id): tests sharing one broker give each agent its own,
    so no retained `state` of one is taken for another's.
    """
    config = {
        "gateway": {"code": gateway, "enterprise": ENTERPRISE},
        "uplink": {
            **uplink,
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker_port,
                "reconnect_max": "2s",
                **uplink.get("mqtt", {}),
            },
        },
        "store": {"path": str(tmp_path / "store.db"), **(store or {})},
        "devices": devices,
        "metrics": metrics or {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Rig:
    """The usual rig of an end-to-end test: a private broker, the platform subscriber
    (subscribed before any agent starts), and starters for simulated devices and processes."""

    tmp_path: Path
    broker: Mosquitto
    platform: PlatformSubscriber
    plant: Callable[..., Plant]
    spawn: Callable[..., Process]

    def agent_config(
        self, devices: list[dict[str, Any]], store: dict[str, Any] | None = None, **uplink: Any
    ) -> Path:
        """`agent_config` for this rig's directory and broker."""
        return agent_config(self.tmp_path, self.broker.port, devices, store, **uplink)

    def start_agent(
        self, devices: list[dict[str, Any]], store: dict[str, Any] | None = None, **uplink: Any
    ) -> Process:
        """`edge-agent run` on a config written for this rig."""
        return self.spawn("agent", "run", str(self.agent_config(devices, store, **uplink)))


@pytest.fixture
def rig(
    tmp_path: Path,
    broker: Mosquitto,
    platform: PlatformSubscriber,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> Rig:
    return Rig(tmp_path, broker, platform, plant, spawn)


@pytest.fixture
def link(broker: Mosquitto) -> Iterator[Proxy]:
    """A TCP proxy between the agent and the broker, to black-hole or slow the link."""
    with Proxy(broker.port) as proxy:
        yield proxy


ANNOUNCED = re.compile(r"simulating (\S+) on (\S+) unit")


def wait_for_simulator(process: Process, devices: int, within: float = 10.0) -> dict[str, str]:
    """Device name -> where it listens (host:port or a pty path), from its start-up lines."""
    deadline = time.monotonic() + within
    while True:
        found = dict(ANNOUNCED.findall(process.log()))
        if len(found) == devices:
            return found
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.05)


def reporting_every_poll(device: dict[str, Any]) -> dict[str, Any]:
    """`device` with every tag reported at each poll (report.every = its poll), for tests
    that count polls; without it, report by exception sends only changes and heartbeats."""
    tags = [
        {**tag, "report": {**tag.get("report", {}), "every": tag.get("poll", device["poll"])}}
        for tag in device["tags"]
    ]
    return {**device, "tags": tags}


def counter_device(port: int, poll_s: float, level: bool = True) -> dict[str, Any]:
    """A device with a counter that rises by 1 a second (hr:0) and, unless `level` is
    False, a level with a limit (hr:2)."""
    tags: list[dict[str, Any]] = [
        {"tag": "HZ01.CNT", "hazard": "HZ01", "address": "hr:0", "type": "uint32"},
    ]
    if level:
        tags.append(
            {
                "tag": "HZ01.LT101",
                "hazard": "HZ01",
                "address": "hr:2",
                "type": "float32",
                "limits": {"H": 15, "deadband": 0.5},
            }
        )
    return {
        "name": "plc-1",
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll": f"{int(poll_s * 1000)}ms",
        "tags": tags,
    }


def busy_device(
    plant: Callable[..., Plant], gas: dict[str, Any], limits: dict[str, float]
) -> dict[str, Any]:
    """A device that fills a store fast: 100 noisy float32 tags polled every 50 ms
    (2,000 readings/s), plus a gas detector HZ01.GT201 (hr:300) following `gas`."""
    points = [
        {"address": f"hr:{2 * i}", "type": "float32", "value": {"noise": {"mean": 50, "sd": 5}}}
        for i in range(100)
    ]
    points.append({"address": "hr:300", "type": "uint16", "value": gas})
    sim = plant(points)
    tags = [
        {"tag": f"HZ01.T{i:03d}", "hazard": "HZ01", "address": f"hr:{2 * i}", "type": "float32"}
        for i in range(100)
    ]
    gas_tag = {"tag": "HZ01.GT201", "hazard": "HZ01", "address": "hr:300", "type": "uint16"}
    tags.append({**gas_tag, "limits": limits})
    return {
        "name": "plc-1",
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": sim.port,
        "poll": "50ms",
        "tags": tags,
    }
