"""`edge-agent run --log-level debug`: a line for each poll, each publish and each PUBACK."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent_log import events, wait_for_event
from conftest import Plant, Process, agent_config, counter_device

from edge_agent.demo.broker import Mosquitto


def test_debug_tells_each_poll_publish_and_puback(
    tmp_path: Path, broker: Mosquitto, plant: Callable[..., Plant], spawn: Callable[..., Process]
) -> None:
    """What a technician needs to follow one reading from the device to the broker."""
    sim = plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    config = agent_config(tmp_path, broker.port, [counter_device(sim.port, 0.2, level=False)])
    agent = spawn("agent", "run", str(config), "--log-level", "debug")
    acked = wait_for_event(agent, "mqtt_acked")
    assert agent.terminate() == 0, agent.log()
    polled = next(e for e in events(agent, "device_polled") if e["link"] == "up")
    assert (polled["device"], polled["requests"], polled["tags"], polled["bad"]) == (
        "plc-1",
        1,
        1,
        0,
    )
    assert polled["ms"] >= 0
    published = {e["seq"]: e for e in events(agent, "mqtt_published")}
    sent = published[acked["seq"]]
    assert sent["topic"] == "rt"
    assert isinstance(sent["hist"], bool)  # true if read before the first connect
    assert sent["items"] >= 1
    assert sent["bytes"] > 0
    assert acked["latency_ms"] >= 0
    assert acked["level"] == "debug"
