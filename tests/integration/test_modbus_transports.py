"""Every transport against the project's simulator: TCP, RTU over a pty pair, RTU over TCP.

Several unit ids per link, a dead unit among live ones, a slow device, a device
that drops its connections, one that sends garbage; and the proof that
nothing but read function codes ever reached a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from polling import modbus_drivers
from structlog.testing import capture_logs
from test_modbus_driver import expected_all_types, typed_points

from edge_agent.config.types import parse_duration
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.drivers.modbus.health import DEMOTE_AFTER
from edge_agent.drivers.simulator import Scenario, Simulator, start_simulator
from edge_agent.model import LinkState, Quality, Sample

TIMEOUT = "200ms"
READ_CODES = {1, 2, 3, 4}
TRANSPORTS = ("tcp", "rtu-over-tcp", "rtu")


def typed_unit(unit: int, silent: bool = False) -> dict[str, Any]:
    """Every register type in every byte order, laid back to back from hr:0."""
    points = [
        {"address": a, "type": t, "byte_order": o, "value": {"const": v}}
        for _tag, a, t, o, v in typed_points()
    ]
    points += [
        {"address": "hr:200", "type": "string", "length": 4, "value": {"const": "TK-101"}},
        {"address": "co:0", "type": "bool", "value": {"const": True}},
        {"address": "di:3", "type": "bool", "value": {"const": True}},
    ]
    return {"unit": unit, "points": points, "silent": silent}


def typed_tags(prefix: str) -> list[dict[str, Any]]:
    tags = [
        {"tag": f"{prefix}{tag}", "address": a, "type": t, "byte_order": o}
        for tag, a, t, o, _v in typed_points()
    ]
    tags += [
        {"tag": f"{prefix}name", "address": "hr:200", "type": "string", "length": 4},
        {"tag": f"{prefix}co0", "address": "co:0", "type": "bool"},
        {"tag": f"{prefix}di3", "address": "di:3", "type": "bool"},
    ]
    return tags


def expected_typed(prefix: str) -> dict[str, Any]:
    values = {
        f"{prefix}{tag}": value
        for tag, value in expected_all_types().items()
        if not tag.startswith(("T.ir", "T.co", "T.di", "T.int16.scaled"))
    }
    return values | {f"{prefix}name": "TK-101", f"{prefix}co0": True, f"{prefix}di3": True}


def bus_scenario(transport: str, units: list[dict[str, Any]], **device: Any) -> Scenario:
    return Scenario.model_validate(
        {"devices": [{"name": "bus", "transport": transport, "units": units, **device}]}
    )


def unit_device(
    simulator: Simulator, transport: str, unit: int, tags: list[dict[str, Any]], **fields: Any
) -> ModbusDevice:
    where: dict[str, Any]
    if transport == "rtu":
        where = {"serial": {"port": simulator.serial_port("bus"), "baudrate": 115200}}
    else:
        where = {"host": "127.0.0.1", "port": simulator.ports["bus"]}
    return ModbusDevice.model_validate(
        {
            "name": f"unit-{unit}",
            "driver": "modbus",
            "transport": transport,
            "unit": unit,
            "timeout": TIMEOUT,
            "tags": [{"hazard": "HZ01", **t} for t in tags],
            **where,
            **fields,
        }
    )


def values(samples: list[Sample]) -> dict[str, Any]:
    return {s.tag: s.value for s in samples}


def qualities(samples: list[Sample]) -> set[Quality]:
    return {s.quality for s in samples}


@pytest.fixture(autouse=True)
def no_leaked_fds() -> Iterator[None]:
    """The pty bridge and the serial client close what they open."""
    before = len(os.listdir("/proc/self/fd"))
    yield
    assert len(os.listdir("/proc/self/fd")) <= before + 2


# --- transports and types -------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_type_and_byte_order_reads_right_on_every_transport(transport: str) -> None:
    async with await start_simulator(bus_scenario(transport, [typed_unit(1)])) as simulator:
        device = unit_device(simulator, transport, 1, typed_tags("T."))
        async with modbus_drivers(device) as (driver,):
            samples = await driver.read()
            assert qualities(samples) == {Quality.GOOD}, samples
            assert values(samples) == expected_typed("T.")
            assert len(simulator.function_codes("bus")) == len(driver.plan) == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_several_units_share_one_connection_and_each_reads_its_own(transport: str) -> None:
    units = [typed_unit(1), typed_unit(2), typed_unit(7)]
    async with await start_simulator(bus_scenario(transport, units)) as simulator:
        devices = [unit_device(simulator, transport, u, typed_tags(f"U{u}.")) for u in (1, 2, 7)]
        async with modbus_drivers(*devices) as drivers:
            for _ in range(3):
                results = await asyncio.gather(*(d.read() for d in drivers))
            for unit, samples in zip((1, 2, 7), results, strict=True):
                assert values(samples) == expected_typed(f"U{unit}.")
            if transport != "rtu":
                assert simulator.connections("bus") == 1
            assert simulator.requests_by_unit("bus") == {1: 12, 2: 12, 7: 12}


# --- isolation ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_dead_unit_does_not_take_its_siblings_down(transport: str) -> None:
    """pymodbus issue 2431: a silent unit behind a gateway must not drop the shared link."""
    units = [typed_unit(1), typed_unit(2, silent=True), typed_unit(3)]
    async with await start_simulator(bus_scenario(transport, units)) as simulator:
        devices = [unit_device(simulator, transport, u, typed_tags(f"U{u}.")) for u in (1, 2, 3)]
        async with modbus_drivers(*devices) as (one, dead, three):
            started = time.monotonic()
            for _ in range(8):
                polls = await asyncio.gather(one.read(), dead.read(), three.read())
                assert qualities(polls[0]) == qualities(polls[2]) == {Quality.GOOD}
                assert qualities(polls[1]) == {Quality.COMM}
            elapsed = time.monotonic() - started
            assert (one.link, dead.link, three.link) == (LinkState.UP, LinkState.DOWN, LinkState.UP)
            # The dead unit costs a timeout in each of its first DEMOTE_AFTER polls (and on
            # RTU as long again of quiet bus after it), then is demoted: 8 polls in well
            # under 8 timeouts.
            assert simulator.requests_by_unit("bus")[2] == DEMOTE_AFTER
            per_timeout = 1 if transport == "tcp" else 2
            assert elapsed < (per_timeout * DEMOTE_AFTER + 3) * parse_duration(TIMEOUT)
            if transport != "rtu":
                assert simulator.connections("bus") == 1


async def test_units_on_one_bus_take_turns_poll_by_poll() -> None:
    """Round-robin by poll: while three units poll twice at once, each unit's poll goes
    in one turn, in the order they asked, so no sibling's request slips between a
    unit's own (a slow sibling then costs a poll one wait, not one per request)."""
    units = [typed_unit(1), typed_unit(2), typed_unit(3)]
    async with await start_simulator(bus_scenario("rtu", units)) as simulator:
        devices = [unit_device(simulator, "rtu", u, typed_tags(f"U{u}.")) for u in (1, 2, 3)]
        async with modbus_drivers(*devices) as drivers:
            for _ in range(2):
                await asyncio.gather(*(d.read() for d in drivers))
            assert simulator.requests_by_unit("bus") == {1: 8, 2: 8, 3: 8}
            # The simulator's log is in bus order: 1,1,1,1,2,2,2,2,3,3,3,3, twice.
            sequence = simulator.unit_sequence("bus")
            assert sequence == ([1] * 4 + [2] * 4 + [3] * 4) * 2


