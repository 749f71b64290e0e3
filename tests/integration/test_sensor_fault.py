"""A 4-20 mA loop outside the NAMUR NE43 window: q=3 readings and a FAULT alarm, end to end."""

from __future__ import annotations

from conftest import Rig
from delivery import envelopes

from edge_agent.demo.platform import Received


def fault_alarms(messages: list[Received]) -> list[dict[str, object]]:
    return [
        item
        for m in envelopes(messages)
        if m.kind == "alarm"
        for item in m.body["items"]
        if item["kind"] == "FAULT"
    ]


def test_a_broken_loop_reports_q3_and_raises_and_clears_fault(rig: Rig) -> None:
    """Loop current in µA swings 1..23 mA every 6 s: below 3.6 and above 21 mA is a fault."""
    sim = rig.plant(
        [
            {
                "address": "ir:0",
                "type": "uint16",
                "value": {"sine": {"mean": 12000, "amplitude": 11000, "period": "6s"}},
            }
        ]
    )
    tag = {
        "tag": "HZ01.GT201",
        "hazard": "HZ01",
        "address": "ir:0",
        "type": "uint16",
        "current": {"raw_4ma": 4000, "raw_20ma": 20000},
        "range": {"low": 0, "high": 100},
    }
    device = {"name": "ai-1", "driver": "modbus", "host": "127.0.0.1", "port": sim.port,
              "poll": "200ms", "tags": [tag]}  # fmt: skip
    agent = rig.start_agent([device])
    rig.platform.wait_for(
        lambda ms: len([a for a in fault_alarms(ms) if a["state"] == "cleared"]) >= 2,
        20,
        "two FAULT alarms raised and cleared",
    )
    assert agent.terminate() == 0

    alarms = fault_alarms(rig.platform.messages)
    for raised, cleared in zip(alarms[::2], alarms[1::2], strict=False):
        assert (raised["state"], cleared["state"]) == ("raised", "cleared")
        assert raised["id"] == cleared["id"]
        assert raised["v"] is None
        assert "limit" not in raised
    readings = [
        item for m in envelopes(rig.platform.messages) if m.kind == "rt" for item in m.body["items"]
    ]
    assert {item["q"] for item in readings} >= {0, 3}
    assert all(item["v"] is None for item in readings if item["q"] == 3)
