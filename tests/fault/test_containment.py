"""One value, one task, one stop: none may silence the gateway.

- Every extreme value a device can hold (the largest uint64, int64's ends,
  NaN, the infinities, a denormal) beside normal tags in a running agent: the
  extremes arrive exact or as null with q=4, and the normal tags and their
  alarms keep flowing, end to end.
- SIGTERM ends the agent within 5 s with 20 devices on one connection, busy
  (a gateway whose 20 units answer, polled every 20 ms: the case where a
  stop used to hang, in 5 of 12 runs) or hung (it never answers).
  Knob: EDGE_AGENT_TEST_STOP_RUNS (default 10) runs of each.
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import Rig
from delivery import assert_no_seq_gap, envelopes

from edge_agent.demo.broker import free_port, wait_for_port
from edge_agent.demo.platform import Received

pytestmark = pytest.mark.fault

STOP_RUNS = int(os.environ.get("EDGE_AGENT_TEST_STOP_RUNS", "10"))
STOP_WITHIN_S = 5.0

UINT64_MAX = 2**64 - 1
EXTREMES: list[tuple[str, str, object]] = [
    # (tag, type, what the register holds)
    ("U64", "uint64", UINT64_MAX),
    ("I64MIN", "int64", -(2**63)),
    ("I64MAX", "int64", 2**63 - 1),
    ("NAN32", "float32", math.nan),
    ("INF32", "float32", math.inf),
    ("NINF32", "float32", -math.inf),
    ("DENORM", "float32", 1e-45),
    ("NAN64", "float64", math.nan),
    ("F21", "float32", 21.3),
]


def extreme_plant(rig: Rig) -> tuple[int, list[dict[str, Any]]]:
    """The simulated device and the agent's tags: the extremes, a gas detector that rises
    past both levels 4 s in, and a counter."""
    points: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    for n, (tag, kind, value) in enumerate(EXTREMES):
        address = f"hr:{4 * n}"
        points.append({"address": address, "type": kind, "value": {"const": value}})
        tags.append({"tag": f"HZ01.{tag}", "hazard": "HZ01", "address": address, "type": kind})
    tags[0]["limits"] = {"H": 1e19}
    tags[-1]["limits"] = {"H": 21.3}
    rising = {"step": {"before": 5, "after": 60, "at": "4s"}}
    points += [
        {"address": "hr:100", "type": "uint16", "value": rising},
        {"address": "hr:101", "type": "uint32", "value": {"counter": {}}},
    ]
    tags += [
        {"tag": "HZ01.GT201", "hazard": "HZ01", "address": "hr:100",
         "limits": {"level1": 25, "level2": 50}},
        {"tag": "HZ01.CNT", "hazard": "HZ01", "address": "hr:101", "type": "uint32",
         "report": {"every": "1s"}},
    ]  # fmt: skip
    return rig.plant(points).port, tags


def items(messages: list[Received], kind: str) -> list[dict[str, Any]]:
    return [item for m in envelopes(messages) if m.kind == kind for item in m.body["items"]]


def first_reading(messages: list[Received], tag: str) -> dict[str, Any]:
    return next(item for item in items(messages, "rt") if item["tag"] == f"HZ01.{tag}")


def as_float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_extreme_values_arrive_exact_or_null_and_the_other_tags_keep_flowing(rig: Rig) -> None:
    port, tags = extreme_plant(rig)
    device = {"name": "plc-1", "driver": "modbus", "host": "127.0.0.1", "port": port,
              "poll": "200ms", "tags": tags}  # fmt: skip
    agent = rig.start_agent([device])

    def flowing(messages: list[Received]) -> bool:
        alarms = {(a["tag"], a["kind"]) for a in items(messages, "alarm")}
        counts = [r["v"] for r in items(messages, "rt") if r["tag"] == "HZ01.CNT"]
        return ("HZ01.GT201", "HH") in alarms and len(counts) >= 8

    rig.platform.wait_for(flowing, 30, "the gas alarms and 8 counter readings")
    assert agent.terminate() == 0, agent.log()
    messages = rig.platform.messages

    assert first_reading(messages, "U64") == {
        "tag": "HZ01.U64", "hz": "HZ01", "ts": first_reading(messages, "U64")["ts"],
        "v": "18446744073709551615", "q": 0,
    }  # fmt: skip
    assert first_reading(messages, "I64MIN")["v"] == "-9223372036854775808"
    assert first_reading(messages, "I64MAX")["v"] == "9223372036854775807"
    for tag in ("NAN32", "INF32", "NINF32", "NAN64"):
        assert (first_reading(messages, tag)["v"], first_reading(messages, tag)["q"]) == (None, 4)
    denormal = first_reading(messages, "DENORM")["v"]
    assert as_float32(denormal) == as_float32(1e-45) != 0
    assert first_reading(messages, "F21")["v"] == 21.3, "the float32 as the instrument gave it"

    raised = {(a["tag"], a["kind"]): a for a in items(messages, "alarm") if a["state"] == "raised"}
    assert raised[("HZ01.U64", "H")]["v"] == "18446744073709551615"
    assert raised[("HZ01.U64", "H")]["limit"] == "10000000000000000000"
    assert (raised[("HZ01.F21", "H")]["v"], raised[("HZ01.F21", "H")]["limit"]) == (21.3, 21.3)
    assert {("HZ01.GT201", "H"), ("HZ01.GT201", "HH")} <= set(raised)
    counts = sorted({r["v"] for r in items(messages, "rt") if r["tag"] == "HZ01.CNT"})
    assert counts[-1] - counts[0] >= 2, "the counter went on beside the extremes"
    assert_no_seq_gap(messages)

    meta = next(m for m in messages if m.kind == "meta").body
    types = {entry["tag"]: entry.get("type") for entry in meta["tags"]}
    assert (types["HZ01.U64"], types["HZ01.F21"]) == ("uint64", "float32")
    assert "Traceback" not in agent.log()
    assert "task_failed" not in agent.log()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A Modbus TCP server that never answers: the kernel accepts connections into the
    listen queue, and nobody ever reads them."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1024)
        yield server.getsockname()[1]


def busy_gateway(rig: Rig) -> int:
    """A TCP-to-RTU gateway in front of 20 units that all answer."""
    counter = [{"address": "hr:0", "type": "uint16", "value": {"counter": {}}}]
    units = [{"unit": unit, "points": counter} for unit in range(1, 21)]
    port = free_port()
    scenario = rig.tmp_path / "gateway.yaml"
    scenario.write_text(yaml.safe_dump({"devices": [{"name": "gw", "port": port, "units": units}]}))
    rig.spawn("gateway", "simulate", str(scenario))
    wait_for_port(port)
    return port


@pytest.mark.parametrize("connection", ["busy", "hung"])
def test_sigterm_ends_the_agent_within_5_s_with_20_devices_on_one_connection(
    rig: Rig, hung_port: int, connection: str
) -> None:
    port, poll = (busy_gateway(rig), "20ms") if connection == "busy" else (hung_port, "1s")
    devices = [
        {"name": f"unit-{unit}", "driver": "modbus", "host": "127.0.0.1", "port": port,
         "unit": unit, "poll": poll, "timeout": "1s",
         "tags": [{"tag": f"U{unit}.PT", "hazard": "HZ01", "address": "hr:0"}]}
        for unit in range(1, 21)
    ]  # fmt: skip
    config = rig.agent_config(devices)
    rng = random.Random(11)
    took = []
    for run in range(STOP_RUNS):
        agent = rig.spawn(f"agent-{run}", "run", str(config))
        deadline = time.monotonic() + 20
        while '"agent_started"' not in agent.log():
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 2.0))  # into connects, answers, timeouts and backoffs
        assert agent.popen is not None
        sent = time.monotonic()
        agent.popen.send_signal(signal.SIGTERM)
        code = agent.terminate(timeout=15)
        took.append(time.monotonic() - sent)
        assert code == 0, agent.log()
        assert took[-1] < STOP_WITHIN_S, f"run {run}: {took[-1]:.1f} s\n{agent.log()}"
        assert '"agent_stopped"' in agent.log()
        assert "task_stop_timed_out" not in agent.log(), "every task ended when told to"
    print(f"SIGTERM to exit, {connection}, {STOP_RUNS} runs: max {max(took):.2f} s")
