"""The agent end to end against RabbitMQ 3.10's MQTT plugin: a clustered broker, MQTT 3.1.1 only.

What RabbitMQ does that Mosquitto does not: it speaks no MQTT 5 (it closes the
connection of an MQTT 5 CONNECT without a CONNACK), so the agent runs with
`protocol: "3.1.1"`: no will delay, no reason codes. It refuses a publish its
topic permissions deny by closing the connection. It hands retained messages to
exact-topic subscriptions only. A persistent session is a durable queue, so a
subscriber misses nothing across a restart of the node.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_log import wait_for_event
from conftest import Plant, Process
from delivery import assert_copies_identical, assert_no_seq_gap, drained_since

from edge_agent.uplink.mqtt import REFUSED_RETRY_S
from interop.brokers import RabbitMq
from interop.mqtt_rig import BrokerRig, broker_rig, complete, offline, topic

# Mostly waiting (a third-party server starting, restarting, a will's delay): run by
# `make test` in its second pytest, beside the rest (pyproject.toml, marker `soak`).
pytestmark = pytest.mark.soak

REFUSAL = "refused for user 'guest'"
"""RabbitMQ's log line of a publish its topic permissions deny (it then closes)."""


@pytest.fixture
def rig(
    rabbitmq: RabbitMq,
    tmp_path: Path,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> Iterator[BrokerRig]:
    with broker_rig(rabbitmq, tmp_path, plant, spawn, protocol="3.1.1") as made:
        yield made


def test_readings_arrive_in_seq_order_and_state_and_meta_stay_retained(rig: BrokerRig) -> None:
    """rt without a seq gap; a platform subscribing later (to the exact topics: RabbitMQ
    gives retained messages to no wildcard subscription) gets `state` and `meta`."""
    gateway = "GW-RMQ-DELIVERY"
    platform = rig.platform(gateway)
    agent = rig.start_agent(gateway, rig.counter())
    platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 3, 20, "three rt")
    wait_for_event(agent, "meta_published")

    late = rig.platform(gateway, kinds=["state", "meta"], name="late")
    late.wait_for(lambda ms: {"state", "meta"} <= {m.kind for m in ms}, 10, "retained state, meta")
    held = {m.kind: m for m in late.messages}
    assert held["state"].retained
    assert held["state"].body["online"] is True
    assert held["meta"].retained
    assert held["meta"].body["tags"][0]["tag"] == "HZ01.CNT"
    assert agent.terminate() == 0, agent.log()
    assert_no_seq_gap(platform.messages)


def test_a_killed_agent_is_declared_offline_by_its_will_at_once(rig: BrokerRig) -> None:
    """MQTT 3.1.1 has no will delay: RabbitMQ publishes the retained `online: false` as
    soon as the connection drops, where the spec's 30 s delay would wait."""
    gateway = "GW-RMQ-WILL"
    platform = rig.platform(gateway)
    agent = rig.start_agent(gateway, rig.counter())
    platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "first readings")
    agent.kill9()
    platform.wait_for(lambda ms: bool(offline(ms)), 10, "the will")

    late = rig.platform(gateway, kinds=["state"], name="late")
    late.wait_for(bool, 10, "the retained state")
    assert offline(late.messages)
    assert late.messages[-1].retained


def test_a_broker_restart_leaves_no_seq_gap(rig: BrokerRig, rabbitmq: RabbitMq) -> None:
    """The node stopped and started again on the same port: the agent resends what was not
    acknowledged, and the platform's durable queue kept what was."""
    gateway = "GW-RMQ-RESTART"
    platform = rig.platform(gateway)
    agent = rig.start_agent(gateway, rig.counter())
    platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 2, 20, "two rt")
    rabbitmq.restart()
    up_at = time.time()
    platform.wait_for(drained_since(up_at), 30, "a state with backlog 0 after the restart")
    platform.wait_for(
        lambda ms: any(m.kind == "rt" and m.body["items"][0]["ts"] / 1000 > up_at for m in ms),
        15,
        "readings sampled after the restart",
    )
    assert_no_seq_gap(platform.messages)
    assert_copies_identical(platform.messages)
    assert agent.terminate() == 0, agent.log()


def test_mqtt_5_against_rabbitmq_is_explained_as_a_protocol_mismatch(rig: BrokerRig) -> None:
    """RabbitMQ 3.10 closes an MQTT 5 CONNECT without a CONNACK; the log must say why
    (the agent probes with 3.1.1, a499dd5)."""
    agent = rig.start_agent("GW-RMQ-MQTT5", rig.counter(), protocol="5")
    deadline = time.monotonic() + 15
    while "MQTT 3.1.1 only" not in agent.log():
        assert time.monotonic() < deadline, agent.log()
        time.sleep(0.1)


def test_a_publish_refused_by_topic_permissions_is_delivered_once_allowed(
    rig: BrokerRig, rabbitmq: RabbitMq
) -> None:
    """RabbitMQ refuses a publish its topic permissions deny by closing the connection
    (3.1.1 has no PUBACK reason codes): the message stays in the store and arrives once
    the permission is granted, with no seq gap."""
    gateway = "GW-RMQ-REFUSED"
    # Write anything but this gateway's rt (`/` is `.` in routing keys); read anything.
    routing_key = re.escape(topic(gateway, "rt").replace("/", "."))
    rabbitmq.ctl(
        "set_topic_permissions", "-p", "/", "guest", "amq.topic", f"^(?!{routing_key}$)", ".*"
    )
    try:
        platform = rig.platform(gateway)
        refusals = rabbitmq.log().count(REFUSAL)
        # The agent waits 2-4 s before it reconnects: time to lift the refusal first.
        agent = rig.start_agent(gateway, rig.counter(), reconnect_min="4s", reconnect_max="4s")
        deadline = time.monotonic() + 20
        while rabbitmq.log().count(REFUSAL) == refusals:
            assert time.monotonic() < deadline, rabbitmq.log()[-3000:]
            time.sleep(0.05)
    finally:
        rabbitmq.ctl("clear_topic_permissions", "-p", "/", "guest")
    # What was refused is tried again REFUSED_RETRY_S after its refusal.
    platform.wait_for(complete, REFUSED_RETRY_S + 15, "every seq from 1, the refused ones too")
    assert agent.terminate() == 0, agent.log()
