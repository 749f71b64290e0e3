"""OPC UA reading cost: the agent's driver, poll and subscribe, against naive baselines, same run.

Run: .venv/bin/python bench/opcua_poll.py [--nodes 1000] [--seconds 10] [--rounds 2]

Plant: one simulated OPC UA server (`edge-agent simulate`, its own process, so
its CPU is not counted) with `--nodes` Double variables whose values change
every second (noise), no security.

Four readers, each `--seconds` long, rounds interleaved; CPU is this process's
user+system time (`time.process_time`) over the window:
1. baseline poll: asyncua, one Read request per node, every node once a second;
2. agent poll: `OpcuaDriver`, mode poll, poll 1 s (batched reads);
3. baseline subscribe: asyncua's subscription with a handler (its callback
   mode: one task per notification), publishing interval 1 s;
4. agent subscribe: `OpcuaDriver`, mode subscribe, publishing interval 1 s,
   read every second (the changes plus the unchanged tags' repeats).
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
from pathlib import Path
from typing import Any

import structlog
from asyncua import Client
from simulated import spawn_simulator

from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.driver import OpcuaDriver

NAMESPACE = "urn:bench:plant"
Result = tuple[int, float, float]
"""(values, wall seconds, CPU seconds)."""


def start_plant(nodes: int, directory: Path) -> tuple[subprocess.Popen[str], int]:
    variables = [
        {"name": f"V{i:04d}", "value": {"noise": {"mean": 50, "sd": 5, "seed": i}}}
        for i in range(nodes)
    ]
    server = {"name": "plant", "protocol": "opcua", "namespace": NAMESPACE, "update": "1s"}
    scenario = {"devices": [{**server, "folders": [{"name": "P", "variables": variables}]}]}
    process, (port,) = spawn_simulator(scenario, directory)
    return process, port


def config(port: int, nodes: int, mode: str) -> OpcuaDevice:
    return OpcuaDevice.model_validate(
        {
            "name": "plant",
            "driver": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{port}",
            "namespace": NAMESPACE,
            "mode": mode,
            "poll": "1s",
            "publishing_interval": "1s",
            "timeout": "5s",
            "connect_timeout": "20s",
            "tags": [
                {"tag": f"T{i:04d}", "hazard": "HZ01", "node": f"s=P.V{i:04d}"}
                for i in range(nodes)
            ],
        }
    )


async def every_second(seconds: float, poll: Callable[[], Awaitable[int]]) -> Result:
    values, stop_at = 0, time.monotonic() + seconds
    cpu, wall = time.process_time(), time.monotonic()
    deadline = wall
    while time.monotonic() < stop_at:
        got = await poll()
        values += got
        deadline += 1.0
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    return values, time.monotonic() - wall, time.process_time() - cpu


async def agent(port: int, nodes: int, mode: str, seconds: float) -> Result:
    driver = OpcuaDriver(config(port, nodes, mode))
    await driver.read()  # connect (and subscribe) outside the window
    await asyncio.sleep(1.5)

    async def poll() -> int:
        return sum(1 for s in await driver.read() if s.value is not None)

    try:
        return await every_second(seconds, poll)
    finally:
        await driver.close()


async def baseline_poll(port: int, nodes: int, seconds: float) -> Result:
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=5)
    await client.connect()
    ns = await client.get_namespace_index(NAMESPACE)
    handles = [client.get_node(f"ns={ns};s=P.V{i:04d}") for i in range(nodes)]

    async def poll() -> int:
        good = 0
        for node in handles:
            value = await node.read_data_value()
            good += value.StatusCode.is_good()
        return good

    try:
        return await every_second(seconds, poll)
    finally:
        await client.disconnect()


class Counter:
    def __init__(self) -> None:
        self.values = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values += 1


async def baseline_subscribe(port: int, nodes: int, seconds: float) -> Result:
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=5)
    await client.connect()
    ns = await client.get_namespace_index(NAMESPACE)
    counter = Counter()
    subscription = await client.create_subscription(1000, counter)
    await subscription.subscribe_data_change(
        [client.get_node(f"ns={ns};s=P.V{i:04d}") for i in range(nodes)]
    )
    await asyncio.sleep(1.5)

    async def poll() -> int:
        got, counter.values = counter.values, 0
        return got

    try:
        return await every_second(seconds, poll)
    finally:
        await client.disconnect()


def row(name: str, result: Result, base: Result | None) -> str:
    values, wall, cpu = result
    per_k = cpu / values * 1000 if values else float("nan")
    ratio = "1.0x" if base is None else f"{(base[2] / base[0] * 1000) / per_k:.1f}x less"
    rate = f"{values / wall:,.0f}"
    return f"| {name} | {rate} | {cpu:.2f} s / {wall:.1f} s | {per_k * 1000:.1f} ms | {ratio} |"


def total(results: list[Result]) -> Result:
    return (sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


async def main_async(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_plant(args.nodes, Path(directory))
        runs: dict[str, list[Result]] = {k: [] for k in ("bpoll", "poll", "bsub", "sub")}
        try:
            for _ in range(args.rounds):
                runs["bpoll"].append(await baseline_poll(port, args.nodes, args.seconds))
                runs["poll"].append(await agent(port, args.nodes, "poll", args.seconds))
                runs["bsub"].append(await baseline_subscribe(port, args.nodes, args.seconds))
                runs["sub"].append(await agent(port, args.nodes, "subscribe", args.seconds))
        finally:
            process.terminate()
            process.wait(10)
    bpoll, poll, bsub, sub = (total(runs[k]) for k in ("bpoll", "poll", "bsub", "sub"))
    print(f"{args.nodes} nodes, 1 s poll / publishing interval; {args.rounds} rounds of "
          f"{args.seconds:g} s per reader, interleaved; {os.cpu_count()} CPUs")  # fmt: skip
    print()
    print("| reader | values/s | agent CPU | CPU per 1,000 values | vs baseline |")
    print("|---|---|---|---|---|")
    print(row("baseline poll: one Read per node (asyncua)", bpoll, None))
    print(row("edge-agent driver, poll (batched Read)", poll, bpoll))
    print(row("baseline subscribe: asyncua handler callbacks", bsub, None))
    print(row("edge-agent driver, subscribe", sub, bsub))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
