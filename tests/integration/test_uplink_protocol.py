"""The uplink's protocol choices: MQTT 3.1.1 on request, and a refused PUBACK keeps the message."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Plant, Process, Rig, agent_config, counter_device

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import Received


def test_mqtt_3_1_1_delivers_readings_and_retained_state(rig: Rig) -> None:
    """With protocol 3.1.1 the platform still gets `rt` envelopes and a retained `state`."""
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.5, level=False)
    agent = rig.start_agent([device], mqtt={"protocol": "3.1.1"})
    rig.platform.wait_for(
        lambda ms: len([m for m in ms if m.kind == "rt"]) >= 2, 15, "two rt messages"
    )
    states = rig.platform.of_kind("state")
    assert states
    assert states[0].body["online"] is True
    assert agent.terminate() == 0, agent.log()


def test_a_refused_publish_stays_in_the_store(
    tmp_path: Path, plant: Callable[..., Plant], spawn: Callable[..., Process]
) -> None:
    """A PUBACK with reason code 0x87 (not authorized) is not delivery: the message is kept."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite safety/v1/+/+/state\ntopic read safety/v1/#\n")
    broker = Mosquitto(tmp_path / "acl-broker", extra=f"acl_file {acl}\n")
    broker.start()
    try:
        sim = plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
        device = counter_device(sim.port, 0.5, level=False)
        agent = spawn("agent", "run", str(agent_config(tmp_path, broker.port, [device])))
        deadline = time.monotonic() + 15
        while "mqtt_publish_refused" not in agent.log():
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.1)
        assert agent.terminate() == 0, agent.log()
    finally:
        broker.stop()
    with sqlite3.connect(tmp_path / "store.db") as db:
        seqs = [seq for (seq,) in db.execute("SELECT seq FROM message WHERE topic = 'rt'")]
    assert seqs[0] == 1, "the refused first message is still in the store"


def test_the_last_will_says_offline_30_s_after_a_crash(rig: Rig) -> None:
    """MQTT 5 will delay: no offline flap right after a kill -9, the retained will after 30 s."""
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.5, level=False)
    agent = rig.start_agent([device])
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "first readings")
    agent.kill9()

    def offline(ms: list[Received]) -> bool:
        return any(m.kind == "state" and not m.body["online"] for m in ms)

    time.sleep(5)
    assert not offline(rig.platform.messages), "the will must wait out its 30 s delay"
    rig.platform.wait_for(offline, timeout=35, what="the retained offline will")
    assert time.time() - agent.kills[-1] >= 29


def test_gzip_payloads_carry_the_same_envelope(rig: Rig) -> None:
    """With batch.gzip every payload is sent compressed (1f 8b): the envelopes, which inflate
    to the spec's form, `state` and `meta` (the will too: test_uplink_connect.py)."""
    sim = rig.plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.2, level=False)
    agent = rig.start_agent([device], batch={"gzip": True})
    rig.platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 3, 15, "rt messages")
    assert agent.terminate() == 0
    assert {m.kind for m in rig.platform.messages if not m.gzipped} == set()
    assert {"rt", "state", "meta"} <= {m.kind for m in rig.platform.messages}
    assert not rig.platform.messages[-1].body["online"], "the offline state at the stop"
    rt = [m for m in rig.platform.messages if m.kind == "rt"]
    assert {"v", "ent", "gw", "seq", "sent", "hist", "items"} == set(rt[0].body)
    assert rt[0].body["items"][0]["tag"] == "HZ01.CNT"
