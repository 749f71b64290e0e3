"""A healthy unit beside a slow unit and a dead unit at one host:port, for minutes.

Two gateways at once, each with unit 1 (healthy, three requests a poll), unit 2
(answers 3 s late, timeout 4 s) and unit 3 (never answers), all polled every second
by the agent's own Poller:
- `parallel`: a device that serves connections in parallel; unit 1 has
  `connection: own`. Bound: unit 1's gap between good samples <= 2 poll intervals.
- `gateway`: a device that serialises every request like a TCP-to-RTU gateway in
  front of an RS-485 bus; every unit shared. Bound: poll + the slow unit's time,
  plus the dead unit's timeout when it is probed (once per demotion period).
Both after the first 30 s (the dead unit is demoted after DEMOTE_AFTER polls).

Knob: EDGE_AGENT_TEST_ISOLATION_S (default 300) sets the duration.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import pytest

from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver
from edge_agent.drivers.simulator import Scenario, start_simulator
from edge_agent.model import Quality, Sample
from edge_agent.poller import Poller

pytestmark = [pytest.mark.fault, pytest.mark.soak]

DURATION_S = float(os.environ.get("EDGE_AGENT_TEST_ISOLATION_S", "300"))
WARM_UP_S = 30.0
POLL_S = 1.0
SLOW_S = 3.0
SLOW_TIMEOUT_S = 4.0
DEAD_TIMEOUT_S = 1.0
SLACK_S = 0.5
"""Scheduling slack for a loaded test machine; the figures printed are the measure."""


def units() -> list[dict[str, Any]]:
    def point(address: str, value: float) -> dict[str, Any]:
        return {"address": address, "type": "float32", "value": {"const": value}}

    healthy = [point(a, 1.5) for a in ("hr:0", "hr:10", "hr:20")]
    return [
        {"unit": 1, "points": healthy},
        {"unit": 2, "points": [point("hr:0", 2.5)], "delay": f"{SLOW_S}s"},
        {"unit": 3, "points": [point("hr:0", 3.5)], "silent": True},
    ]


def device(port: int, unit: int, addresses: list[str], **fields: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "name": f"u{unit}-{port}",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "unit": unit,
            "poll": f"{POLL_S}s",
            "tags": [
                {"tag": f"U{unit}.{a.replace(':', '_')}", "hazard": "HZ01", "address": a}
                | {"type": "float32"}
                for a in addresses
            ],
            **fields,
        }
    )


def gateway_devices(port: int, own: bool) -> list[ModbusDevice]:
    return [
        device(port, 1, ["hr:0", "hr:10", "hr:20"], connection="own" if own else "shared"),
        device(port, 2, ["hr:0"], timeout=f"{SLOW_TIMEOUT_S}s"),
        device(port, 3, ["hr:0"], timeout=f"{DEAD_TIMEOUT_S}s"),
    ]


class GoodTimes:
    """When unit 1's polls came back complete and good."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_poll(self, poller: Poller, samples: list[Sample]) -> None:
        if poller.name.startswith("u1-") and all(s.quality is Quality.GOOD for s in samples):
            self.times.append(time.monotonic())

    def max_gap_after(self, start: float) -> float:
        times = [t for t in self.times if t >= start]
        assert len(times) > 2, "unit 1 had no good polls"
        return max(b - a for a, b in itertools.pairwise(times))


async def test_a_healthy_unit_keeps_its_polls_beside_a_slow_and_a_dead_unit() -> None:
    scenario = Scenario.model_validate(
        {
            "devices": [
                {"name": "parallel", "units": units()},
                {"name": "gateway", "units": units(), "serialise": True},
            ]
        }
    )
    async with await start_simulator(scenario) as simulator:
        parallel, gateway = GoodTimes(), GoodTimes()
        pollers = [
            Poller(ModbusDriver(d), POLL_S, parallel.on_poll, lambda *_: None)
            for d in gateway_devices(simulator.ports["parallel"], own=True)
        ] + [
            Poller(ModbusDriver(d), POLL_S, gateway.on_poll, lambda *_: None)
            for d in gateway_devices(simulator.ports["gateway"], own=False)
        ]
        started = time.monotonic()
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        try:
            await asyncio.sleep(DURATION_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for poller in pollers:
                await poller.close()
        after = started + min(WARM_UP_S, DURATION_S / 2)
        parallel_gap = parallel.max_gap_after(after)
        gateway_gap = gateway.max_gap_after(after)
        figures = f"unit 1 max gap: own {parallel_gap:.2f}s, shared/serialised {gateway_gap:.2f}s"
        print(figures)
        assert parallel_gap <= 2 * POLL_S + SLACK_S, figures
        assert gateway_gap <= POLL_S + SLOW_S + DEAD_TIMEOUT_S + SLACK_S, figures
        # The dead unit was asked DEMOTE_AFTER times, then once per demotion period.
        for name in ("parallel", "gateway"):
            asked = simulator.requests_by_unit(name).get(3, 0)
            assert asked <= 3 + DURATION_S / 30 + 1, (
                f"{name}: the dead unit was asked {asked} times"
            )
