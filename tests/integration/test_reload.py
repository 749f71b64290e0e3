"""SIGHUP reloads the config transactionally: a broken file changes nothing; a good one is
applied, and a device whose config did not change keeps its connection."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent_log import events, wait_for_event
from conftest import GATEWAY, Process, Rig

from edge_agent.cli import STATUS_DEGRADED, STATUS_HEALTHY
from edge_agent.demo.platform import Received
from edge_agent.service.local import socket_path

METRICS_OFF = {"enabled": False}


def modbus(name: str, port: int, *addresses: int) -> dict[str, Any]:
    tags = [
        {"tag": f"HZ01.{name.upper()}{a}", "hazard": "HZ01", "address": f"hr:{a}",
         "type": "uint16", "report": {"every": "200ms"}}
        for a in addresses
    ]  # fmt: skip
    return {"name": name, "driver": "modbus", "host": "127.0.0.1", "port": port,
            "poll": "200ms", "tags": tags}  # fmt: skip


def counter_points(count: int) -> list[dict[str, Any]]:
    return [
        {"address": f"hr:{a}", "type": "uint16", "value": {"counter": {}}} for a in range(count)
    ]


def tags_received(messages: list[Received]) -> set[str]:
    return {item["tag"] for m in messages if m.kind == "rt" for item in m.body["items"]}


def hang_up(agent: Process) -> None:
    assert agent.popen is not None
    agent.popen.send_signal(signal.SIGHUP)


def test_a_broken_config_is_refused_with_its_place_and_the_agent_goes_on(rig: Rig) -> None:
    sim = rig.plant(counter_points(1))
    config = rig.agent_config([modbus("plc-a", sim.port, 0)], metrics=METRICS_OFF)
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: bool(tags_received(ms)), 15, "readings")

    text = config.read_text()
    config.write_text(text.replace("type: uint16", "type: flaot16"))
    hang_up(agent)
    refused = wait_for_event(agent, "reload_refused")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "type: uint16" in row)
    assert any(p.startswith(f"{config}:{line}:") and "flaot16" in p for p in refused["problems"])

    before = len(rig.platform.of_kind("rt"))
    rig.platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) > before + 2, 10,
                          "readings after the refused reload")  # fmt: skip
    assert agent.terminate() == 0, agent.log()


def test_a_tag_added_on_one_device_leaves_the_other_connected(rig: Rig) -> None:
    sim_a, sim_b = rig.plant(counter_points(1), "plc-a"), rig.plant(counter_points(2), "plc-b")
    devices = [modbus("plc-a", sim_a.port, 0), modbus("plc-b", sim_b.port, 0)]
    config = rig.agent_config(devices, metrics=METRICS_OFF)
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: len(tags_received(ms)) == 2, 15, "both devices' readings")

    devices[1] = modbus("plc-b", sim_b.port, 0, 1)
    assert rig.agent_config(devices, metrics=METRICS_OFF) == config
    hang_up(agent)
    reloaded = wait_for_event(agent, "config_reloaded")
    assert reloaded["devices_kept"] == ["plc-a"]
    assert reloaded["devices_new"] == ["plc-b"]
    rig.platform.wait_for(lambda ms: "HZ01.PLC-B1" in tags_received(ms), 15, "the new tag")

    link_ups = [e for e in events(agent, "link_up") if e["device"] == "plc-a"]
    assert len(link_ups) == 1, "plc-a kept its connection"
    assert len([e for e in events(agent, "link_up") if e["device"] == "plc-b"]) == 2

    # It runs the edited file now: `status` describes it, on its socket (metrics are off).
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (STATUS_HEALTHY, STATUS_DEGRADED), done.stderr
    assert json.loads(done.stdout)["answered_on"] == str(socket_path(GATEWAY))
    assert agent.terminate() == 0, agent.log()


def test_without_a_file_to_read_the_reload_is_refused(rig: Rig, tmp_path: Path) -> None:
    sim = rig.plant(counter_points(1))
    config = rig.agent_config([modbus("plc-a", sim.port, 0)], metrics=METRICS_OFF)
    agent = rig.spawn("agent", "run", str(config))
    wait_for_event(agent, "mqtt_connected")
    config.rename(tmp_path / "moved.yaml")
    hang_up(agent)
    assert str(config) in " ".join(wait_for_event(agent, "reload_refused")["problems"])
    assert agent.terminate() == 0, agent.log()


def test_a_reload_applies_the_batch_limits_to_messages_packed_after_it(rig: Rig) -> None:
    """`uplink.batch` is an uplink setting the reload table promises: after SIGHUP, new
    messages follow the new `max_items` (the store packs them, not only the uplink)."""
    sim = rig.plant(counter_points(20))
    config = rig.agent_config(
        [modbus("plc-a", sim.port, *range(20))], metrics=METRICS_OFF, batch={"max_items": 100}
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(
        lambda ms: any(len(m.body["items"]) > 5 for m in ms if m.kind == "rt"), 15, "full batches"
    )
    config.write_text(config.read_text().replace("max_items: 100", "max_items: 5"))
    hang_up(agent)
    wait_for_event(agent, "config_reloaded")
    reloaded = len(rig.platform.messages)
    rig.platform.wait_for(
        lambda ms: len([m for m in ms[reloaded:] if m.kind == "rt"]) >= 10, 15, "batches after"
    )
    after = [m for m in rig.platform.messages[reloaded:] if m.kind == "rt"]
    assert max(len(m.body["items"]) for m in after[2:]) <= 5  # two may have been in flight
    assert agent.terminate() == 0, agent.log()
