"""Driving a driver in a test: read until something shows, and Modbus drivers closed after.

Shared by tests/integration and tests/interop (tests/ is on the path of both).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from edge_agent.drivers.base import Driver
from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.model import Sample


async def read_until(
    driver: Driver,
    done: Callable[[list[Sample]], bool],
    within: float = 10.0,
    every: float = 0.2,
) -> list[Sample]:
    """Read every `every` seconds until `done(samples of one read)`; fails after `within`."""
    deadline = time.monotonic() + within
    seen: list[list[Sample]] = []
    while time.monotonic() < deadline:
        samples = await driver.read()
        if done(samples):
            return samples
        seen.append(samples)
        await asyncio.sleep(every)
    raise AssertionError(f"not seen within {within}s; last reads: {seen[-3:]}")


@contextlib.asynccontextmanager
async def modbus_drivers(*devices: ModbusDevice) -> AsyncIterator[list[ModbusDriver]]:
    """A driver per device, each closed (its link left) at the end."""
    made = [ModbusDriver(d) for d in devices]
    try:
        yield made
    finally:
        for driver in made:
            await driver.close()
