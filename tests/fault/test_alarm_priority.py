"""Alarms overtake a back-log on a slow link, and the test can tell when they do not.

A back-log builds while the link is down; the link then comes back as a slow
WAN (about 16 KiB/s, 200 ms each way, through edge_agent.demo.proxy) with live
readings filling half of it. A gas leak is raised while the back-log still
drains. With alarm priority the alarm reaches the platform ahead of back-fill
messages that waited before it was raised; with priority switched off
(uplink.alarm_priority: false, a switch for this test) it arrives only after
all of them. Proven by arrival order, not by a stopwatch.

Knob (environment): EDGE_AGENT_TEST_PRIORITY_OUTAGE_S (default 6), how long
the back-log builds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from conftest import Rig
from delivery import drained

from edge_agent.demo.platform import Received
from edge_agent.demo.proxy import Proxy

pytestmark = pytest.mark.fault

OUTAGE_S = float(os.environ.get("EDGE_AGENT_TEST_PRIORITY_OUTAGE_S", "6"))
LINK_RATE = 16 * 1024
"""Slow enough that the back-log still drains when the leak comes (float32 readings go out
in their shortest form, about 60 bytes each)."""
LINK_DELAY_S = 0.2
LEAK_AFTER_RESUME_S = 2.0


def plant_points(leak_at_s: float) -> list[dict[str, Any]]:
    noise = [
        {"address": f"hr:{2 * i}", "type": "float32", "value": {"noise": {"mean": 50, "sd": 5}}}
        for i in range(10)
    ]
    leak = {
        "base": 3,
        "peak": 60,
        "start": f"{leak_at_s}s",
        "rise": "500ms",
        "hold": "1h",
        "fall": "1s",
    }
    return [*noise, {"address": "hr:100", "type": "uint16", "value": {"leak": leak}}]


def device(port: int) -> dict[str, Any]:
    tags = [
        {"tag": f"HZ01.TT{i:03}", "hazard": "HZ01", "address": f"hr:{2 * i}", "type": "float32"}
        for i in range(10)
    ]
    gas = {"tag": "HZ01.GT201", "hazard": "HZ01", "address": "hr:100", "limits": {"H": 25}}
    return {
        "name": "plc-1",
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "tags": [*tags, gas],
    }


def overtaken(messages: list[Received]) -> tuple[int, int]:
    """(back-fill readings waiting before the alarm's sample, the messages of them that came
    after the alarm)."""
    arrivals = [m for m in messages if m.kind in {"rt", "alarm"}]
    alarm_at = next(n for n, m in enumerate(arrivals) if m.kind == "alarm")
    raised_ts = arrivals[alarm_at].body["items"][0]["ts"]
    waiting = [
        n
        for n, m in enumerate(arrivals)
        if m.kind == "rt" and m.body["hist"] and max(i["ts"] for i in m.body["items"]) < raised_ts
    ]
    readings = sum(len(arrivals[n].body["items"]) for n in waiting)
    return readings, sum(1 for n in waiting if n > alarm_at)


@pytest.mark.parametrize("priority", [True, False], ids=["priority", "no-priority"])
def test_an_alarm_overtakes_the_back_log_on_a_slow_link(
    rig: Rig, link: Proxy, priority: bool
) -> None:
    leak_at_s = OUTAGE_S + LEAK_AFTER_RESUME_S
    sim = rig.plant(plant_points(leak_at_s))
    link.pause()
    config = rig.agent_config([device(sim.port)], alarm_priority=priority, mqtt={"port": link.port})
    agent = rig.spawn("agent", "run", str(config))
    time.sleep(OUTAGE_S)
    link.throttle(LINK_RATE, LINK_DELAY_S)
    link.resume()
    rig.platform.wait_for(
        lambda ms: any(m.kind == "alarm" for m in ms), leak_at_s + 90, "the gas alarm"
    )
    rig.platform.wait_for(drained, 90, "the back-log drained")
    waiting, behind = overtaken(rig.platform.messages)
    assert waiting >= 300, f"too little back-log to prove anything: {waiting} readings"
    if priority:
        assert behind > 0, "the alarm came after every back-fill message that waited"
    else:
        assert behind == 0, f"without priority the alarm still overtook {behind} messages"
    assert agent.terminate() == 0, agent.log()
