"""config/underground-mine.yaml end to end: OPC UA simulator -> agent -> Mosquitto -> platform.

A server restart (tests/mine.py says how the mine is run); a server gone for
minutes is the fault campaign tests/fault/test_opcua_server_gone.py.
"""

from __future__ import annotations

import time

import pytest
from conftest import Rig
from delivery import assert_no_seq_gap, envelopes
from mine import items, mine_device, simulate_args

from edge_agent.demo.broker import free_port, wait_for_port

pytestmark = pytest.mark.broker


def test_the_mine_config_runs_and_a_server_restart_raises_and_clears_comm(rig: Rig) -> None:
    """Every tag arrives good; the server restarts: its tags go q=2, COMM is raised on each
    and cleared when the subscription is back, and no `seq` is missing."""
    port = free_port()
    simulate = simulate_args(port)
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
