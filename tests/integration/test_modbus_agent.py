"""The tank farm end to end: every transport at once through `edge-agent run`.

The simulator serves drivers/simulator/scenarios/tank-farm.yaml in its own
process (a Modbus TCP PLC, two RTU units on one pseudo-terminal, a gas
controller over RTU-over-TCP); the agent runs config/tank-farm.yaml with only
the links pointed at it; the platform subscriber checks what arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Process, agent_config, reporting_every_poll, wait_for_simulator

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber, Received

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "tank-farm.yaml"
CONFIG = ROOT / "config" / "tank-farm.yaml"


def tank_farm_devices(where: dict[str, str]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["devices"]
    for device in devices:
        if device["transport"] == "rtu":
            # A pseudo-terminal refuses parity (EINVAL): the simulated line runs 8N1.
            device["serial"] |= {"port": where["gas-bus"], "parity": "N"}
        else:
            host, port = where[device["name"]].split(":")
            device |= {"host": host, "port": int(port)}
    return devices


def good_readings(messages: list[Received]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        if message.kind == "rt":
            for item in message.body["items"]:
                if item["q"] == 0:
                    counts[item["tag"]] = counts.get(item["tag"], 0) + 1
    return counts


def test_the_agent_polls_the_whole_tank_farm_over_every_transport(
    tmp_path: Path,
    broker: Mosquitto,
    platform: PlatformSubscriber,
    spawn: Callable[..., Process],
) -> None:
    simulator = spawn("simulator", "simulate", str(SCENARIO))
    devices = [reporting_every_poll(d) for d in tank_farm_devices(wait_for_simulator(simulator, 3))]
    tags = {t["tag"] for d in devices for t in d["tags"]}
    config = agent_config(tmp_path, broker.port, devices, batch={"linger": "200ms"})
    agent = spawn("agent", "run", str(config))

    def every_tag_good_and_the_levels_three_times(messages: list[Received]) -> bool:
        counts = good_readings(messages)
        return set(counts) == tags and counts.get("HZ01.LT101", 0) >= 3

    platform.wait_for(every_tag_good_and_the_levels_three_times, 20, "every tag with q=0")
    assert agent.terminate() == 0
    counts = good_readings(platform.messages)
    # Poll groups through the runtime: the 1 h program name once, the 1 s levels each poll.
    assert counts["HZ01.PLCPRG"] == 1
    assert counts["HZ01.GT101"] >= 3
    assert counts["HZ01.AT301"] >= 3  # the second unit on the same serial line
    assert counts["HZ01.GT201"] >= 3  # RTU over TCP
    assert "link_down" not in agent.log()
