"""The whole agent, end to end: simulated PLC -> `edge-agent run` -> Mosquitto -> platform.

Everything is real and on loopback (fixtures in tests/conftest.py): the PLC is
the project's simulator in its own process, the agent runs as
`python -m edge_agent run`, and the platform is a subscriber that keeps every
message it receives. What is checked is what the provincial platform sees,
against the interface in the uplink spec (v1).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    ENTERPRISE,
    GATEWAY,
    PREFIX,
    Process,
    Rig,
    agent_config,
    reporting_every_poll,
)
from delivery import envelopes

from edge_agent import __version__
from edge_agent.demo.broker import Mosquitto, free_port, wait_for_port
from edge_agent.demo.platform import PlatformSubscriber, Received

pytestmark = pytest.mark.broker

ENVELOPE_KEYS = {"v", "ent", "gw", "seq", "sent", "hist", "items"}
RT_ITEM_KEYS = {"tag", "hz", "ts", "v", "q"}
ALARM_ITEM_KEYS = {"id", "tag", "hz", "ts", "kind", "state", "v", "limit"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tag(name: str, address: str, data_type: str, **extra: Any) -> dict[str, Any]:
    return {"tag": name, "hazard": "HZ01", "address": address, "type": data_type, **extra}


def device(name: str, port: int, tags: list[dict[str, Any]], poll: str = "200ms") -> dict[str, Any]:
    """A Modbus device whose tags report at every poll, so the tests can count polls."""
    return reporting_every_poll(
        {
            "name": name,
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "poll": poll,
            "timeout": "500ms",
            "tags": tags,
        }
    )


def rt_items(messages: list[Received], tag_name: str | None = None) -> list[dict[str, Any]]:
    """Every `rt` item received, in `seq` order, optionally of one tag only."""
    rt = sorted((m for m in messages if m.kind == "rt"), key=lambda m: m.body["seq"])
    return [
        item for m in rt for item in m.body["items"] if tag_name is None or item["tag"] == tag_name
    ]


def alarm_items(messages: list[Received]) -> list[tuple[int, dict[str, Any]]]:
    """(seq, item) of every alarm item received, in `seq` order and item order."""
    alarms = sorted((m for m in messages if m.kind == "alarm"), key=lambda m: m.body["seq"])
    return [(m.body["seq"], item) for m in alarms for item in m.body["items"]]


def states(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.body for m in messages if m.kind == "state"]


def has_rt_of(*tags: str, count: int = 1) -> Callable[[list[Received]], bool]:
    """A wait_for predicate: at least `count` readings of each of `tags` arrived."""

    def predicate(messages: list[Received]) -> bool:
        items = rt_items(messages)
        return all(sum(1 for i in items if i["tag"] == t) >= count for t in tags)

    return predicate


def serve_scenario(
    tmp_path: Path, spawn: Callable[..., Process], name: str, spec: dict[str, Any]
) -> int:
    """Serve one simulated device given as a full scenario entry; returns its port.

    The `plant` fixture takes points only; this one also takes `exception_addresses`.
    """
    port = free_port()
    scenario = tmp_path / f"scenario-{name}.yaml"
    scenario.write_text(
        yaml.safe_dump({"devices": [{"name": name, "port": port, "unit": 1, **spec}]})
    )
    spawn(f"sim-{name}", "simulate", str(scenario))
    wait_for_port(port)
    return port


def test_readings_reach_the_platform_in_the_exact_envelope_of_the_spec(rig: Rig) -> None:
    """Topic, envelope keys, identity, consecutive seq from 1, sent, hist and typed item values."""
    sim = rig.plant(
        [
            {"address": "hr:0", "type": "float32", "value": {"const": 12.5}},
            {"address": "hr:2", "type": "uint16", "value": {"const": 42}},
            {"address": "co:0", "type": "bool", "value": {"const": True}},
        ]
    )
    tags = [
        tag("HZ01.LT101", "hr:0", "float32"),
        tag("HZ01.FT102", "hr:2", "uint16"),
        tag("HZ01.XV101", "co:0", "bool"),
    ]
    config = rig.agent_config([device("plc-1", sim.port, tags)], batch={"linger": "200ms"})
    started_ms = now_ms()
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(
        lambda ms: len([m for m in ms if m.kind == "rt"]) >= 4, 15, "four rt messages"
    )
    received_ms = now_ms()
    messages = rig.platform.messages
    # Readings sampled before the first MQTT connection waited in the store while the
    # uplink was down, so they may go as back-fill; everything sampled after is live.
    connected_ms = states(messages)[0]["ts"]

    rt = [m for m in messages if m.kind == "rt"]
    assert sum(1 for m in rt if m.body["hist"] is False) >= 3
    for message in rt:
        body = message.body
        assert message.topic == f"{PREFIX}/{ENTERPRISE}/{GATEWAY}/rt"
        assert set(body) == ENVELOPE_KEYS, body
        assert body["v"] == 1
        assert type(body["v"]) is int
        assert (body["ent"], body["gw"]) == (ENTERPRISE, GATEWAY)
        assert type(body["seq"]) is int
        assert type(body["sent"]) is int
        assert started_ms <= body["sent"] <= received_ms, "sent is not ms since the epoch, now"
        assert type(body["hist"]) is bool
        assert body["items"], "an envelope carries at least one item"
        if any(item["ts"] > connected_ms for item in body["items"]):
            assert body["hist"] is False, f"live readings sent as back-fill: {body}"
        for item in body["items"]:
            assert set(item) == RT_ITEM_KEYS, item
            assert item["hz"] == "HZ01"
            assert type(item["ts"]) is int
            assert started_ms <= item["ts"] <= body["sent"], "ts is not the sample time"

    seqs = sorted(m.body["seq"] for m in envelopes(messages))
    assert seqs == list(range(1, len(seqs) + 1)), f"seq not consecutive from 1: {seqs}"

    expected = {"HZ01.LT101": (float, 12.5), "HZ01.FT102": (int, 42), "HZ01.XV101": (bool, True)}
    items = rt_items(messages)
    assert {i["tag"] for i in items} == set(expected)
    for item in items:
        kind, value = expected[item["tag"]]
        assert (type(item["v"]), item["v"], item["q"]) == (kind, value, 0), item
    assert agent.terminate() == 0, agent.log()


def test_a_gas_leak_raises_and_clears_h_and_hh_in_order_with_matching_ids(rig: Rig) -> None:
    """H raised, HH raised, HH cleared, H cleared on `alarm`, ahead of every later reading."""
    leak = {"base": 3, "peak": 60, "start": "1s", "rise": "2s", "hold": "2s", "fall": "2s"}
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"leak": leak}}])
    limits = {"H": 25, "HH": 50, "deadband": 2}
    gas = tag("HZ01.GT201", "hr:0", "uint16", unit="%LEL", limits=limits)
    agent = rig.start_agent([device("plc-1", sim.port, [gas], poll="100ms")])
    rig.platform.wait_for(lambda ms: len(alarm_items(ms)) >= 4, 20, "four alarm events")
    # Readings sampled after the last clear, to prove they were numbered after it.
    last_ts = alarm_items(rig.platform.messages)[-1][1]["ts"]
    rig.platform.wait_for(
        lambda ms: any(i["ts"] > last_ts for i in rt_items(ms, "HZ01.GT201")),
        5,
        "a reading sampled after the last alarm",
    )
    messages = rig.platform.messages

    alarms = alarm_items(messages)
    assert [(i["kind"], i["state"]) for _, i in alarms] == [
        ("H", "raised"),
        ("HH", "raised"),
        ("HH", "cleared"),
        ("H", "cleared"),
    ], alarms
    for message in (m for m in messages if m.kind == "alarm"):
        assert message.topic == f"{PREFIX}/{ENTERPRISE}/{GATEWAY}/alarm"
        assert set(message.body) == ENVELOPE_KEYS
        assert message.body["hist"] is False
    h_raised, hh_raised, hh_cleared, h_cleared = (item for _, item in alarms)
    for item in (h_raised, hh_raised, hh_cleared, h_cleared):
        assert set(item) == ALARM_ITEM_KEYS, item
        assert (item["tag"], item["hz"]) == ("HZ01.GT201", "HZ01")
        assert type(item["ts"]) is int
        assert type(item["v"]) is int, "a uint16 value stays an integer"
        assert item["limit"] == limits[item["kind"]]
    assert h_raised["id"] == h_cleared["id"]
    assert hh_raised["id"] == hh_cleared["id"]
    assert h_raised["id"] != hh_raised["id"]
    assert h_raised["v"] >= 25
    assert hh_raised["v"] >= 50
    assert hh_cleared["v"] < 50 - 2
    assert h_cleared["v"] < 25 - 2

    # Ordering by seq: no reading sampled after an alarm's sample went out before it.
    rt_by_seq = [(m.body["seq"], i) for m in messages if m.kind == "rt" for i in m.body["items"]]
    for seq, alarm in alarms:
        early = [(s, i) for s, i in rt_by_seq if i["ts"] > alarm["ts"] and s < seq]
        assert not early, f"readings sampled after {alarm} were numbered before it: {early[:3]}"
    seqs = sorted(m.body["seq"] for m in envelopes(messages))
    assert seqs == list(range(1, len(seqs) + 1)), "rt and alarm share one gapless seq counter"
    assert agent.terminate() == 0, agent.log()


def retained_state(port: int) -> Received:
    """The `state` a platform that subscribes now is handed by the broker."""
    late = PlatformSubscriber(port, PREFIX, client_id=f"test-late-{time.monotonic_ns()}")
    late.start()
    try:
        late.wait_for(lambda ms: any(m.kind == "state" for m in ms), 5, "the retained state")
        return next(m for m in late.messages if m.kind == "state")
    finally:
        late.stop()


def sigterm(agent: Process) -> tuple[int, float]:
    """SIGTERM the agent; returns its exit code and the seconds it took to exit (at most 10)."""
    assert agent.popen is not None
    stopping = time.monotonic()
    agent.popen.send_signal(signal.SIGTERM)
    code = agent.popen.wait(10)
    return code, time.monotonic() - stopping


def assert_stopped_offline(
    broker: Mosquitto, platform: PlatformSubscriber, agent: Process, code: int, took: float
) -> None:
    """Exit 0 within 10 s; the last `state` received, and the one retained, say offline."""
    assert code == 0, agent.log()
    assert took < 10
    offline = {"v": 1, "ent": ENTERPRISE, "gw": GATEWAY, "online": False}
    time.sleep(0.5)  # let anything the agent sent last reach the platform
    platform.wait_for(lambda ms: any(s == offline for s in states(ms)), 5, "the offline state")
    sequence = [(s.get("online"), s.get("backlog")) for s in states(platform.messages)]
    assert states(platform.messages)[-1] == offline, (
        f"a state followed the offline one; (online, backlog) in order: {sequence}"
    )
    assert retained_state(broker.port).body == offline, "the broker keeps an online state"


def test_state_is_retained_online_and_says_offline_after_sigterm(rig: Rig) -> None:
    """A retained online `state` with devices, backlog and version; SIGTERM exits 0 and offline."""
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"const": 1}}])
    agent = rig.start_agent([device("plc-1", sim.port, [tag("HZ01.X", "hr:0", "uint16")])])
    rig.platform.wait_for(
        lambda ms: (
            any(s.get("devices") == {"plc-1": "up"} for s in states(ms))
            and len([m for m in ms if m.kind == "rt"]) >= 2
        ),
        15,
        "state with plc-1 up and two rt messages",
    )
    state = next(s for s in states(rig.platform.messages) if s.get("devices") == {"plc-1": "up"})
    assert state["online"] is True
    assert (state["v"], state["ent"], state["gw"]) == (1, ENTERPRISE, GATEWAY)
    assert type(state["backlog"]) is int
    assert state["backlog"] >= 0
    assert isinstance(state["version"], str)
    assert state["version"] == __version__
    assert type(state["ts"]) is int

    # A platform that subscribes later is handed the latest state as a retained message.
    retained = retained_state(rig.broker.port)
    assert retained.retained
    assert retained.topic == f"{PREFIX}/{ENTERPRISE}/{GATEWAY}/state"
    assert retained.body["online"] is True
    assert retained.body["devices"] == {"plc-1": "up"}

    code, took = sigterm(agent)
    assert_stopped_offline(rig.broker, rig.platform, agent, code, took)


def test_no_online_state_follows_the_offline_one_when_a_state_falls_due_while_stopping(
    rig: Rig,
) -> None:
    """A `state` falling due during the shutdown must not follow, and undo, the offline one."""
    sim = rig.plant([{"address": "hr:0", "type": "uint16", "value": {"const": 1}}])
    # A state falls due every 20 ms, so one is due while the agent stops; stopping as the
    # first state arrives also catches the "back-log drained" state that follows connect.
    config = agent_config(
        rig.tmp_path,
        rig.broker.port,
        [device("plc-1", sim.port, [tag("HZ01.X", "hr:0", "uint16")], poll="50ms")],
        state_interval="20ms",
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: bool(states(ms)), 15, "the first state")
    code, took = sigterm(agent)
    assert_stopped_offline(rig.broker, rig.platform, agent, code, took)


def test_a_dead_device_reports_bad_quality_while_the_live_one_keeps_its_poll_rate(rig: Rig) -> None:
    """Dead device: v null, q 2, `down`; the live device: q 0 at its poll rate, `up`."""
    poll_s = 0.2
    sim = rig.plant(
        [{"address": "hr:0", "type": "uint16", "value": {"counter": {}}}], device="live"
    )
    nobody = free_port()  # nothing listens here: every connect is refused
    config = agent_config(
        rig.tmp_path,
        rig.broker.port,
        [
            device("plc-live", sim.port, [tag("HZ01.LIVE", "hr:0", "uint16")]),
            device(
                "plc-dead",
                nobody,
                [tag("HZ01.DEAD1", "hr:0", "uint16"), tag("HZ01.DEAD2", "co:0", "bool")],
            ),
        ],
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(has_rt_of("HZ01.LIVE", "HZ01.DEAD1", "HZ01.DEAD2"), 15, "both devices")
    first_live = rt_items(rig.platform.messages, "HZ01.LIVE")[0]["ts"]
    window_start, window_s = first_live + 500, 3.0
    window_end = window_start + int(window_s * 1000)
    rig.platform.wait_for(
        lambda ms: any(i["ts"] > window_end for i in rt_items(ms, "HZ01.LIVE")),
        window_s + 5,
        "live readings past the counting window",
    )
    rig.platform.wait_for(
        lambda ms: any(
            s.get("devices") == {"plc-live": "up", "plc-dead": "down"} for s in states(ms)
        ),
        5,
        "state with plc-live up and plc-dead down",
    )
    messages = rig.platform.messages

    dead = [i for i in rt_items(messages) if i["tag"] in ("HZ01.DEAD1", "HZ01.DEAD2")]
    assert dead
    assert all((i["v"], i["q"]) == (None, 2) for i in dead), dead[:5]
    live = rt_items(messages, "HZ01.LIVE")
    assert all(i["q"] == 0 and type(i["v"]) is int for i in live), live[:5]
    sampled = {i["ts"] for i in live if window_start <= i["ts"] < window_end}
    expected = window_s / poll_s
    assert 0.8 * expected <= len(sampled) <= expected + 2, (
        f"{len(sampled)} live readings in {window_s} s at a {poll_s} s poll"
    )
    last_state = states(messages)[-1]
    assert last_state["devices"] == {"plc-live": "up", "plc-dead": "down"}
    assert agent.terminate() == 0, agent.log()


def test_an_exception_response_gives_q2_to_its_tag_only(
    tmp_path: Path,
    broker: Mosquitto,
    platform: PlatformSubscriber,
    spawn: Callable[..., Process],
) -> None:
    """A refused address (alone in its request) reads q 2, v null; the device's other tags q 0."""
    port = serve_scenario(
        tmp_path,
        spawn,
        "plc-1",
        {
            "points": [
                {"address": "hr:0", "type": "float32", "value": {"const": 7.25}},
                {"address": "hr:2", "type": "uint16", "value": {"const": 9}},
                {"address": "hr:1000", "type": "uint16", "value": {"const": 5}},
            ],
            "exception_addresses": ["hr:1000"],
        },
    )
    tags = [
        tag("HZ01.GOOD1", "hr:0", "float32"),
        tag("HZ01.GOOD2", "hr:2", "uint16"),
        tag("HZ01.REFUSED", "hr:1000", "uint16"),
    ]
    config = agent_config(tmp_path, broker.port, [device("plc-1", port, tags)])
    agent = spawn("agent", "run", str(config))
    platform.wait_for(
        has_rt_of("HZ01.GOOD1", "HZ01.GOOD2", "HZ01.REFUSED", count=5), 15, "five polls"
    )
    items = rt_items(platform.messages)

    refused = [i for i in items if i["tag"] == "HZ01.REFUSED"]
    assert all((i["v"], i["q"]) == (None, 2) for i in refused), refused[:5]
    good = [i for i in items if i["tag"] != "HZ01.REFUSED"]
    values = {"HZ01.GOOD1": 7.25, "HZ01.GOOD2": 9}
    assert all((i["v"], i["q"]) == (values[i["tag"]], 0) for i in good), good[:5]
    # An exception response is an answer: the device's link stays up.
    platform.wait_for(
        lambda ms: any(s.get("devices") == {"plc-1": "up"} for s in states(ms)),
        5,
        "state with plc-1 up",
    )
    assert agent.terminate() == 0, agent.log()
