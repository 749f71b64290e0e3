"""The running agent tells about itself: /metrics, /healthz, `edge-agent status`, `state.clock`.

Real processes: the simulator, Mosquitto, `edge-agent run`; figures read back from the agent.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import GATEWAY, Process, Rig
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.cli import STATUS_DEGRADED, STATUS_HEALTHY
from edge_agent.demo.broker import free_port
from edge_agent.demo.platform import Received
from edge_agent.service.local import socket_path

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def plant_device(rig: Rig) -> dict[str, Any]:
    """plc-1 with a level above its H limit (an active alarm) and a steady pressure."""
    sim = rig.plant(
        [
            {"address": "hr:0", "type": "uint16", "value": {"const": 30}},
            {"address": "hr:1", "type": "uint16", "value": {"const": 5}},
        ]
    )
    tags = [
        {"tag": "HZ01.LT101", "hazard": "HZ01", "address": "hr:0", "type": "uint16",
         "limits": {"H": 20}},
        {"tag": "HZ01.PT101", "hazard": "HZ01", "address": "hr:1", "type": "uint16"},
    ]  # fmt: skip
    return {"name": "plc-1", "driver": "modbus", "host": "127.0.0.1", "port": sim.port,
            "poll": "200ms", "tags": tags}  # fmt: skip


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metrics(port: int) -> Samples:
    _, body = get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def wait_until_ok(port: int, timeout: float = 15) -> dict[str, Any]:
    """/healthz once it says ok (the device and the uplink come up within seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = get(port, "/healthz")
        except OSError:
            status, body = 0, b"{}"
        health: dict[str, Any] = json.loads(body)
        if status == 200 and health.get("status") == "ok":
            return health
        assert time.monotonic() < deadline, f"not ok within {timeout} s: {health}"
        time.sleep(0.2)


def states(rig: Rig) -> list[dict[str, Any]]:
    return [m.body for m in rig.platform.of_kind("state") if m.body.get("online")]


def rt_items(messages: list[Received]) -> list[dict[str, Any]]:
    return [item for m in messages if m.kind == "rt" for item in m.body["items"]]


def run_status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start(rig: Rig, port: int, clock: str = "synced") -> tuple[Process, Path]:
    config = rig.agent_config([plant_device(rig)], metrics={"listen": f"127.0.0.1:{port}"})
    return rig.spawn("agent", "run", str(config), env={"EDGE_AGENT_CLOCK": clock}), config


def test_metrics_health_and_status_show_the_running_agents_real_figures(rig: Rig) -> None:
    port = free_port()
    agent, config = start(rig, port)
    assert wait_until_ok(port) == {"status": "ok", "reasons": []}
    rig.platform.wait_for(lambda ms: len(rt_items(ms)) >= 2, 10, "readings")

    samples = metrics(port)
    plc = (("device", "plc-1"),)
    assert samples[("edge_agent_device_up", plc)] == 1
    assert samples[("edge_agent_device_polls_total", plc)] >= 1
    assert samples[("edge_agent_device_poll_errors_total", plc)] == 0
    assert samples[("edge_agent_device_poll_duration_seconds_count", plc)] >= 1
    assert samples[("edge_agent_tags", (("quality", "good"),))] == 2
    assert samples[("edge_agent_alarms_active", (("kind", "H"),))] == 1
    assert samples[("edge_agent_store_bytes", ())] > 0
    assert samples[("edge_agent_store_writable", ())] == 1
    assert samples[("edge_agent_uplink_connected", ())] == 1
    assert samples[("edge_agent_uplink_acked_total", ())] >= 1
    assert samples[("edge_agent_uplink_connects_total", ())] == 1
    assert samples[("edge_agent_clock_synced", ())] == 1

    done = run_status(config)
    assert done.returncode == STATUS_HEALTHY, done.stderr
    status = done.stdout.splitlines()
    assert status[0].endswith(": OK")
    assert "devices    1 up, 0 down" in status
    assert "tags       2 good" in status
    assert "alarms     1 active" in status
    assert any(line.strip().startswith("HZ01.LT101 H 30 since ") for line in status), status
    assert "back-log   nothing waits" in status
    assert "uplink     connected to 127.0.0.1:" in status[-1]

    rig.broker.stop()  # the uplink goes down: degraded, with the reason
    deadline = time.monotonic() + 10
    while not (reasons := json.loads(get(port, "/healthz")[1])["reasons"]):
        assert time.monotonic() < deadline, "the lost uplink never showed in /healthz"
        time.sleep(0.1)
    assert get(port, "/healthz")[0] == 200, "degraded, not failing"
    assert "uplink down for" in " ".join(reasons)
    assert metrics(port)[("edge_agent_uplink_connected", ())] == 0
    assert run_status(config).returncode == STATUS_DEGRADED
    assert stat.S_IMODE(socket_path(GATEWAY).stat().st_mode) == 0o660, "asked there first"
    assert agent.terminate() == 0, agent.log()
    assert not socket_path(GATEWAY).exists(), "removed at the stop"


def test_state_says_the_clock_is_synced(rig: Rig) -> None:
    start(rig, free_port())
    rig.platform.wait_for(lambda ms: bool(states(rig)), 15, "an online state")
    assert states(rig)[0]["clock"] == "synced"
    rig.platform.wait_for(lambda ms: bool(rt_items(ms)), 10, "readings")
    assert {item["q"] for item in rt_items(rig.platform.messages)} == {0}


def test_readings_of_an_unsynced_clock_go_with_q1_and_state_says_so(rig: Rig) -> None:
    port = free_port()
    start(rig, port, clock="unsynced")
    rig.platform.wait_for(lambda ms: len(rt_items(ms)) >= 2, 15, "readings")
    assert states(rig)[0]["clock"] == "unsynced"
    items = rt_items(rig.platform.messages)
    assert {item["q"] for item in items} == {1}
    assert {item["v"] for item in items} == {30, 5}, "values kept"
    _, body = get(port, "/healthz")
    assert "the system clock is not synchronised" in json.loads(body)["reasons"]
