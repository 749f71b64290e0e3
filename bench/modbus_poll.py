"""Modbus polling cost: the agent's driver against a one-request-per-tag reader, same run.

Run: .venv/bin/python bench/modbus_poll.py [--devices 20] [--tags 100] [--seconds 10] [--rounds 3]

Plant: `--devices` simulated Modbus TCP PLCs served by `edge-agent simulate` in
a separate process (so its CPU is not counted), `--tags` tags each: a realistic
mix of float32 (word-swapped), scaled int16, uint32, int32, float64 and bit
tags, laid out in blocks of 10 with spare registers between blocks (present on
the device and reading 0, as in most PLC register maps).

Four measurements, each `--seconds` long, in this process, repeated `--rounds`
times in turn (the table sums the rounds):
1. agent, 1 s poll: a `ModbusDriver` per device, each polled on its own
   monotonic deadlines (as edge_agent/runtime.py does);
2. baseline, 1 s poll: per device one plain pymodbus client sending one request
   per tag and decoding with `client.convert_from_registers` (what a
   one-request-per-tag gateway does);
3. agent, shortened poll (`--fast-poll`, default 20 ms): tag values per second
   one agent process sustains;
4. for reference, plain pymodbus clients sending the agent's merged requests
   and decoding nothing: what the Modbus client itself costs.
CPU is this process's user+system time (`time.process_time`) over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from simulated import spawn_simulator

from edge_agent.drivers.modbus.config import ModbusDevice
from edge_agent.drivers.modbus.driver import ModbusDriver

# (type, registers) of the register tags in one block of 10; bits come after.
BLOCK = [
    ("float32", 2),
    ("float32", 2),
    ("float32", 2),
    ("float32", 2),
    ("int16", 1),
    ("int16", 1),
    ("uint32", 2),
    ("int32", 2),
    ("float64", 4),
    ("int16", 1),
]
SPARE = 4
"""Spare registers between blocks."""
BITS_SHARE = 0.2
"""Share of tags that are coils / discrete inputs."""


@dataclass
class Layout:
    scenario_points: list[dict[str, Any]]
    tags: list[dict[str, Any]]


def layout(tags: int) -> Layout:
    bits = int(tags * BITS_SHARE)
    registers = tags - bits
    points: list[dict[str, Any]] = []
    agent_tags: list[dict[str, Any]] = []
    offset = 0
    for i in range(registers):
        data_type, width = BLOCK[i % len(BLOCK)]
        if i and i % len(BLOCK) == 0:
            for spare in range(SPARE):
                points.append({"address": f"hr:{offset + spare}", "value": {"const": 0}})
            offset += SPARE
        tag: dict[str, Any] = {"tag": f"T{i:04d}", "hazard": "HZ01", "address": f"hr:{offset}",
                               "type": data_type}  # fmt: skip
        point: dict[str, Any] = {"address": f"hr:{offset}", "type": data_type,
                                 "value": {"const": 10 + i % 50}}  # fmt: skip
        if data_type == "float32":
            tag["byte_order"] = point["byte_order"] = "CDAB"
        if data_type == "int16":
            tag["scale"] = point["scale"] = {"multiplier": 0.1}
        points.append(point)
        agent_tags.append(tag)
        offset += width
    for j in range(bits):
        area = "co" if j % 2 == 0 else "di"
        address = f"{area}:{j // 2}"
        points.append({"address": address, "type": "bool", "value": {"const": j % 3 == 0}})
        agent_tags.append({"tag": f"B{j:04d}", "hazard": "HZ01", "address": address,
                           "type": "bool"})  # fmt: skip
    return Layout(points, agent_tags)


def start_plant(
    devices: int, plan: Layout, directory: Path
) -> tuple[subprocess.Popen[str], list[int]]:
    scenario = {
        "devices": [
            {"name": f"plc-{n:02d}", "port": 0, "unit": 1, "points": plan.scenario_points}
            for n in range(devices)
        ]
    }
    return spawn_simulator(scenario, directory)


async def poll_for(
    seconds: float, interval: float, pollers: list[Callable[[], Awaitable[int]]]
) -> tuple[int, float, float]:
    """Run each poller on its own monotonic deadlines; (values, wall s, cpu s)."""
    values = 0
    stop_at = time.monotonic() + seconds

    async def run(poll: Callable[[], Awaitable[int]]) -> None:
        nonlocal values
        deadline = time.monotonic()
        while time.monotonic() < stop_at:
            got = await poll()  # not `values += await ...`: that reads `values` before the await
            values += got
            deadline += interval
            now = time.monotonic()
            if deadline < now:
                deadline += ((now - deadline) // interval + 1) * interval
            await asyncio.sleep(deadline - now)

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(run(p) for p in pollers))
    return values, time.monotonic() - wall, time.process_time() - cpu


def agent_devices(ports: list[int], plan: Layout) -> list[ModbusDevice]:
    return [
        ModbusDevice.model_validate(
            {
                "name": f"plc-{n:02d}",
                "driver": "modbus",
                "host": "127.0.0.1",
                "port": port,
                "timeout": "2s",
                "max_gap": 8,
                "tags": plan.tags,
            }
        )
        for n, port in enumerate(ports)
    ]


async def measure_agent(
    ports: list[int], plan: Layout, seconds: float, interval: float
) -> tuple[int, float, float, int]:
    drivers = [ModbusDriver(d) for d in agent_devices(ports, plan)]
    for driver in drivers:
        await driver.read()  # connect outside the window

    def poller(driver: ModbusDriver) -> Callable[[], Awaitable[int]]:
        async def poll() -> int:
            samples = await driver.read()
            return sum(1 for s in samples if s.value is not None)

        return poll

    try:
        values, wall, cpu = await poll_for(seconds, interval, [poller(d) for d in drivers])
    finally:
        for driver in drivers:
            await driver.close()
    return values, wall, cpu, len(drivers[0].plan)


async def measure_baseline(
    ports: list[int], plan: Layout, seconds: float, interval: float
) -> tuple[int, float, float, int]:
    """One plain pymodbus client per device, one request per tag."""
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=2, retries=0) for p in ports]
    for client in clients:
        await client.connect()
    word_types = {
        "int16": "INT16", "uint32": "UINT32", "int32": "INT32", "float32": "FLOAT32",
        "float64": "FLOAT64",
    }  # fmt: skip
    widths = {"int16": 1, "uint32": 2, "int32": 2, "float32": 2, "float64": 4, "bool": 1}

    def poller(client: AsyncModbusTcpClient) -> Callable[[], Awaitable[int]]:
        async def poll() -> int:
            good = 0
            for tag in plan.tags:
                area, offset = tag["address"].split(":")
                count = widths[tag["type"]]
                if area == "co":
                    response = await client.read_coils(int(offset), count=1, device_id=1)
                    good += not response.isError() and response.bits[0] in (True, False)
                    continue
                if area == "di":
                    response = await client.read_discrete_inputs(int(offset), count=1, device_id=1)
                    good += not response.isError() and response.bits[0] in (True, False)
                    continue
                response = await client.read_holding_registers(
                    int(offset), count=count, device_id=1
                )
                if response.isError():
                    continue
                kind = getattr(client.DATATYPE, word_types[tag["type"]])
                order = "little" if tag.get("byte_order") == "CDAB" else "big"
                value = client.convert_from_registers(response.registers, kind, word_order=order)
                if "scale" in tag:
                    value = value * tag["scale"]["multiplier"]
                good += value is not None
            return good

        return poll

    try:
        values, wall, cpu = await poll_for(seconds, interval, [poller(c) for c in clients])
    finally:
        for client in clients:
            client.close()
    return values, wall, cpu, len(plan.tags)


async def measure_floor(
    ports: list[int], plan: Layout, seconds: float, interval: float
) -> tuple[int, float, float, int]:
    """Plain pymodbus sending the agent's merged requests, decoding nothing: the client's cost."""
    requests = [
        (r.function_code, r.address, r.count, len(r.slots))
        for r in ModbusDriver(agent_devices(ports[:1], plan)[0]).plan
    ]
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=2, retries=0) for p in ports]
    for client in clients:
        await client.connect()

    def poller(client: AsyncModbusTcpClient) -> Callable[[], Awaitable[int]]:
        reads = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }

        async def poll() -> int:
            got = 0
            for code, address, count, tags in requests:
                response = await reads[code](address, count=count, device_id=1)
                got += 0 if response.isError() else tags
            return got

        return poll

    try:
        values, wall, cpu = await poll_for(seconds, interval, [poller(c) for c in clients])
    finally:
        for client in clients:
            client.close()
    return values, wall, cpu, len(requests)


Result = tuple[int, float, float, int]
"""(tag values, wall seconds, CPU seconds, requests per device poll)."""


def total(results: list[Result]) -> Result:
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
        results[0][3],
    )


def row(name: str, result: tuple[int, float, float, int], base_cpu_per_k: float | None) -> str:
    values, wall, cpu, requests = result
    per_k = cpu / values * 1000 if values else float("nan")
    ratio = "1.0x" if base_cpu_per_k is None else f"{base_cpu_per_k / per_k:.1f}x less"
    return (
        f"| {name} | {requests} | {values / wall:,.0f} | {cpu:.2f} s / {wall:.1f} s "
        f"| {per_k * 1000:.2f} ms | {ratio} |"
    )


async def main_async(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    plan = layout(args.tags)
    with tempfile.TemporaryDirectory() as directory:
        process, ports = start_plant(args.devices, plan, Path(directory))
        try:
            runs: dict[str, list[Result]] = {"baseline": [], "agent": [], "fast": [], "floor": []}
            for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits all alike
                runs["baseline"].append(await measure_baseline(ports, plan, args.seconds, 1.0))
                runs["agent"].append(await measure_agent(ports, plan, args.seconds, 1.0))
                runs["fast"].append(await measure_agent(ports, plan, args.seconds, args.fast_poll))
                runs["floor"].append(await measure_floor(ports, plan, args.seconds, 1.0))
        finally:
            process.terminate()
            process.wait(10)
    baseline, agent, fast, floor = (total(runs[k]) for k in ("baseline", "agent", "fast", "floor"))
    base_per_k = baseline[2] / baseline[0] * 1000
    tags = args.devices * args.tags
    print(f"{args.devices} devices x {args.tags} tags = {tags} tags; {args.rounds} rounds of "
          f"{args.seconds:g} s per reader, interleaved; {os.cpu_count()} CPUs")  # fmt: skip
    per_round = [
        f"{b[2] / b[0] * 1e6:.1f}/{a[2] / a[0] * 1e6:.1f}"
        for b, a in zip(runs["baseline"], runs["agent"], strict=True)
    ]
    print(f"CPU µs per tag value, baseline/agent, by round: {', '.join(per_round)}")
    print()
    print("| reader | requests per device poll | tag values/s | agent CPU | "
          "CPU per 1,000 tag values | vs baseline |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(row("one request per tag, plain pymodbus, 1 s poll (baseline)", baseline, None))
    print(row("edge-agent driver, 1 s poll", agent, base_per_k))
    print(row(f"edge-agent driver, {args.fast_poll * 1000:g} ms poll", fast, base_per_k))
    print(row("the same merged requests, plain pymodbus, no decoding, 1 s poll", floor, base_per_k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100, help="tags per device")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fast-poll", type=float, default=0.02, help="seconds")
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
