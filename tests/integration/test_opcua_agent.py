"""config/underground-mine.yaml end to end: OPC UA simulator -> agent -> Mosquitto -> platform.

The simulator runs as `edge-agent simulate` in its own process, so stopping it
and starting it again on the same port is a real server restart (sessions and
subscriptions gone). The device is the shipped config's, pointed at loopback
without security (the security modes have their own tests).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Rig
from delivery import assert_no_seq_gap, envelopes

from edge_agent.demo.broker import free_port, wait_for_port
from edge_agent.demo.platform import Received

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "drivers" / "simulator" / "scenarios" / "underground-mine.yaml"


def mine_device(port: int) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "config" / "underground-mine.yaml").read_text("utf-8"))
    device: dict[str, Any] = config["devices"][0]
    for key in ("security", "username_file", "password_file"):
        device.pop(key)
    return {
        **device,
        "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "poll": "500ms",
        "publishing_interval": "200ms",
        "comm_alarm_after": "1s",
        "reconnect_min": "200ms",
        "reconnect_max": "1s",
    }


def items(messages: list[Received], kind: str) -> list[dict[str, Any]]:
    return [i for m in messages if m.kind == kind for i in m.body["items"]]


def test_the_mine_config_runs_and_a_server_restart_raises_and_clears_comm(rig: Rig) -> None:
    """Every tag arrives good; the server restarts: its tags go q=2, COMM is raised on each
    and cleared when the subscription is back, and no `seq` is missing."""
    port = free_port()
    simulate = ("simulate", str(SCENARIO), "--port", f"ua-mine-vent={port}")
    server = rig.spawn("opcua-sim", *simulate)
    wait_for_port(port)
    device = mine_device(port)
    tags = {t["tag"] for t in device["tags"]}
    agent = rig.start_agent([device])
    rig.platform.wait_for(
        lambda ms: {i["tag"] for i in items(ms, "rt") if i["q"] == 0} == tags, 20, "every tag good"
    )
    server.terminate()
    rig.platform.wait_for(
        lambda ms: {i["tag"] for i in items(ms, "alarm") if i["kind"] == "COMM"} == tags,
        15,
        "COMM raised on every tag",
    )
    rig.spawn("opcua-sim-again", *simulate)
    wait_for_port(port)
    restarted = time.time()
    rig.platform.wait_for(
        lambda ms: len([i for i in items(ms, "alarm") if i["state"] == "cleared"]) == len(tags),
        20,
        "COMM cleared",
    )
    rig.platform.wait_for(
        lambda ms: any(i["q"] == 0 and i["ts"] / 1000 > restarted for i in items(ms, "rt")),
        10,
        "good readings after the restart",
    )
    assert agent.terminate() == 0, agent.log()
    messages = rig.platform.messages
    assert_no_seq_gap(messages)
    readings = items(messages, "rt")
    assert {i["tag"] for i in readings if i["q"] == 2 and i["v"] is None} == tags
    comm = [i for i in items(messages, "alarm") if i["kind"] == "COMM"]
    raised = {i["tag"]: i["id"] for i in comm if i["state"] == "raised"}
    assert raised == {i["tag"]: i["id"] for i in comm if i["state"] == "cleared"}
    assert envelopes(messages)
