"""How the simulated devices answer, seen from a plain pymodbus client (not the project's driver).

Late answers keep their own ids, a serialised gateway queues every
connection behind a late unit, a dead unit behind a gateway answers
exception 11, busy and acknowledge come every N-th request, connections drop,
and the counters a driver test reads. Each test starts its own simulator on a
free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from edge_agent.drivers.simulator import Scenario, Simulator, start_simulator

LATE = "500ms"
"""A late unit's answer time: long against loopback, short for the suite."""


def unit(number: int, **behaviour: Any) -> dict[str, Any]:
    """A unit whose hr:0 holds its own unit id, so an answer shows whose it is."""
    return {
        "unit": number,
        "points": [{"address": "hr:0", "value": {"const": number}}],
        **behaviour,
    }


@asynccontextmanager
async def gateway(units: list[dict[str, Any]], **device: Any) -> AsyncIterator[Simulator]:
    """Serve one device, "gw", of the given units and device fields."""
    scenario = Scenario.model_validate({"devices": [{"name": "gw", "units": units, **device}]})
    async with await start_simulator(scenario) as simulator:
        yield simulator


@asynccontextmanager
async def client(
    simulator: Simulator, patience: float = 2.0
) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected pymodbus client of the device "gw", one attempt per request."""
    modbus = AsyncModbusTcpClient(
        "127.0.0.1", port=simulator.ports["gw"], timeout=patience, retries=0
    )
    assert await modbus.connect()
    try:
        yield modbus
    finally:
        modbus.close()


async def read(modbus: AsyncModbusTcpClient, unit_id: int) -> Any:
    return await modbus.read_holding_registers(0, count=1, device_id=unit_id)


def request(transaction: int, unit_id: int) -> bytes:
    """A Modbus TCP frame reading hr:0 of `unit_id`."""
    return struct.pack(">HHHBBHH", transaction, 0, 6, unit_id, 3, 0, 1)


async def answers(reader: asyncio.StreamReader, count: int) -> list[tuple[int, int, int]]:
    """(transaction id, unit id, hr:0) of the next `count` answers, in the order they came."""
    out = []
    for _ in range(count):
        transaction, _protocol, _length, unit_id, code, _size, value = struct.unpack(
            ">HHHBBBH", await asyncio.wait_for(reader.readexactly(11), 2)
        )
        assert code == 3
        out.append((transaction, unit_id, value))
    return out


async def test_a_late_answer_carries_the_transaction_and_unit_id_of_its_own_request() -> None:
    """A client that gave up and asked again must not take the late answer for the new one."""
    async with (
        gateway([unit(2, delay=LATE), unit(3, delay="600ms")]) as simulator,
        client(simulator) as modbus,
    ):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read(modbus, 2), 0.1)  # answered at 0.5 s, after giving up
        answer = await read(modbus, 3)  # asked at 0.1 s, in flight when unit 2's answer comes
    assert (answer.dev_id, answer.registers) == (3, [3])


@pytest.mark.parametrize(
    ("serialise", "expected"),
    [
        (False, [(8, 1, 1), (7, 2, 2)]),  # each request on its own: the quick one first
        (True, [(7, 2, 2), (8, 1, 1)]),  # one at a time, in arrival order
    ],
)
async def test_two_requests_in_one_segment_are_each_answered_with_their_own_ids(
    serialise: bool,
    expected: list[tuple[int, int, int]],
) -> None:
    """Pipelined frames on one connection, read in one go, each get their own answer."""
    async with gateway([unit(1), unit(2, delay=LATE)], serialise=serialise) as simulator:
        reader, writer = await asyncio.open_connection("127.0.0.1", simulator.ports["gw"])
        try:
            writer.write(request(7, 2) + request(8, 1))
            assert await answers(reader, 2) == expected
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(("serialise", "waited"), [(False, (0, 0.25)), (True, (0.35, 1.5))])
async def test_a_late_unit_delays_other_connections_only_on_a_serialised_device(
    serialise: bool,
    waited: tuple[float, float],
) -> None:
    """A gateway serves one request at a time for every connection; a PLC serves each at once."""
    async with (
        gateway([unit(1), unit(2, delay=LATE)], serialise=serialise) as simulator,
        client(simulator) as first,
        client(simulator) as second,
    ):
        late = asyncio.create_task(read(first, 2))
        await asyncio.sleep(0.05)  # unit 2's request arrives first
        started = time.monotonic()
        quick = await read(second, 1)
        elapsed = time.monotonic() - started
        slow = await late
    assert (quick.registers, slow.registers) == ([1], [2])
    assert waited[0] <= elapsed < waited[1]


async def test_a_silent_unit_on_a_serialised_device_holds_the_bus_for_its_delay() -> None:
    """The gateway waits out its serial timeout for a dead unit before it serves anyone else."""
    async with (
        gateway([unit(1), unit(2, silent=True, delay=LATE)], serialise=True) as simulator,
        client(simulator, patience=0.2) as first,
        client(simulator) as second,
    ):
        dead = asyncio.create_task(read(first, 2))
        await asyncio.sleep(0.05)  # unit 2's request arrives first
        started = time.monotonic()
        quick = await read(second, 1)
        elapsed = time.monotonic() - started
        with pytest.raises(ModbusIOException):
            await dead
    assert quick.registers == [1]
    assert 0.35 <= elapsed < 1.5


async def test_a_failed_unit_behind_a_gateway_answers_exception_11_after_its_delay() -> None:
    """gateway_fails: the gateway's own answer for a dead unit, once its serial timeout passed."""
    async with gateway([unit(1), unit(2, gateway_fails=True, delay="200ms")]) as simulator:
        async with client(simulator) as modbus:
            started = time.monotonic()
            failed = await read(modbus, 2)
            elapsed = time.monotonic() - started
            alive = await read(modbus, 1)
        assert simulator.requests_by_unit("gw") == {2: 1, 1: 1}
    assert failed.isError()
    assert (failed.exception_code, failed.dev_id) == (11, 2)
    assert elapsed >= 0.2
    assert alive.registers == [1]


