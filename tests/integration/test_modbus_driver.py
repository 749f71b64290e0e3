"""The Modbus TCP driver against real pymodbus servers from the simulator (no mocks).

Every test starts its own simulated plant on free ports of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from structlog.testing import capture_logs

from edge_agent.config.schema import AgentConfig
from edge_agent.drivers import build_driver
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.drivers.simulator import (
    Scenario,
    Simulator,
    load_scenario,
    run_simulator,
    start_simulator,
)
from edge_agent.model import LinkState, Quality, Sample
from edge_agent.poller import Poller

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.3
READ_CODES = {1, 2, 3, 4}


def f32(value: float) -> float:
    """What a float32 register pair can hold of `value`."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


# (type, value): every register type; multi-register types in every byte order.
TYPED_VALUES: list[tuple[str, float]] = [
    ("int32", -123456789),
    ("uint32", 3000000000),
    ("float32", -1234.5678),
    ("int64", -1234567890123),
    ("uint64", 12345678901234567890),
    ("float64", -98765.4321),
]
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def typed_points() -> list[tuple[str, str, str, float, Any]]:
    """(tag, address, type, byte order, value) laid back to back from hr:0."""
    rows: list[tuple[str, str, str, float, Any]] = []
    offset = 0
    width = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2}
    for data_type, value in [("int16", -1234), ("uint16", 54321), ("bool", True)]:
        rows.append((f"T.{data_type}", f"hr:{offset}", data_type, "ABCD", value))
        offset += width[data_type]
    for data_type, value in TYPED_VALUES:
        for order in ORDERS:
            rows.append((f"T.{data_type}.{order}", f"hr:{offset}", data_type, order, value))
            offset += width.get(data_type, 4)
    return rows


def all_types_scenario() -> Scenario:
    points: list[dict[str, Any]] = [
        {"address": a, "type": t, "byte_order": o, "value": {"const": v}}
        for _tag, a, t, o, v in typed_points()
    ]
    points += [
        {"address": "ir:0", "type": "uint16", "value": {"const": 7}},
        {"address": "ir:1", "type": "float32", "byte_order": "CDAB", "value": {"const": 2.5}},
        {"address": "co:0", "type": "bool", "value": {"const": True}},
        {"address": "co:1", "type": "bool", "value": {"const": False}},
        {"address": "co:2", "type": "bool", "value": {"const": True}},
        {"address": "di:0", "type": "bool", "value": {"const": False}},
        {"address": "di:1", "type": "bool", "value": {"const": True}},
    ]
    return Scenario.model_validate({"devices": [{"name": "plc", "points": points}]})


def all_types_tags() -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = [
        {"tag": tag, "address": a, "type": t, "byte_order": o}
        for tag, a, t, o, _v in typed_points()
    ]
    tags += [
        # Overlaps T.int16: one register read once, decoded twice.
        {"tag": "T.int16.scaled", "address": "hr:0", "type": "int16",
         "scale": {"multiplier": 0.1, "offset": 5}},
        {"tag": "T.ir.uint16", "address": "ir:0", "type": "uint16"},
        {"tag": "T.ir.float32", "address": "ir:1", "type": "float32", "byte_order": "CDAB"},
        {"tag": "T.co0", "address": "co:0", "type": "bool"},
        {"tag": "T.co1", "address": "co:1", "type": "bool"},
        {"tag": "T.co2", "address": "co:2", "type": "bool"},
        {"tag": "T.di0", "address": "di:0", "type": "bool"},
        {"tag": "T.di1", "address": "di:1", "type": "bool"},
    ]  # fmt: skip
    return tags


def expected_all_types() -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for tag, _a, data_type, _o, value in typed_points():
        expected[tag] = f32(value) if data_type == "float32" else value
    expected |= {
        "T.int16.scaled": -118.4,
        "T.ir.uint16": 7,
        "T.ir.float32": 2.5,
        "T.co0": True,
        "T.co1": False,
        "T.co2": True,
        "T.di0": False,
        "T.di1": True,
    }
    return expected