async def test_a_slow_device_answers_within_its_timeout_and_delays_no_one_else() -> None:
    slow = Scenario.model_validate(
        {
            "devices": [
                {"name": "bus", "units": [{**typed_unit(1), "delay": "150ms"}]},
                {"name": "fast", "units": [typed_unit(1)]},
            ]
        }
    )
    async with await start_simulator(slow) as simulator:
        slow_device = unit_device(simulator, "tcp", 1, typed_tags("S."), timeout="1s")
        fast_device = ModbusDevice.model_validate(
            {
                **slow_device.model_dump(exclude={"tags", "serial", "comm_alarm_after"}),
                "name": "fast",
                "port": simulator.ports["fast"],
                "timeout": "1s",
                "poll": "1s",
                "reconnect_min": "500ms",
                "reconnect_max": "30s",
                "tags": [{"hazard": "HZ01", **t} for t in typed_tags("F.")],
            }
        )
        async with modbus_drivers(slow_device, fast_device) as (slow_driver, fast_driver):

            async def timed(driver: ModbusDriver) -> tuple[list[Sample], float]:
                started = time.monotonic()
                return await driver.read(), time.monotonic() - started

            (slow_samples, slow_s), (fast_samples, fast_s) = await asyncio.gather(
                timed(slow_driver), timed(fast_driver)
            )
    assert qualities(slow_samples) == qualities(fast_samples) == {Quality.GOOD}
    assert slow_s >= 4 * 0.15
    assert fast_s < 0.15


