"""An OPC UA server gone for a minute and more, not the restart of a second or two.

The mine's server process is stopped; the agent keeps trying at its backoff's cap
(connection refused each time) for the whole outage. What must hold: every tag
goes on reporting, q=2 with no value, at least once per heartbeat; COMM is raised
once per tag and cleared once when the server is back; the retries leak no
sockets and write no log line each; no `seq` is missing.

Knob (environment): EDGE_AGENT_TEST_OPCUA_OUTAGE_S (default 60) seconds the
server is gone.
"""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest
import yaml
from agent_log import at
from conftest import Process, Rig
from delivery import assert_no_seq_gap
from mine import items, mine_device, simulate_args

from edge_agent.demo.broker import free_port, wait_for_port

OUTAGE_S = float(os.environ.get("EDGE_AGENT_TEST_OPCUA_OUTAGE_S", "60"))
RECONNECT_MAX_S = 5.0
"""The backoff's cap: a minute away is a dozen refused connects, most of them at the cap."""
HEARTBEAT_S = 20.0
"""gateway.site: mine -- every tag reports at least this often, good or bad."""

pytestmark = pytest.mark.fault


def open_files(process: Process) -> int:
    assert process.popen is not None
    return len(os.listdir(f"/proc/{process.popen.pid}/fd"))


def log_records(process: Process, since: float, until: float) -> list[str]:
    """The agent's JSON log lines stamped in [since, until]."""
    return [
        line
        for line in process.log().splitlines()
        if line.startswith("{") and since <= at(json.loads(line)) <= until
    ]


def test_a_server_gone_for_a_minute_reports_bad_raises_comm_once_and_comes_back(
    rig: Rig,
) -> None:
    port = free_port()
    server = rig.spawn("opcua-sim", *simulate_args(port))
    wait_for_port(port)
    device = mine_device(port, reconnect_max=f"{RECONNECT_MAX_S:g}s")
    tags = {t["tag"] for t in device["tags"]}
    config = rig.agent_config([device])
    mine = yaml.safe_load(config.read_text())
    mine["gateway"]["site"] = "mine"
    config.write_text(yaml.safe_dump(mine, sort_keys=False))
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(
        lambda ms: {i["tag"] for i in items(ms, "rt") if i["q"] == 0} == tags, 20, "every tag good"
    )
    files_before = open_files(agent)

    server.terminate()
    gone = time.time()
    time.sleep(OUTAGE_S)
    quiet_log = log_records(agent, gone + 5, time.time())
    files_during = open_files(agent)
    back = time.time()  # before the spawn: the agent may be served before wait_for_port says so
    rig.spawn("opcua-sim-again", *simulate_args(port))
    wait_for_port(port)
    rig.platform.wait_for(
        lambda ms: len([i for i in items(ms, "alarm") if i["state"] == "cleared"]) == len(tags),
        RECONNECT_MAX_S + 15,
        "COMM cleared on every tag",
    )
    rig.platform.wait_for(
        lambda ms: (
            {i["tag"] for i in items(ms, "rt") if i["q"] == 0 and i["ts"] / 1000 > back} == tags
        ),
        HEARTBEAT_S + 5,
        "every tag good again",
    )
    files_after = open_files(agent)
    assert agent.terminate() == 0, agent.log()

    messages = rig.platform.messages
    assert_no_seq_gap(messages)
    readings = items(messages, "rt")
    for tag in tags:
        during = [i for i in readings if i["tag"] == tag and gone < i["ts"] / 1000 < back]
        # 2 s after the stop, the server's last values are no longer on their way: bad only.
        late = [i for i in during if i["ts"] / 1000 > gone + 2]
        assert late, tag
        assert all(i["q"] == 2 and i["v"] is None for i in late), (tag, late)
        times = [gone, *sorted({i["ts"] / 1000 for i in during}), back]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= HEARTBEAT_S + 1, (tag, gaps)

    comm = [i for i in items(messages, "alarm") if i["kind"] == "COMM"]
    raised = {i["tag"]: i["id"] for i in comm if i["state"] == "raised"}
    cleared = {i["tag"]: i["id"] for i in comm if i["state"] == "cleared"}
    assert len(comm) == 2 * len(tags), "one raise and one clear per tag, whatever the retries"
    assert raised == cleared
    assert set(raised) == tags

    assert files_during <= files_before + 2, "refused connects must not leak sockets"
    assert files_after <= files_before + 2
    assert len(quiet_log) <= 3, "a retry at the cap logs nothing:\n" + "\n".join(quiet_log)
