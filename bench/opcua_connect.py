"""OPC UA connect time under operation limits: 1,000 tags, limits of 4 against none.

Run: .venv/bin/python bench/opcua_connect.py [--nodes 1000] [--limit 4] [--rounds 3]

Two simulated OPC UA servers (`edge-agent simulate`, one process), the same
`--nodes` Double variables, one announcing every operation limit at `--limit`
(MaxNodesPerRead, MaxNodesPerTranslateBrowsePathsToNodeIds,
MaxMonitoredItemsPerCall, ...) and enforcing it, the other none. Per server and
mode, the time from a new `OpcuaDriver` to its first read with every tag good:
the connect, the limits read, the browse paths resolved (TranslateBrowsePaths
in calls of `--limit`), then a poll's reads, or the monitored items made and
the first notifications. Tags are given by browse path, so resolving them is
part of the connect.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from simulated import spawn_simulator

from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.model import Quality

NAMESPACE = "urn:bench:plant"


def scenario(nodes: int, limit: int) -> dict[str, object]:
    variables = [{"name": f"V{i:04d}", "value": {"const": float(i)}} for i in range(nodes)]
    limits = {
        "max_nodes_per_read": limit,
        "max_nodes_per_translate_browse_paths": limit,
        "max_monitored_items_per_call": limit,
        "max_nodes_per_browse": limit,
        "max_nodes_per_register_nodes": limit,
    }

    def server(name: str) -> dict[str, object]:
        folders = [{"name": "P", "variables": variables}]
        return {"name": name, "protocol": "opcua", "namespace": NAMESPACE, "folders": folders}

    return {"devices": [{**server("limited"), "limits": limits}, server("open")]}


def config(port: int, nodes: int, mode: str) -> OpcuaDevice:
    return OpcuaDevice.model_validate(
        {
            "name": "plant",
            "driver": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{port}",
            "namespace": NAMESPACE,
            "mode": mode,
            "publishing_interval": "200ms",
            "timeout": "10s",
            "connect_timeout": "120s",
            "tags": [
                {"tag": f"T{i:04d}", "hazard": "HZ01", "browse_path": f"P/V{i:04d}"}
                for i in range(nodes)
            ],
        }
    )


async def first_complete_read(port: int, nodes: int, mode: str) -> float:
    started = time.perf_counter()
    driver = OpcuaDriver(config(port, nodes, mode))
    try:
        while True:
            samples = await driver.read()
            if len(samples) == nodes and all(s.quality is Quality.GOOD for s in samples):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        await driver.close()


async def main_async(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as directory:
        process, ports = spawn_simulator(scenario(args.nodes, args.limit), Path(directory))
        limited, unlimited = ports
        times: dict[tuple[str, str], list[float]] = {}
        try:
            for _ in range(args.rounds):
                for mode in ("poll", "subscribe"):
                    for name, port in (("none", unlimited), (f"{args.limit}", limited)):
                        taken = await first_complete_read(port, args.nodes, mode)
                        times.setdefault((mode, name), []).append(taken)
        finally:
            process.terminate()
            process.wait(10)
    print(f"{args.nodes} tags by browse path; median of {args.rounds} connects")
    print()
    print("| mode | operation limits | connect to the first complete read |")
    print("|---|---|---|")
    for (mode, name), taken in times.items():
        print(f"| {mode} | {name} | {statistics.median(taken):.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
