"""SIGINT (Ctrl-C in a terminal) stops the agent as SIGTERM does: flushed, offline, within 10 s.

SIGTERM is tested in test_end_to_end.py; SIGHUP in test_reload.py.
"""

from __future__ import annotations

import signal
import time

from agent_log import wait_for_event
from conftest import Rig, counter_device
from test_end_to_end import assert_stopped_offline


def test_sigint_stops_cleanly_and_says_offline(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    agent = rig.start_agent([counter_device(sim.port, 0.2, level=False)])
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "readings")
    assert agent.popen is not None
    stopping = time.monotonic()
    agent.popen.send_signal(signal.SIGINT)
    code = agent.popen.wait(10)
    assert_stopped_offline(rig.broker, rig.platform, agent, code, time.monotonic() - stopping)
    assert wait_for_event(agent, "agent_stopped")
