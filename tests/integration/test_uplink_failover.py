"""Staying connected: a list of brokers, plain TCP refused off this machine, and a cloned
gateway code that must not make two gateways flap."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from agent_log import events, wait_for_event
from conftest import GATEWAY, Plant, Process, Rig, agent_config, counter_device

from edge_agent.cli import EX_CONFIG, EX_OK
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.uplink.brokers import SUSPECT_AFTER, Ending
from edge_agent.uplink.session import Endpoint, Session, Will


def one_counter(plant: Callable[..., Plant]) -> dict[str, Any]:
    sim = plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.5)
    device["tags"] = device["tags"][:1]
    return device


def with_mqtt(config: Path, **mqtt: Any) -> Path:
    """Rewrite the mqtt section of a config written by `agent_config`."""
    data = yaml.safe_load(config.read_text())
    section = data["uplink"]["mqtt"]
    for key, value in mqtt.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def test_the_agent_falls_over_to_the_second_broker_when_the_first_is_down(rig: Rig) -> None:
    """The first broker refuses connections: the second is tried at once, without a backoff."""
    down = free_port()
    config = with_mqtt(
        rig.agent_config([one_counter(rig.plant)]),
        host=None,
        port=None,
        brokers=[
            {"host": "127.0.0.1", "port": down},
            {"host": "127.0.0.1", "port": rig.broker.port},
        ],
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "readings via broker 2")
    failed = events(agent, "mqtt_connect_failed")
    connected = wait_for_event(agent, "mqtt_connected")
    assert failed, agent.log()
    assert failed[0]["broker"] == f"127.0.0.1:{down}"
    assert connected["broker"] == f"127.0.0.1:{rig.broker.port}"
    assert agent.terminate() == 0, agent.log()


def test_the_agent_moves_to_the_next_broker_when_its_broker_goes_away(rig: Rig) -> None:
    """Connected to the first broker, which stops: readings carry on through the second."""
    first = Mosquitto(rig.tmp_path / "first-broker")
    first.start()
    try:
        config = with_mqtt(
            rig.agent_config([one_counter(rig.plant)]),
            host=None,
            port=None,
            brokers=[
                {"host": "127.0.0.1", "port": first.port},
                {"host": "127.0.0.1", "port": rig.broker.port},
            ],
        )
        agent = rig.spawn("agent", "run", str(config))
        assert wait_for_event(agent, "mqtt_connected")["broker"] == f"127.0.0.1:{first.port}"
        first.stop()
        stopped_at = time.time()
        second = wait_for_event(agent, "mqtt_connected", count=2)
        assert second["broker"] == f"127.0.0.1:{rig.broker.port}"
        rig.platform.wait_for(
            lambda ms: any(
                m.kind == "rt" and m.body["items"][0]["ts"] / 1000 > stopped_at for m in ms
            ),
            20,
            "readings sampled after the first broker stopped, via the second",
        )
        assert agent.terminate() == 0, agent.log()
    finally:
        first.stop()


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_refuses_plain_tcp_to_a_host_that_is_not_this_machine(tmp_path: Path) -> None:
    """transport: tcp to a remote broker needs insecure_plaintext: true, and says why."""
    device = counter_device(502, 1.0)
    config = with_mqtt(
        agent_config(tmp_path, 1883, [device]), host="mqtt.example.gov.cn", transport="tcp"
    )
    refused = check(config)
    assert refused.returncode == EX_CONFIG, refused
    assert "uplink.mqtt: plain TCP to mqtt.example.gov.cn" in refused.stderr
    assert "insecure_plaintext: true" in refused.stderr

    with_mqtt(config, insecure_plaintext=True)
    assert check(config).returncode == EX_OK

    with_mqtt(config, insecure_plaintext=None, transport=None, port=None)
    accepted = check(config)
    assert accepted.returncode == EX_OK, "TLS, the default, is fine: " + accepted.stderr


def test_a_cloned_gateway_is_reported_loudly_and_backs_off_instead_of_flapping(
    tmp_path: Path,
    broker: Mosquitto,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    """A second agent with the same gateway code takes the client id over: the first logs
    it at error level, naming the code, and stays away for at least 30 s.

    Mosquitto 2.0.11 (Debian 12) closes the old connection without DISCONNECT 0x8E,
    so this is the suspected path: closes with nothing in flight, SUSPECT_AFTER of them
    in a row, then the takeover backoff.
    """
    device = one_counter(plant)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = spawn("agent-a", "run", str(agent_config(tmp_path / "a", broker.port, [device])))
    wait_for_event(first, "mqtt_connected")
    clone = spawn("agent-b", "run", str(agent_config(tmp_path / "b", broker.port, [device])))
    wait_for_event(clone, "mqtt_connected")

    takeover = wait_for_event(first, "mqtt_client_id_taken_over", timeout=15)
    assert takeover["level"] == "error"
    assert takeover["gateway"] == GATEWAY
    assert "cloned gateway" in takeover["hint"]
    assert takeover["takeovers"] == 1
    assert takeover["retry_in"] >= 30

    time.sleep(10)  # with reconnect_max 2s, two flapping agents would connect 5+ more times
    assert len(events(first, "mqtt_connected")) <= SUSPECT_AFTER, first.log()
    assert len(events(clone, "mqtt_connected")) <= SUSPECT_AFTER, clone.log()
    assert len(events(first, "mqtt_client_id_taken_over")) == 1, first.log()
    assert not events(clone, "mqtt_client_id_taken_over"), clone.log()
    assert first.terminate() == 0, first.log()
    assert clone.terminate() == 0, clone.log()


async def test_a_disconnect_with_reason_0x8e_marks_the_session_taken_over() -> None:
    """Brokers that follow MQTT 5 (Mosquitto 2.0.15+, EMQX, HiveMQ) say why: 0x8E."""
    disconnect_taken_over = bytes([0xE0, 0x02, 0x8E, 0x00])

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))  # CONNACK: success, no properties
        await asyncio.sleep(0.2)
        writer.write(disconnect_taken_over)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        endpoint = Endpoint("127.0.0.1", port, GATEWAY, True, 30, 5.0)
        session = Session(endpoint, Will("t/state", b"{}"), lambda mid, reason: None)
        await session.connect()
        reason = await asyncio.wait_for(session.closed, 5)
        await session.disconnect()
    assert session.ending is Ending.TAKEN_OVER, reason
    assert "Session taken over" in reason
