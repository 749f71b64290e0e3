"""A running agent on a simulated plant, for the live views (`edge-agent top`, the status page).

The plant: a counter that rises by 1 a second (a value that visibly changes),
a level held at 16 m above its H limit of 15 (an alarm), and a string tag
holding markup (which must be shown as text).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import Process, Rig

from edge_agent.demo.broker import free_port, wait_for_port

MARKUP = "<script>x</script>"
"""The string tag's value: 18 characters, within its 10 registers."""

POINTS = [
    {"address": "hr:0", "type": "uint32", "value": {"counter": {}}},
    {"address": "hr:2", "type": "float32", "value": {"const": 16.0}},
    {"address": "hr:4", "type": "string", "length": 10, "value": {"const": MARKUP}},
]


def device(port: int) -> dict[str, Any]:
    """The agent's side of the plant on `port`, reconnecting within a second."""
    return {
        "name": "plc-1",
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll": "200ms",
        "timeout": "500ms",
        "reconnect_max": "1s",
        "tags": [
            {"tag": "HZ01.CNT", "hazard": "HZ01", "address": "hr:0", "type": "uint32"},
            {"tag": "HZ01.LT101", "hazard": "HZ01", "name": "LT-101 tank level", "unit": "m",
             "address": "hr:2", "type": "float32", "limits": {"H": 15}},
            {"tag": "HZ01.MSG", "hazard": "HZ01", "name": "panel message", "address": "hr:4",
             "type": "string", "length": 10},
        ],
    }  # fmt: skip


def start_agent(rig: Rig, plc_port: int) -> tuple[Path, int]:
    """`edge-agent run` polling `plc_port`; its config and the port of its HTTP server, once
    that answers."""
    config = rig.agent_config([device(plc_port)])
    port = int(yaml.safe_load(config.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    rig.spawn("agent", "run", str(config))
    wait_for_port(port)
    return config, port


def start_plant(rig: Rig, port: int) -> Process:
    """The simulator serving POINTS on `port` (chosen before the agent's config names it)."""
    scenario = rig.tmp_path / "plant.yaml"
    scenario.write_text(
        yaml.safe_dump({"devices": [{"name": "plc-1", "port": port, "unit": 1, "points": POINTS}]})
    )
    process = rig.spawn("plant", "simulate", str(scenario))
    wait_for_port(port)
    return process


def start_live(rig: Rig) -> tuple[Path, int]:
    """Plant and agent, and the agent's config and HTTP port once every tag is good."""
    plc = free_port()
    start_plant(rig, plc)
    config, port = start_agent(rig, plc)
    wait_for_tags(port, lambda tags: all(tag["quality"] == "good" for tag in tags.values()))
    return config, port


def wait_for_tags(
    port: int, done: Callable[[dict[str, dict[str, Any]]], bool], within: float = 10.0
) -> dict[str, dict[str, Any]]:
    """The agent's /tags by tag name, once `done` says so."""
    deadline = time.monotonic() + within
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/tags", timeout=2) as response:
            tags = {tag["tag"]: tag for tag in json.load(response)["tags"]}
        if done(tags):
            return tags
        assert time.monotonic() < deadline, tags
        time.sleep(0.1)
