"""The Modbus driver in the field: dropped connections, busy units, dead units, late
answers, learned holes, and connections of its own, against the simulator doing each.

Values are constants per unit (unit N answers N.25 in every register pair), so an
answer taken for another unit's request shows as a wrong value, not only a count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge_agent.backoff import Backoff
from edge_agent.drivers.base import ExplainsLink
from edge_agent.drivers.modbus import driver as driver_module
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.drivers.modbus.health import DEMOTE_AFTER, UnitHealth
from edge_agent.drivers.simulator import Scenario, Simulator, start_simulator
from edge_agent.model import LinkState, Quality, Sample

TIMEOUT = "200ms"
PAIRS = 3
"""float32 tags per unit, at hr:0, hr:10, hr:20: three requests per poll."""


def unit(number: int, **misbehaviour: Any) -> dict[str, Any]:
    points = [
        {"address": f"hr:{10 * i}", "type": "float32", "value": {"const": number + 0.25}}
        for i in range(PAIRS)
    ]
    return {"unit": number, "points": points, **misbehaviour}


def scenario(*units: dict[str, Any], **device: Any) -> Scenario:
    return Scenario.model_validate({"devices": [{"name": "gw", "units": list(units), **device}]})


def device(simulator: Simulator, number: int, **fields: Any) -> ModbusDevice:
    tags = [
        {"tag": f"U{number}.T{i}", "hazard": "HZ01", "address": f"hr:{10 * i}", "type": "float32"}
        for i in range(PAIRS)
    ]
    return ModbusDevice.model_validate(
        {
            "name": f"unit-{number}",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": simulator.ports["gw"],
            "unit": number,
            "timeout": TIMEOUT,
            "tags": tags,
            **fields,
        }
    )


def fast_probes() -> UnitHealth:
    """Demotion periods of 0.5-1 s instead of 30-300 s."""
    return UnitHealth(Backoff(0.5, 1.0))


@contextlib.asynccontextmanager
async def driving(*drivers: ModbusDriver) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for made in drivers:
            await made.close()


def good_values(samples: list[Sample]) -> set[object]:
    assert {s.quality for s in samples} == {Quality.GOOD}, samples
    return {s.value for s in samples}


# --- a dropped connection costs one retry, not a poll ----------------------------------------


async def test_a_dropped_connection_is_reconnected_and_the_request_resent_in_the_same_poll() -> (
    None
):
    """The device closes its connections on every 4th request: with three requests per
    poll, most polls see a drop, and every poll is still complete; the device never reads
    as down."""
    async with await start_simulator(scenario(unit(1), drop_every=4)) as simulator:
        one = ModbusDriver(device(simulator, 1))
        async with driving(one):
            with capture_logs() as logs:
                for _ in range(12):
                    assert good_values(await one.read()) == {1.25}
            assert one.stats.drop_retries >= 6
            assert simulator.connections("gw") == 1 + one.stats.drop_retries
            assert [e["event"] for e in logs if e["event"].startswith("link_")] == ["link_up"]


async def test_a_connection_that_drops_again_at_once_fails_the_rest_of_the_poll() -> None:
    """Only one resend per poll: a device that drops every request gives q=2, and is
    down after two such polls (the debounce), never a reconnect loop within a poll."""
    async with await start_simulator(scenario(unit(1), drop_every=1)) as simulator:
        one = ModbusDriver(device(simulator, 1))
        async with driving(one):
            for _ in range(2):
                readings = await one.read_all()
                assert {r.sample.quality for r in readings} == {Quality.COMM}
                assert all(r.reason and r.reason.startswith("connection") for r in readings)
            assert one.link is LinkState.DOWN
            assert simulator.connections("gw") <= 2 * 2


# --- up and down are debounced ---------------------------------------------------------------


async def test_one_silent_poll_leaves_the_device_up_two_make_it_down() -> None:
    async with await start_simulator(scenario(unit(1))) as simulator:
        one = ModbusDriver(device(simulator, 1))
        async with driving(one):
            await one.read()
            assert one.link is LinkState.UP
            simulator.hang_device("gw")
            samples = await one.read()
            assert {s.quality for s in samples} == {Quality.COMM}
            assert one.link is LinkState.UP  # one glitch is not an outage
            await one.read()
            assert one.link is LinkState.DOWN
            assert isinstance(one, ExplainsLink)  # /healthz says why
            assert one.link_reason == "connection: no unit on the link answered"
            simulator.hang_device("gw", hung=False)
            await asyncio.sleep(1.1)  # the link's reconnect backoff after the timeouts
            for _ in range(5):
                if one.link is LinkState.UP:
                    break
                await one.read()
                await asyncio.sleep(0.3)
            assert one.link is LinkState.UP
            assert one.link_reason is None


# --- a dead unit is demoted: its siblings stop paying for it ---------------------------------


@pytest.mark.parametrize("dead", [{"silent": True}, {"gateway_fails": True}])
async def test_a_dead_unit_is_demoted_and_only_probed(dead: dict[str, Any]) -> None:
    """Silent (timeouts) or answered for by the gateway with exception 11: after
    DEMOTE_AFTER polls the unit is asked only once per demotion period, its tags q=2 at
    every poll meanwhile, and its sibling's polls are all good and quick."""
    async with await start_simulator(scenario(unit(1), unit(3, **dead))) as simulator:
        one = ModbusDriver(device(simulator, 1))
        three = ModbusDriver(device(simulator, 3), health=fast_probes())
        async with driving(one, three):
            with capture_logs() as logs:
                for _ in range(20):
                    polls = await asyncio.gather(one.read(), three.read())
                    assert good_values(polls[0]) == {1.25}
                    assert {s.quality for s in polls[1]} == {Quality.COMM}
                    await asyncio.sleep(0.1)
            asked = simulator.requests_by_unit("gw")[3]
            # DEMOTE_AFTER polls, then a probe per 0.5-1 s period over about 2-4 s.
            assert DEMOTE_AFTER < asked <= DEMOTE_AFTER + 8
            assert three.stats.skipped_demoted >= 20 - asked
            assert three.link is LinkState.DOWN
            assert [e["event"] for e in logs].count("unit_demoted") == 1
            readings = await three.read_all()
            assert readings[0].reason is not None
            assert readings[0].reason.startswith(("demoted", "timeout", "exception 11"))