async def test_busy_every_answers_every_nth_request_to_the_unit_with_exception_6() -> None:
    """The count is the unit's own: requests to other units do not move it."""
    async with gateway([unit(1), unit(4, busy_every=2)]) as simulator, client(simulator) as modbus:
        codes = []
        for _ in range(4):
            assert (await read(modbus, 1)).registers == [1]
            answer = await read(modbus, 4)
            codes.append(answer.exception_code if answer.isError() else answer.registers)
    assert codes == [[4], 6, [4], 6]


async def test_acknowledge_every_answers_every_nth_request_with_exception_5_and_busy_wins() -> None:
    """acknowledge_every: 2 with busy_every: 3: the 6th request is due both and answers busy."""
    async with (
        gateway([unit(1, acknowledge_every=2, busy_every=3)]) as simulator,
        client(simulator) as modbus,
    ):
        codes = []
        for _ in range(6):
            answer = await read(modbus, 1)
            codes.append(answer.exception_code if answer.isError() else answer.registers)
    assert codes == [[1], 5, 6, 5, [1], 6]


async def test_drop_every_closes_every_connection_on_each_nth_request_before_answering() -> None:
    """The N-th request goes unanswered and every connection of the device closes."""
    async with gateway([unit(1)], drop_every=3) as simulator:
        port = simulator.ports["gw"]
        (first, first_out), (second, second_out) = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(2)
        ]
        first_out.write(request(1, 1))
        second_out.write(request(1, 1))
        assert await answers(first, 1) + await answers(second, 1) == [(1, 1, 1), (1, 1, 1)]
        assert simulator.open_connections("gw") == 2
        first_out.write(request(2, 1))
        assert await asyncio.wait_for(first.read(), 2) == b""  # closed, nothing answered
        assert await asyncio.wait_for(second.read(), 2) == b""
        assert simulator.open_connections("gw") == 0
        for writer in (first_out, second_out):
            writer.close()
        async with client(simulator) as third:
            assert (await read(third, 1)).registers == [1]
        assert simulator.connections("gw") == 3
        assert simulator.requests_by_unit("gw") == {1: 4}


async def test_a_delayed_unit_answers_that_late_and_a_silent_unit_never() -> None:
    """delay is the answer time; silent sends nothing, though the request is counted."""
    async with gateway([unit(1, delay="200ms"), unit(2, silent=True)]) as simulator:
        async with client(simulator, patience=0.5) as modbus:
            started = time.monotonic()
            late = await read(modbus, 1)
            elapsed = time.monotonic() - started
            with pytest.raises(ModbusIOException):
                await read(modbus, 2)
        assert simulator.requests_by_unit("gw") == {1: 1, 2: 1}
    assert late.registers == [1]
    assert 0.2 <= elapsed < 0.45


async def test_the_counters_show_requests_per_unit_and_the_units_of_each_connection() -> None:
    """What a driver test asserts: who was asked how often, and which connection asked whom."""
    async with gateway([unit(1), unit(2), unit(3, silent=True)]) as simulator:
        async with client(simulator) as own, client(simulator, patience=0.1) as shared:
            await read(own, 1)
            await read(shared, 2)
            await read(shared, 2)
            with pytest.raises(ModbusIOException):
                await read(shared, 3)
            assert simulator.open_connections("gw") == 2
        await asyncio.sleep(0.1)
        assert simulator.open_connections("gw") == 0
        assert simulator.connections("gw") == 2
        assert simulator.connection_units("gw") == [{1}, {2, 3}]
        assert simulator.requests_by_unit("gw") == {1: 1, 2: 2, 3: 1}
        assert simulator.unit_sequence("gw") == [1, 2, 2, 3]
        assert simulator.function_codes("gw") == [3, 3, 3, 3]
