"""kill -9 under load: nothing committed is lost, no seq gap, every copy of a seq identical.

Knobs (environment): EDGE_AGENT_TEST_KILLS (default 20) cycles of SIGKILL and
restart; lower it for a quick local run.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from conftest import Rig, counter_device, reporting_every_poll
from delivery import (
    Downtime,
    assert_copies_identical,
    assert_counter_complete,
    assert_no_seq_gap,
    drained,
)

KILLS = int(os.environ.get("EDGE_AGENT_TEST_KILLS", "20"))
POLL_S = 0.2
COMMIT_S = 0.25

pytestmark = pytest.mark.fault


def test_kill9_cycles_lose_nothing_committed(rig: Rig) -> None:
    sim = rig.plant(
        [
            {"address": "hr:0", "type": "uint32", "value": {"counter": {}}},
            {
                "address": "hr:2",
                "type": "float32",
                "value": {"sine": {"mean": 12, "amplitude": 5, "period": "7s"}},
            },
        ]
    )
    # Every poll reported: the check below reads holes in sampling, not report by exception.
    device = reporting_every_poll(counter_device(sim.port, POLL_S))
    agent = rig.start_agent([device], batch={"linger": "300ms"})
    rng = random.Random(2)
    downtimes = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(1.5, 3.5))
        agent.kill9()
        killed = time.time()
        time.sleep(rng.uniform(0.2, 1.0))
        agent.start()
        downtimes.append(Downtime(killed, time.time()))
    time.sleep(2)
    rig.platform.wait_for(drained, timeout=30, what="state with backlog 0")
    messages = rig.platform.messages

    offline = [m for m in messages if m.kind == "state" and not m.body["online"]]
    assert not offline, "a restart within the will delay must not flap the gateway offline"
    last = assert_no_seq_gap(messages)
    duplicates = assert_copies_identical(messages)
    assert_counter_complete(messages, "HZ01.CNT", downtimes, slack_s=COMMIT_S + POLL_S + 0.3)
    assert agent.terminate() == 0, agent.log()
    print(f"kill -9 x{KILLS}: seq 1..{last} complete, {duplicates} duplicate copies")