# --- busy and acknowledge are asked again ----------------------------------------------------


@pytest.mark.parametrize("code", ["busy_every", "acknowledge_every"])
async def test_a_busy_unit_is_asked_again_within_the_poll(code: str) -> None:
    """Every other request answered busy (6) or acknowledge (5): every poll complete, no
    refused/recovered log pair per poll."""
    async with await start_simulator(scenario(unit(1, **{code: 2}))) as simulator:
        one = ModbusDriver(device(simulator, 1))
        async with driving(one):
            with capture_logs() as logs:
                for _ in range(6):
                    assert good_values(await one.read()) == {1.25}
            assert one.stats.busy_retries >= 6
            assert not [e for e in logs if e["event"] in ("read_refused", "read_recovered")]


async def test_a_unit_busy_on_every_request_is_q2_with_its_reason_after_the_retries() -> None:
    async with await start_simulator(scenario(unit(1, busy_every=1))) as simulator:
        one = ModbusDriver(device(simulator, 1))
        async with driving(one):
            readings = await one.read_all()
            assert {r.sample.quality for r in readings} == {Quality.COMM}
            assert {r.reason for r in readings} == {"exception 6 (SERVER DEVICE BUSY)"}
            assert simulator.requests_by_unit("gw")[1] == PAIRS * (1 + driver_module.BUSY_RETRIES)
            assert one.link is LinkState.UP  # it answers: busy is not down


# --- late answers are never taken for another request's ---------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_a_late_answer_is_never_taken_for_a_later_request(transport: str) -> None:
    """Unit 2 answers 300 ms late against a 200 ms timeout, on the connection unit 1 uses
    (RTU over TCP has no transaction id): unit 1's values are always its own."""
    units = (unit(1), unit(2, delay="300ms"))
    async with await start_simulator(scenario(*units, transport=transport)) as simulator:
        one = ModbusDriver(device(simulator, 1, transport=transport))
        two = ModbusDriver(device(simulator, 2, transport=transport), health=fast_probes())
        async with driving(one, two):
            seen: set[object] = set()
            for _ in range(8):
                first, _second = await asyncio.gather(one.read(), two.read())
                seen |= {s.value for s in first if s.quality is Quality.GOOD}
                await asyncio.sleep(0.35)  # the late answer arrives while unit 1 waits
            assert seen == {1.25}


# --- a connection of its own ------------------------------------------------------------------


async def test_own_gives_a_unit_its_own_connection_and_shared_units_keep_one() -> None:
    units = (unit(1), unit(2), unit(3))
    async with await start_simulator(scenario(*units)) as simulator:
        drivers = [
            ModbusDriver(device(simulator, 1, connection="own")),
            ModbusDriver(device(simulator, 2)),
            ModbusDriver(device(simulator, 3)),
        ]
        async with driving(*drivers):
            results = await asyncio.gather(*(d.read() for d in drivers))
            assert [good_values(r) for r in results] == [{1.25}, {2.25}, {3.25}]
            assert simulator.connections("gw") == 2


async def test_own_beside_a_slow_unit_is_not_delayed_by_it() -> None:
    """A device that serves connections in parallel: unit 1 with its own connection
    answers at once while unit 2 (150 ms late) holds the shared one."""
    units = (unit(1), unit(2, delay="150ms"))
    async with await start_simulator(scenario(*units)) as simulator:
        one = ModbusDriver(device(simulator, 1, connection="own"))
        two = ModbusDriver(device(simulator, 2, timeout="1s"))
        async with driving(one, two):
            slow = asyncio.create_task(two.read())
            await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert good_values(await one.read()) == {1.25}
            assert loop.time() - started < 0.15  # the slow unit's three answers take 0.45 s
            assert good_values(await slow) == {2.25}


# --- learned holes are probed again ------------------------------------------------------------


async def test_a_learned_plan_is_tried_whole_again_after_reprobe_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hole at hr:10 is learned once; after REPROBE_S the planned read is tried again
    (the PLC program may have changed) and the same plan learned without a new log line."""
    refusing = scenario({**unit(1), "exception_addresses": ["hr:10"]})
    async with await start_simulator(refusing) as simulator:
        config = device(simulator, 1, max_gap=8)
        one = ModbusDriver(config)
        planned = [str(r) for r in one.plan]
        async with driving(one):
            with capture_logs() as logs:
                await one.read()
                learned = [str(r) for r in one.plan]
                assert learned != planned
                monkeypatch.setattr(driver_module, "REPROBE_S", 0.0)
                sent = simulator.requests_by_unit("gw")[1]
                await one.read()
                assert simulator.requests_by_unit("gw")[1] - sent > len(learned)  # re-learned
                assert [str(r) for r in one.plan] == learned
            assert [e["event"] for e in logs].count("read_plan_learned") == 1