async def test_a_device_that_drops_its_connection_is_read_again_at_once() -> None:
    """The device closes every connection on each 6th request (a poll is 4); polling goes on."""
    scenario = bus_scenario("tcp", [typed_unit(1)], drop_every=6)
    async with await start_simulator(scenario) as simulator:
        device = unit_device(
            simulator, "tcp", 1, typed_tags("T."), reconnect_min="50ms", reconnect_max="100ms"
        )
        async with modbus_drivers(device) as (driver,):
            good = 0
            deadline = time.monotonic() + 3
            while good < 3 and time.monotonic() < deadline:
                samples = await driver.read()
                good += qualities(samples) == {Quality.GOOD}
                await asyncio.sleep(0.02)
            assert good >= 1
            assert simulator.connections("bus") >= 2
            assert set(simulator.function_codes("bus")) <= READ_CODES


async def test_garbage_from_the_device_never_stops_polling() -> None:
    """A 'device' that answers every request with random bytes: q=2, never an exception."""
    rng = __import__("random").Random(7)

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(260):
                writer.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = ModbusDevice.model_validate(
        {
            "name": "babbler",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout": "100ms",
            "reconnect_min": "10ms",
            "reconnect_max": "20ms",
            "tags": [{"hazard": "HZ01", **t} for t in typed_tags("G.")],
        }
    )
    try:
        async with modbus_drivers(device) as (driver,):
            for _ in range(15):
                samples = await driver.read()
                assert len(samples) == len(device.tags)
                assert all(
                    s.quality in (Quality.GOOD, Quality.COMM, Quality.CONFIG) for s in samples
                )
                await asyncio.sleep(0.01)
    finally:
        server.close()
        await server.wait_closed()


async def test_reconnect_backs_off_to_its_cap_and_is_back_soon_after_the_device_returns() -> None:
    async with await start_simulator(bus_scenario("tcp", [typed_unit(1)])) as simulator:
        device = unit_device(
            simulator, "tcp", 1, typed_tags("T."), reconnect_min="20ms", reconnect_max="200ms"
        )
        async with modbus_drivers(device) as (driver,):
            assert qualities(await driver.read()) == {Quality.GOOD}
            await simulator.stop_device("bus")
            connects_before = simulator.connections("bus")
            for _ in range(20):
                assert qualities(await driver.read()) == {Quality.COMM}
                await asyncio.sleep(0.02)
            await simulator.start_device("bus")
            started = time.monotonic()
            while qualities(await driver.read()) != {Quality.GOOD}:
                assert time.monotonic() - started < 0.5, "not back within the 200ms cap"
                await asyncio.sleep(0.01)
            assert simulator.connections("bus") == connects_before + 1


# --- read-only ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_full_run_sends_only_read_function_codes(transport: str) -> None:
    """Every type, several units, a refused address, a dead unit: still only codes 1-4."""
    units = [typed_unit(1), typed_unit(2, silent=True)]
    units[0]["exception_addresses"] = ["hr:201"]
    async with await start_simulator(bus_scenario(transport, units)) as simulator:
        devices = [unit_device(simulator, transport, u, typed_tags(f"U{u}.")) for u in (1, 2)]
        async with modbus_drivers(*devices) as drivers:
            for _ in range(3):
                await asyncio.gather(*(d.read() for d in drivers))
            await asyncio.gather(*(d.read_all() for d in drivers))
        codes = simulator.function_codes("bus")
    assert codes
    assert set(codes) <= READ_CODES


# --- logs -----------------------------------------------------------------------------------


