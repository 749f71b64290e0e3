"""The tailings-pond example runs as written against its simulated data logger.

Only what must differ on a test rig is changed: where the devices and the
broker are, and where the store lives. (The tank farm runs in
test_modbus_agent.py, the underground mine over OPC UA in test_opcua_agent.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Process, wait_for_simulator

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber, Received

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


def on_rig(
    config: dict[str, Any], tmp_path: Path, broker: Mosquitto, where: dict[str, str]
) -> Path:
    """The example with the rig's endpoints; everything else as written."""
    config["uplink"]["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "transport": "tcp"}
    config["store"]["path"] = str(tmp_path / "store.db")
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    for device in config["devices"]:
        host, port = where[device["name"]].split(":")
        device |= {"host": host, "port": int(port)}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def latest(messages: list[Received]) -> dict[str, dict[str, Any]]:
    return {i["tag"]: i for m in messages if m.kind == "rt" for i in m.body["items"]}


def test_the_tailings_pond_reports_every_point_and_its_short_dry_beach(
    tmp_path: Path,
    broker: Mosquitto,
    platform: PlatformSubscriber,
    spawn: Callable[..., Process],
) -> None:
    scenario = ROOT / "drivers" / "simulator" / "scenarios" / "tailings-pond.yaml"
    simulator = spawn("simulator", "simulate", str(scenario))
    example = yaml.safe_load((ROOT / "config" / "tailings-pond.yaml").read_text(encoding="utf-8"))
    tags = {t["tag"] for d in example["devices"] for t in d["tags"]}
    config = on_rig(example, tmp_path, broker, wait_for_simulator(simulator, 1))
    agent = spawn("agent", "run", str(config))

    def every_point_the_alarm_and_meta(messages: list[Received]) -> bool:
        alarms = [i for m in messages if m.kind == "alarm" for i in m.body["items"]]
        meta = [m for m in messages if m.kind == "meta"]
        return set(latest(messages)) == tags and bool(alarms) and bool(meta)

    platform.wait_for(every_point_the_alarm_and_meta, 20, "every point, the alarm and meta")
    readings = latest(platform.messages)
    assert {i["q"] for i in readings.values()} == {0}
    assert readings["WK01.BL01"]["v"] == 96.5
    alarms = [i for m in platform.messages if m.kind == "alarm" for i in m.body["items"]]
    assert [(a["tag"], a["kind"], a["state"], a["limit"]) for a in alarms] == [
        ("WK01.BL01", "L", "raised", 100)
    ]
    (meta,) = [m for m in platform.messages if m.kind == "meta"]
    assert {t["every"] for t in meta.body["tags"]} == {60}, "a tailings pond reports every 60 s"
    assert agent.terminate() == 0, agent.log()