def device(port: int, tags: list[dict[str, Any]], **fields: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "name": fields.pop("name", "plc"),
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "unit": 1,
            "timeout": f"{int(TIMEOUT * 1000)}ms",
            "tags": [{"hazard": "HZ01", **t} for t in tags],
            **fields,
        }
    )


def uint16_tags(*addresses: str) -> list[dict[str, Any]]:
    return [{"tag": f"T.{a.replace(':', '_')}", "address": a} for a in addresses]


def by_tag(samples: list[Sample]) -> dict[str, Sample]:
    return {s.tag: s for s in samples}


def qualities(samples: list[Sample]) -> dict[str, Quality]:
    return {s.tag: s.quality for s in samples}


async def timed(read: Callable[[], Any]) -> tuple[list[Sample], float]:
    started = time.perf_counter()
    samples = await read()
    return samples, time.perf_counter() - started


async def read_until(
    driver: ModbusDriver, done: Callable[[list[Sample]], bool], within: float
) -> list[Sample]:
    """Poll every 50 ms until `done`, as a scheduler would; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        samples = await driver.read()
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"not done within {within}s: {samples}"
        await asyncio.sleep(0.05)


def all_good(samples: list[Sample]) -> bool:
    return all(s.quality is Quality.GOOD for s in samples)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await start_simulator(all_types_scenario())
    yield simulator
    await simulator.close()


@pytest.fixture
async def closing() -> AsyncIterator[list[ModbusDriver]]:
    """Drivers appended here are closed after the test."""
    drivers: list[ModbusDriver] = []
    yield drivers
    for driver in drivers:
        await driver.close()


def make_driver(closing: list[ModbusDriver], config: ModbusDevice) -> ModbusDriver:
    driver = ModbusDriver(config)
    closing.append(driver)
    return driver


# --- decoding -------------------------------------------------------------------------------


async def test_merged_reads_decode_every_type_and_byte_order(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """75 holding registers in one read, plus ir, co and di: every value as written."""
    driver = make_driver(closing, device(sim.ports["plc"], all_types_tags()))
    assert [str(r) for r in driver.plan] == ["hr:0+75", "ir:0+3", "co:0+3", "di:0+2"]
    before = time.time_ns() // 1_000_000
    samples = await driver.read()
    after = time.time_ns() // 1_000_000

    assert [s.tag for s in samples] == [t["tag"] for t in all_types_tags()]
    assert {s.tag: s.value for s in samples} == expected_all_types()
    assert all(s.quality is Quality.GOOD for s in samples)
    assert all(before <= s.ts_ms <= after for s in samples)
    values = {s.tag: s.value for s in samples}
    assert type(values["T.uint64.DCBA"]) is int  # unscaled integers stay int
    assert type(values["T.int16.scaled"]) is float
    assert type(values["T.co0"]) is bool
    assert driver.link is LinkState.UP


async def test_a_value_that_is_not_a_number_is_a_config_problem_of_that_tag_only(
    closing: list[ModbusDriver],
) -> None:
    """A float32 holding NaN gives q=4 for its tag, its neighbour in the same read stays good."""
    scenario = Scenario.model_validate(
        {
            "devices": [
                {
                    "name": "plc",
                    "points": [
                        {"address": "hr:0", "type": "float32", "value": {"const": math.nan}},
                        {"address": "hr:2", "value": {"const": 5}},
                    ],
                }
            ]
        }
    )
    async with await start_simulator(scenario) as simulator:
        tags = [{"tag": "T.nan", "address": "hr:0", "type": "float32"}, *uint16_tags("hr:2")]
        driver = make_driver(closing, device(simulator.ports["plc"], tags))
        with capture_logs() as logs:
            first = await driver.read()
            await driver.read()
    assert qualities(first) == {"T.nan": Quality.CONFIG, "T.hr_2": Quality.GOOD}
    assert [e["event"] for e in logs].count("decode_failed") == 1  # state changes only


# --- requests -------------------------------------------------------------------------------


async def test_each_poll_sends_exactly_the_planned_requests(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """With max_registers 10 the plan has 12 requests for 41 tags; the device sees 12 per poll."""
    driver = make_driver(closing, device(sim.ports["plc"], all_types_tags(), max_registers=10))
    planned = [r.function_code for r in driver.plan]
    assert len(planned) == 12
    for _ in range(3):
        seen = len(sim.function_codes("plc"))
        samples = await driver.read()
        assert all_good(samples)
        assert sim.function_codes("plc")[seen:] == planned
    assert {s.tag: s.value for s in samples} == expected_all_types()


# --- exception responses --------------------------------------------------------------------


def refusing_scenario() -> Scenario:
    points = [{"address": f"hr:{a}", "value": {"const": a}} for a in (0, 100, 101, 102)]
    return Scenario.model_validate(
        {"devices": [{"name": "plc", "points": points, "exception_addresses": ["hr:100"]}]}
    )


async def test_an_exception_response_is_q2_for_a_tag_alone_in_its_request(
    closing: list[ModbusDriver],
) -> None:
    """hr:100 is refused; hr:0 and hr:102 are separate reads and stay good; the link stays up."""
    async with await start_simulator(refusing_scenario()) as simulator:
        config = device(simulator.ports["plc"], uint16_tags("hr:0", "hr:100", "hr:102"))
        driver = make_driver(closing, config)
        assert [str(r) for r in driver.plan] == ["hr:0+1", "hr:100+1", "hr:102+1"]
        with capture_logs() as logs:
            first = await driver.read()
            second = await driver.read()
    for samples in (first, second):
        assert qualities(samples) == {
            "T.hr_0": Quality.GOOD,
            "T.hr_100": Quality.COMM,
            "T.hr_102": Quality.GOOD,
        }
    assert by_tag(first)["T.hr_102"].value == 102
    assert driver.link is LinkState.UP
    refused = [e for e in logs if e["event"] == "read_refused"]
    assert len(refused) == 1  # logged when it starts, not on every poll
    assert (refused[0]["request"], refused[0]["exception_code"]) == ("hr:100+1", 2)


async def test_a_refused_merged_read_is_split_so_only_the_missing_address_is_q2(
    closing: list[ModbusDriver],
) -> None:
    """hr:100 and hr:101 are one read; the device refuses it for hr:100 alone.

    Modbus answers a request with data or with one exception code, never per
    register. The driver splits the read at once, re-sends the parts in the
    same poll and keeps the split: hr:101 is good from the first poll on.
    """
    async with await start_simulator(refusing_scenario()) as simulator:
        config = device(simulator.ports["plc"], uint16_tags("hr:0", "hr:100", "hr:101"))
        driver = make_driver(closing, config)
        assert [str(r) for r in driver.plan] == ["hr:0+1", "hr:100+2"]
        with capture_logs() as logs:
            samples = await driver.read()
        assert [str(r) for r in driver.plan] == ["hr:0+1", "hr:100+1", "hr:101+1"]
        sent = len(simulator.function_codes("plc"))
        again = await driver.read()
        assert len(simulator.function_codes("plc")) - sent == 3
    expected = {"T.hr_0": Quality.GOOD, "T.hr_100": Quality.COMM, "T.hr_101": Quality.GOOD}
    assert qualities(samples) == expected
    assert qualities(again) == expected
    learned = [e for e in logs if e["event"] == "read_plan_learned"]
    assert [(e["before"], e["after"]) for e in learned] == [
        (["hr:0+1", "hr:100+2"], ["hr:0+1", "hr:100+1", "hr:101+1"])
    ]


async def test_a_unit_the_gateway_cannot_reach_is_down_and_the_connection_stays_open(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """The simulator answers unit 9 with exception 0x0B, as a gateway does for a dead unit:
    the unit is down (its tags q=2, the reason named), the connection is not dropped."""
    driver = make_driver(closing, device(sim.ports["plc"], uint16_tags("hr:1"), unit=9))
    (reading,) = await driver.read_all()
    assert reading.sample.quality is Quality.COMM
    assert reading.reason == "exception 11 (GATEWAY TARGET DEVICE FAILED TO RESPOND)"
    assert driver.link is LinkState.DOWN
    assert sim.connections("plc") == 1
    await driver.read()
    assert sim.connections("plc") == 1


# --- outages --------------------------------------------------------------------------------


async def test_a_stopped_device_is_q2_at_once_and_is_read_again_when_it_returns(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """Stop: every tag q=2 well within the timeout. Start: good again within the backoff."""
    driver = make_driver(closing, device(sim.ports["plc"], all_types_tags()))
    assert all_good(await driver.read())

    await sim.stop_device("plc")
    with capture_logs() as logs:
        samples, took = await timed(driver.read)
        await driver.read()  # in the backoff window: no log line, no connect
    assert {s.quality for s in samples} == {Quality.COMM}
    assert len(samples) == len(all_types_tags())
    assert took < TIMEOUT
    assert driver.link is LinkState.DOWN
    assert [e["event"] for e in logs] == ["link_down"]

    await sim.start_device("plc")
    samples = await read_until(driver, all_good, within=3.0)
    assert {s.tag: s.value for s in samples} == expected_all_types()
    assert driver.link is LinkState.UP


async def test_a_stopped_device_is_summed_up_while_it_is_dead_then_its_recovery_logged(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """The driver says link_down once and backs off between connects; the poller sums the
    dead polls up every period (0.2 s here, 5 min in the field) until the device answers."""
    fields = {"reconnect_min": "100ms", "reconnect_max": "200ms"}
    driver = make_driver(closing, device(sim.ports["plc"], uint16_tags("hr:1"), **fields))
    poller = Poller(driver, 0.05, lambda *polled: None, lambda *missed: None, summary_every_s=0.2)
    with capture_logs() as logs:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.1)
        await sim.stop_device("plc")
        await asyncio.sleep(0.7)
        await sim.start_device("plc")
        deadline = time.monotonic() + 3.0
        while "poll_recovered" not in [e["event"] for e in logs]:
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    events = [e["event"] for e in logs if e["event"].startswith(("poll_", "link_"))]
    assert events[:3] == ["link_up", "link_down", "poll_failed"]
    assert events[-2:] == ["link_up", "poll_recovered"]
    assert set(events[3:-2]) == {"poll_still_failing"}
    assert len(events[3:-2]) >= 2


async def test_a_hung_device_times_out_then_backs_off_without_touching_the_network(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """A device that accepts but never answers costs one timeout, then q=2 at once until retry."""
    driver = make_driver(closing, device(sim.ports["plc"], uint16_tags("hr:1", "hr:2")))
    assert all_good(await driver.read())
    assert sim.connections("plc") == 1

    sim.hang_device("plc")
    samples, took = await timed(driver.read)
    assert {s.quality for s in samples} == {Quality.COMM}
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 0.2

    samples, took = await timed(driver.read)  # inside the 0.5 s backoff window
    assert {s.quality for s in samples} == {Quality.COMM}
    assert took < 0.05
    assert sim.connections("plc") == 1

    sim.hang_device("plc", hung=False)
    await read_until(driver, all_good, within=3.0)
    assert sim.connections("plc") == 2


async def test_a_dead_device_does_not_delay_a_live_one_polled_concurrently(
    closing: list[ModbusDriver],
) -> None:
    """gather(dead, live): the live device answers in milliseconds while the dead one times out."""
    point = {"address": "hr:0", "value": {"counter": {}}}
    scenario = Scenario.model_validate(
        {"devices": [{"name": "dead", "points": [point]}, {"name": "live", "points": [point]}]}
    )
    async with await start_simulator(scenario) as simulator:
        dead = make_driver(
            closing, device(simulator.ports["dead"], uint16_tags("hr:0"), name="dead")
        )
        live = make_driver(
            closing, device(simulator.ports["live"], uint16_tags("hr:0"), name="live")
        )
        assert all_good(await dead.read())
        simulator.hang_device("dead")
        (dead_samples, dead_took), (live_samples, live_took) = await asyncio.gather(
            timed(dead.read), timed(live.read)
        )
    assert {s.quality for s in dead_samples} == {Quality.COMM}
    assert dead_took >= TIMEOUT * 0.9
    assert all_good(live_samples)
    assert live_took < 0.1


async def test_a_cancelled_read_drops_the_connection_and_the_next_read_reconnects(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """Cancelling a read mid-request raises CancelledError and leaves no stale request behind."""
    driver = make_driver(closing, device(sim.ports["plc"], uint16_tags("hr:1")))
    assert all_good(await driver.read())
    sim.hang_device("plc")
    task = asyncio.ensure_future(driver.read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sim.hang_device("plc", hung=False)
    assert all_good(await driver.read())
    assert sim.connections("plc") == 2


# --- read-only ------------------------------------------------------------------------------


async def test_the_device_only_ever_receives_read_function_codes(
    sim: Simulator, closing: list[ModbusDriver]
) -> None:
    """A full run (all areas, refusals, an outage, a reconnect) sends codes 1-4 and nothing else."""
    driver = make_driver(closing, device(sim.ports["plc"], all_types_tags(), max_registers=10))
    refused = make_driver(closing, device(sim.ports["plc"], uint16_tags("hr:200")))
    for _ in range(3):
        await driver.read()
        await refused.read()
    await sim.stop_device("plc")
    await driver.read()
    await sim.start_device("plc")
    await read_until(driver, all_good, within=3.0)
    codes = sim.function_codes("plc")
    assert set(codes) == READ_CODES


async def test_the_function_code_log_does_catch_a_write(sim: Simulator) -> None:
    """Control for the test above: a write does show up in the log (and is refused)."""
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.ports["plc"], timeout=1, retries=0)
    await client.connect()
    try:
        response = await client.write_register(0, 1, device_id=1)
    finally:
        client.close()
    assert response.isError()
    assert response.exception_code == 1
    assert sim.function_codes("plc") == [6]


async def test_build_driver_polls_the_demo_plant_with_the_demo_config() -> None:
    """config/demo.yaml against drivers/simulator/scenarios/demo.yaml: 3 reads, 9 good values."""
    scenario = load_scenario(ROOT / "drivers/simulator/scenarios/demo.yaml")
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text(encoding="utf-8"))
    async with await start_simulator(scenario, {"plc-tank-farm": 0}) as simulator:
        raw["devices"][0]["port"] = simulator.ports["plc-tank-farm"]
        agent = AgentConfig.model_validate(raw)
        [config] = agent.devices
        driver = build_driver(config, report_every=agent.report_every_of(config))
        try:
            samples = await driver.read()
        finally:
            await driver.close()
        codes = simulator.function_codes("plc-tank-farm")
    values = {s.tag: s.value for s in samples}
    assert all_good(samples)
    assert sorted(codes) == [1, 2, 3]
    assert 9 <= values["HZ01.LT101"] <= 15
    assert 24 <= values["HZ01.TT101"] <= 26
    assert values["HZ01.PT101"] == pytest.approx(0.40, abs=0.005)
    assert values["HZ01.GT201"] == 3
    assert values["HZ01.AT301"] == pytest.approx(20.9, abs=0.3)
    assert (values["HZ01.XV101"], values["HZ01.ESD01"]) == (True, False)


@pytest.mark.parametrize("as_object", [False, True], ids=["path", "scenario"])
async def test_run_simulator_announces_each_device_and_serves_until_cancelled(
    capsys: pytest.CaptureFixture[str], closing: list[ModbusDriver], as_object: bool
) -> None:
    """One stdout line per device with its real port; the device answers; cancel stops it."""
    path = ROOT / "drivers/simulator/scenarios/demo.yaml"
    source = load_scenario(path) if as_object else path
    task = asyncio.ensure_future(run_simulator(source, {"plc-tank-farm": 0}))
    out = ""
    for _ in range(100):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out.endswith("\n"):
            break
    line = out.strip()
    prefix = "simulating plc-tank-farm on 127.0.0.1:"
    assert line.startswith(prefix), line
    assert line.endswith(" unit 1"), line
    port = int(line.removeprefix(prefix).split()[0])
    driver = make_driver(closing, device(port, [{"tag": "T.gas", "address": "hr:5"}]))
    assert all_good(await driver.read())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