async def test_a_dead_unit_logs_link_down_once() -> None:
    units = [typed_unit(1), typed_unit(2, silent=True)]
    async with await start_simulator(bus_scenario("tcp", units)) as simulator:
        devices = [
            unit_device(
                simulator,
                "tcp",
                u,
                typed_tags(f"U{u}."),
                reconnect_min="10ms",
                reconnect_max="20ms",
            )
            for u in (1, 2)
        ]
        async with modbus_drivers(*devices) as drivers:
            with capture_logs() as logs:
                for _ in range(5):
                    await asyncio.gather(*(d.read() for d in drivers))
                    await asyncio.sleep(0.03)
    downs = [e for e in logs if e["event"] == "link_down"]
    assert [e["device"] for e in downs] == ["unit-2"]


# --- poll groups ----------------------------------------------------------------------------


async def test_a_slow_poll_group_is_read_only_when_its_own_deadline_comes() -> None:
    async with await start_simulator(bus_scenario("tcp", [typed_unit(1)])) as simulator:
        tags = typed_tags("T.")
        for t in tags[:3]:
            t["poll"] = "300ms"
        device = unit_device(simulator, "tcp", 1, tags, poll="100ms")
        async with modbus_drivers(device) as (driver,):
            assert [g.interval for g in driver.groups] == [0.1, 0.3]
            seen: list[int] = []
            started = time.monotonic()
            for k in range(7):
                await asyncio.sleep(max(0.0, started + 0.1 * k - time.monotonic()))
                samples = await driver.read()
                seen.append(len(samples))
            everything, fast_only = len(tags), len(tags) - 3
            assert seen == [everything, fast_only, fast_only, everything, fast_only, fast_only,
                            everything]  # fmt: skip
            assert {len(r) for r in [await driver.read_all()]} == {everything}


async def test_a_late_poll_group_skips_the_deadlines_it_missed_and_counts_them() -> None:
    async with await start_simulator(bus_scenario("tcp", [typed_unit(1)])) as simulator:
        tags = typed_tags("T.")
        for t in tags:
            t["poll"] = "200ms"
        device = unit_device(simulator, "tcp", 1, tags, poll="100ms")
        async with modbus_drivers(device) as (driver,):
            with capture_logs() as logs:
                assert len(await driver.read()) == len(tags)
                assert await driver.read() == []  # not due: nothing sent
                sent = len(simulator.function_codes("bus"))
                await asyncio.sleep(0.68)  # deadlines at 0.2, 0.4, 0.6 pass unread
                assert len(await driver.read()) == len(tags)
                assert len(simulator.function_codes("bus")) == sent + len(driver.plan)
                assert await driver.read() == []  # the next deadline is ahead, not behind
    assert driver.stats.overruns == 2  # 0.4 and 0.6 skipped; the read serves 0.2
    assert [e["missed"] for e in logs if e["event"] == "poll_overrun"] == [2]


async def test_a_half_answering_unit_costs_its_siblings_at_most_one_timeout() -> None:
    """Unit 1 answers hr:0 but never a read of hr:50; unit 2 on the same link is unaffected."""
    half = {"unit": 1, "silent_addresses": ["hr:50"],
            "points": [{"address": "hr:0", "value": {"const": 1}},
                       {"address": "hr:50", "value": {"const": 2}}]}  # fmt: skip
    async with await start_simulator(bus_scenario("tcp", [half, typed_unit(2)])) as simulator:
        tags = [{"tag": "H.0", "address": "hr:0"}, {"tag": "H.50", "address": "hr:50"}]
        halfway = unit_device(simulator, "tcp", 1, tags)
        sibling = unit_device(simulator, "tcp", 2, typed_tags("S."))
        async with modbus_drivers(halfway, sibling) as (half_driver, sibling_driver):
            first = await half_driver.read()
            assert [s.quality for s in first] == [Quality.GOOD, Quality.COMM]
            for _ in range(5):
                started = time.monotonic()
                samples, _ = await asyncio.gather(sibling_driver.read(), half_driver.read())
                assert qualities(samples) == {Quality.GOOD}
                assert time.monotonic() - started < 0.2 + 0.1  # at most one timeout
            assert simulator.connections("bus") == 1
