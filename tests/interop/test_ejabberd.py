"""The agent end to end against ejabberd 23.01's mod_mqtt: MQTT 5, not Mosquitto.

What ejabberd does that Mosquitto does not: it wants a user name (anonymous
login, here); it answers a publish its access rules deny with PUBACK 0x90
(Topic name invalid) and keeps the connection; a clean start ends the old
session and sends its will at once, so only a resumed session (clean_start=0
within the session expiry) keeps a quick restart from flapping the gateway
offline; it keeps MQTT sessions in memory, so a restart of the node loses
every subscriber's session and whatever was queued for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_log import wait_for_event
from conftest import Plant, Process
from delivery import assert_copies_identical, assert_no_seq_gap, drained_since

from edge_agent.demo.proxy import Proxy
from edge_agent.uplink.mqtt import REFUSED_RETRY_S
from edge_agent.uplink.session import WILL_DELAY_S
from interop.brokers import Ejabberd
from interop.mqtt_rig import BrokerRig, broker_rig, complete, offline, topic

# Mostly waiting (a third-party server starting, restarting, a will's delay): run by
# `make test` in its second pytest, beside the rest (pyproject.toml, marker `soak`).
pytestmark = pytest.mark.soak

QUICK_RESTART_S = 5.0
"""The spec's will delay is 30 s so that a restart within this never shows the gateway offline."""


@pytest.fixture
def rig(
    ejabberd: Ejabberd,
    tmp_path: Path,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> Iterator[BrokerRig]:
    with broker_rig(ejabberd, tmp_path, plant, spawn, protocol="5") as made:
        yield made


def test_readings_arrive_in_seq_order_and_state_and_meta_stay_retained(rig: BrokerRig) -> None:
    """rt without a seq gap, the window sized by ejabberd's Receive Maximum (none
    announced: 65535); a platform subscribing later, with a wildcard, gets the retained
    `state` and `meta`."""
    gateway = "GW-EJ-DELIVERY"
    platform = rig.platform(gateway)
    agent = rig.start_agent(gateway, rig.counter())
    platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 3, 20, "three rt")
    assert wait_for_event(agent, "mqtt_connected")["receive_maximum"] == 65535
    wait_for_event(agent, "meta_published")

    late = rig.platform(gateway, name="late")
    late.wait_for(lambda ms: {"state", "meta"} <= {m.kind for m in ms}, 10, "retained state, meta")
    held = {m.kind: m for m in late.messages if m.retained}
    assert held["state"].body["online"] is True
    assert held["meta"].body["tags"][0]["tag"] == "HZ01.CNT"
    assert agent.terminate() == 0, agent.log()
    assert_no_seq_gap(platform.messages)


def test_the_will_waits_30_s_and_a_quick_restart_never_says_offline(rig: BrokerRig) -> None:
    """Two gateways killed with SIGKILL: `quick` is started again at once, `dead` stays
    down. Nothing says offline within 5 s; `dead`'s retained will arrives no earlier than
    its 30 s will delay; `quick`'s never does (its resumed session cancels it). `quick`
    was killed first, so its will, were it sent, would come before `dead`'s."""
    quick, dead = "GW-EJ-QUICK", "GW-EJ-DEAD"
    platforms = {gateway: rig.platform(gateway) for gateway in (quick, dead)}
    device = rig.counter()
    agents = {gateway: rig.start_agent(gateway, device) for gateway in (quick, dead)}
    for platform in platforms.values():
        platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "first readings")

    states = len(platforms[quick].of_kind("state"))
    agents[quick].kill9()
    agents[quick].start()
    agents[dead].kill9()
    platforms[quick].wait_for(
        lambda ms: len([m for m in ms if m.kind == "state"]) > states, 20, "quick back online"
    )
    time.sleep(max(0.0, agents[dead].kills[-1] + QUICK_RESTART_S - time.time()))
    assert not offline(platforms[dead].messages), "the will must wait out its 30 s delay"
    assert not offline(platforms[quick].messages), "a quick restart must not say offline"

    platforms[dead].wait_for(lambda ms: bool(offline(ms)), WILL_DELAY_S + 10, "the will")
    assert time.time() - agents[dead].kills[-1] >= WILL_DELAY_S - 1
    assert not offline(platforms[quick].messages), "a quick restart must not say offline"
    assert agents[quick].terminate() == 0, agents[quick].log()


