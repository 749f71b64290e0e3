"""The alarm engine end to end: simulator -> agent -> Mosquitto -> platform.

Alarms that survive kill -9, COMM for a whole device in one message, window
statistics on `stat`, report by exception, and the retained `meta`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from agent_log import events
from conftest import Rig
from delivery import envelopes

from edge_agent.demo.platform import Received

pytestmark = pytest.mark.broker


def gas_device(port: int, **tag_fields: Any) -> dict[str, Any]:
    gas = {"tag": "HZ01.GT201", "hazard": "HZ01", "address": "hr:0", "type": "uint16"}
    return {
        "name": "plc-1",
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "300ms",
        "comm_alarm_after": "1s",
        "tags": [{**gas, **tag_fields}],
    }


def alarm_items(messages: list[Received]) -> list[dict[str, Any]]:
    """The alarm items as the platform takes them: a message sent again with its `seq`
    (its PUBACK was not yet recorded when the agent was killed) counts once."""
    seen: set[int] = set()
    items = []
    for message in messages:
        if message.kind != "alarm" or message.body["seq"] in seen:
            continue
        seen.add(message.body["seq"])
        items += message.body["items"]
    return items


@pytest.mark.parametrize("restart", ["while_active", "after_it_cleared"])
def test_an_alarm_active_at_a_kill9_is_not_raised_again_and_is_cleared_once(
    rig: Rig, restart: str
) -> None:
    leak = {"base": 3, "peak": 40, "start": "1s", "rise": "500ms", "hold": "6s", "fall": "500ms"}
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"leak": leak}}])
    device = gas_device(sim.port, limits={"H": 25, "deadband": 2})
    config = rig.agent_config([device])
    first = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: len(alarm_items(ms)) == 1, 15, "H raised")
    first.kill9()
    if restart == "after_it_cleared":
        time.sleep(8)  # the leak is over while no agent runs
    second = rig.spawn("agent-again", "run", str(config))
    rig.platform.wait_for(lambda ms: len(alarm_items(ms)) >= 2, 20, "H cleared")
    time.sleep(0.5)
    items = alarm_items(rig.platform.messages)
    assert [(i["kind"], i["state"]) for i in items] == [("H", "raised"), ("H", "cleared")]
    assert items[0]["id"] == items[1]["id"]
    assert items[1]["limit"] == 25
    assert events(second, "alarms_restored")[0]["active"] == 1
    assert second.terminate() == 0, second.log()


def test_a_lost_device_raises_comm_on_every_tag_in_one_message_and_clears_on_return(
    rig: Rig,
) -> None:
    points = [
        {"address": "hr:0", "type": "uint16", "value": {"const": 5}},
        {"address": "hr:1", "type": "uint16", "value": {"const": 6}},
    ]
    sim = rig.plant(points)
    device = gas_device(sim.port)
    device["tags"].append({"tag": "HZ01.PT101", "hazard": "HZ01", "address": "hr:1"})
    agent = rig.start_agent([device])
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "first readings")
    sim.process.kill9()
    rig.platform.wait_for(lambda ms: len(alarm_items(ms)) == 2, 10, "COMM on both tags")
    raised = [m for m in rig.platform.messages if m.kind == "alarm"]
    assert len(raised) == 1, "one device's COMM alarms travel together"
    assert {(i["tag"], i["kind"], i["state"], i["v"]) for i in raised[0].body["items"]} == {
        ("HZ01.GT201", "COMM", "raised", None),
        ("HZ01.PT101", "COMM", "raised", None),
    }
    scenario = rig.tmp_path / "scenario-plc-1.yaml"
    rig.spawn("plant-again", "simulate", str(scenario))
    rig.platform.wait_for(lambda ms: len(alarm_items(ms)) == 4, 15, "COMM cleared")
    items = alarm_items(rig.platform.messages)
    cleared = {i["tag"]: i["id"] for i in items if i["state"] == "cleared"}
    assert cleared == {i["tag"]: i["id"] for i in items if i["state"] == "raised"}
    assert agent.terminate() == 0, agent.log()


def test_statistics_arrive_per_wall_clock_window(rig: Rig) -> None:
    ramp = {"ramp": {"from": 0, "to": 100, "period": "20s"}}
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": ramp}])
    config = rig.agent_config([gas_device(sim.port)])
    data = yaml.safe_load(config.read_text())
    data["stats"] = {"window": "10s"}
    config.write_text(yaml.safe_dump(data))
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(
        lambda ms: any(m.kind == "stat" and m.body["items"][0]["n"] >= 50 for m in ms),
        35,
        "a full 10 s window",
    )
    stat = next(
        m for m in rig.platform.messages if m.kind == "stat" and m.body["items"][0]["n"] >= 50
    )
    (item,) = stat.body["items"]
    assert set(item) == {"tag", "hz", "ts", "win", "min", "max", "avg", "n", "bad"}
    assert item["ts"] % 10_000 == 0
    assert item["win"] == 10
    assert item["min"] <= item["avg"] <= item["max"]
    assert item["bad"] == 0
    assert stat.body["seq"] in {m.body["seq"] for m in envelopes(rig.platform.messages)}
    assert agent.terminate() == 0, agent.log()


def test_a_steady_value_reports_only_on_its_heartbeat(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"const": 7}}])
    agent = rig.start_agent([gas_device(sim.port, report={"every": "2s"})])

    def readings(messages: list[Received]) -> list[dict[str, Any]]:
        return [i for m in messages if m.kind == "rt" for i in m.body["items"]]

    # Judged by the samples' own times, not the test's clock, so a slow start-up
    # on a loaded machine does not shorten the window.
    rig.platform.wait_for(lambda ms: bool(readings(ms)), 15, "the first reading")
    first = readings(rig.platform.messages)[0]["ts"]
    rig.platform.wait_for(
        lambda ms: readings(ms)[-1]["ts"] >= first + 5000, 15, "readings past 5 s"
    )
    window = [r for r in readings(rig.platform.messages) if r["ts"] < first + 5000]
    # Polled 50 times in those 5 s; reported at start and about every 1.9 s since.
    assert len(window) == 3, window
    assert agent.terminate() == 0, agent.log()


def meta_of(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.kind == "meta"]


def test_meta_is_retained_and_published_again_only_when_the_tags_change(rig: Rig) -> None:
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"const": 7}}])
    fields = {"name": "罐区可燃气体 GT-201", "unit": "%LEL", "range": {"low": 0, "high": 100}}
    device = gas_device(sim.port, limits={"level1": 25, "level2": 50}, **fields)
    first = rig.start_agent([device])
    rig.platform.wait_for(lambda ms: bool(meta_of(ms)), 15, "meta")
    (meta,) = meta_of(rig.platform.messages)
    assert meta.body["config"].startswith("sha256:")
    assert meta.body["tags"] == [
        {
            "tag": "HZ01.GT201",
            "hz": "HZ01",
            "name": "罐区可燃气体 GT-201",
            "type": "uint16",
            "unit": "%LEL",
            "range": [0, 100],
            "limits": {"HH": 50, "H": 25},
            "every": 60,
        }
    ]
    assert first.terminate() == 0

    same = rig.spawn("agent-same", "run", str(rig.agent_config([device])))
    rig.platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 2, 15, "readings")
    time.sleep(1.5)  # past the wait for the retained meta
    assert events(same, "meta_published") == [], "an unchanged config is not published again"
    assert same.terminate() == 0

    changed_device = {**device, "tags": [{**device["tags"][0], "unit": "ppm"}]}
    changed = rig.spawn("agent-changed", "run", str(rig.agent_config([changed_device])))
    rig.platform.wait_for(lambda ms: len(meta_of(ms)) == 2, 15, "meta again")
    new = meta_of(rig.platform.messages)[-1]
    assert new.body["config"] != meta.body["config"]
    assert new.body["tags"][0]["unit"] == "ppm"
    assert changed.terminate() == 0