def test_a_broker_restart_leaves_no_seq_gap(rig: BrokerRig, ejabberd: Ejabberd) -> None:
    """The node stopped and started again on the same port: the agent resends what was not
    acknowledged. ejabberd forgets every session on a restart, the platform's too, and
    delivers what a gateway publishes before the platform has subscribed again to no
    one: so the gateway reaches it through a proxy held (paused) while the node restarts
    and until the platform has subscribed again, as a province would hold gateways back
    until its consumers are in place."""
    gateway = "GW-EJ-RESTART"
    platform = rig.platform(gateway)
    with Proxy(ejabberd.port) as route:
        agent = rig.start_agent(gateway, rig.counter(), port=route.port)
        platform.wait_for(lambda ms: len([m for m in ms if m.kind == "rt"]) >= 2, 20, "two rt")
        route.pause()
        rig.round_trip(platform, gateway)  # what ejabberd acknowledged has arrived
        subscribed = platform.subscriptions
        ejabberd.restart()
        up_at = time.time()
        platform.wait_for(lambda ms: platform.subscriptions > subscribed, 15, "resubscribed")
        route.reset()  # the held connection is gone: the node it led to restarted
        route.resume()
        platform.wait_for(drained_since(up_at), 30, "a state with backlog 0 after the restart")
        platform.wait_for(
            lambda ms: any(m.kind == "rt" and m.body["items"][0]["ts"] / 1000 > up_at for m in ms),
            15,
            "readings sampled after the restart",
        )
        assert_no_seq_gap(platform.messages)
        assert_copies_identical(platform.messages)
        assert agent.terminate() == 0, agent.log()


def test_a_publish_refused_by_access_rules_is_delivered_once_allowed(
    rig: BrokerRig, ejabberd: Ejabberd
) -> None:
    """mod_mqtt's access_publish allows `state` and `meta` only: every rt is refused with
    PUBACK 0x90 and stays in the store; once allowed again, all of it arrives, no seq gap."""
    gateway = "GW-EJ-REFUSED"
    ejabberd.allow_publish(topic("+", "state"), topic("+", "meta"))
    try:
        platform = rig.platform(gateway)
        agent = rig.start_agent(gateway, rig.counter())
        refused = wait_for_event(agent, "mqtt_publish_refused", timeout=20)
    finally:
        ejabberd.allow_publish()
    assert "Topic name invalid" in refused["reason"]
    # What was refused is tried again REFUSED_RETRY_S after its refusal.
    platform.wait_for(complete, REFUSED_RETRY_S + 15, "every seq from 1, the refused ones too")
    assert agent.terminate() == 0, agent.log()


def test_a_cloned_gateway_is_detected_from_ejabberds_disconnect(rig: BrokerRig) -> None:
    """A second agent with the same gateway code: ejabberd tells the first why it lost the
    session (DISCONNECT 0x8E), and the first backs off instead of taking the client id
    straight back."""
    gateway = "GW-EJ-CLONE"
    config = rig.agent_config(gateway, rig.counter())
    first = rig.spawn("agent-first", "run", str(config))
    wait_for_event(first, "mqtt_connected")
    cloned = config.parent.parent / "clone" / "agent.yaml"  # its own store, the same code
    cloned.parent.mkdir()
    cloned.write_text(
        config.read_text().replace(str(config.parent / "store.db"), str(cloned.parent / "store.db"))
    )
    clone = rig.spawn("agent-clone", "run", str(cloned))
    takeover = wait_for_event(first, "mqtt_client_id_taken_over", timeout=20)
    assert takeover["retry_in"] >= 30
    assert "0x8E" in takeover["evidence"]
    assert first.terminate() == 0, first.log()
    assert clone.terminate() == 0, clone.log()
