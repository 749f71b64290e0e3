"""CPU per delivered value: the whole agent against a bare merged-reads reader, same run.

Run: .venv/bin/python bench/pipeline.py [--devices 20] [--tags 100] [--polls 1,0.1,0.02]
                                        [--seconds 20] [--rounds 2] [--rss-devices 100]

Plant: `--devices` simulated Modbus TCP PLCs (`edge-agent simulate`, its own
process) of `--tags` float32 tags each, every value a sine of its own phase,
so every value changes at every poll and report by exception sends them all.
A private Mosquitto; the platform stand-in (bench/backfill.py's subscriber, its
own process) counts the items it receives per gateway.

Two readers, each its own process, in interleaved rounds per poll interval:
1. bare: per device one pymodbus client reading the device's registers in
   merged requests (125 registers each), decoding them with struct, writing
   the items with the agent's own encoder (edge_agent/wire.py, store/items.py)
   and publishing one message per poll (QoS 1, paho's network thread, window
   20). It stores nothing and judges nothing: the strongest baseline.
2. agent: `edge-agent run` on the same devices, with the defaults of a site
   (report by exception, statistics, the store, the uplink, /metrics).

Each reader runs until its items flow, then CPU (user + system of its whole
process, every thread: /proc/PID/stat) and items delivered are counted over
`--seconds`. The figure is CPU-seconds per 1,000 delivered values, and the
ratio agent / bare. `--rss-devices` x `--tags` tags at a 1 s poll gives the
resident memory of both (VmRSS), once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
import yaml
from backfill import Counts, platform_stand_in
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from simulated import spawn_simulator

from edge_agent.demo.broker import free_port
from edge_agent.store import StoredMessage, items
from edge_agent.uplink.envelope import Identity, envelope
from edge_agent.wire import NumberFormat

ENTERPRISE = "91370200MA3C00000K"
PREFIX = "safety/v1"
AGENT_GATEWAY = "GW-BENCH"
BARE_GATEWAY = "GW-BASELINE"
WARMUP_S = 4.0
TICKS = os.sysconf("SC_CLK_TCK")


def scenario(devices: int, tags: int) -> dict[str, Any]:
    def point(n: int) -> dict[str, Any]:
        period = 3.0 + (n % 17) * 0.37  # every value a sine of its own: each poll differs
        sine = {"mean": 50 + n % 9, "amplitude": 10, "period": f"{period:.2f}s"}
        return {"address": f"hr:{2 * n}", "type": "float32", "value": {"sine": sine}}

    return {
        "devices": [
            {"name": f"plc-{d:03}", "port": 0, "unit": 1, "points": [point(n) for n in range(tags)]}
            for d in range(devices)
        ]
    }


def agent_config(directory: Path, ports: list[int], tags: int, poll_s: float, broker: int) -> Path:
    devices = [
        {
            "name": f"plc-{d:03}",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "poll": f"{round(poll_s * 1000)}ms",
            "tags": [
                {"tag": f"D{d:03}.T{n:03}", "hazard": "HZ01", "address": f"hr:{2 * n}",
                 "type": "float32"}
                for n in range(tags)
            ],
        }
        for d, port in enumerate(ports)
    ]  # fmt: skip
    config = {
        "gateway": {"code": AGENT_GATEWAY, "enterprise": ENTERPRISE, "site": "chemical"},
        "uplink": {"mqtt": {"host": "127.0.0.1", "port": broker}},
        "store": {"path": str(directory / "store.db")},
        "devices": devices,
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = directory / f"agent-{poll_s}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- the bare reader, in its own process -----------------------------------------------


def bare_reader(
    ports: list[int], tags: int, poll_s: float, broker: int, after_seq: int = 0
) -> None:
    """Read, encode, publish; nothing else (see the module docstring). Its `seq`s follow on
    from `after_seq`: the platform stand-in counts a `seq` it has seen (an earlier run's) as
    a duplicate, so a run starting again from 1 would not count until it passed them."""
    logging.disable(logging.CRITICAL)
    asyncio.run(_bare(ports, tags, poll_s, broker, after_seq))


async def _bare(ports: list[int], tags: int, poll_s: float, broker: int, after_seq: int) -> None:
    identity = Identity(PREFIX, ENTERPRISE, BARE_GATEWAY)
    topic = identity.topic("rt")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker)
    client.loop_start()
    number = NumberFormat("float32").number
    seq = after_seq

    async def device(d: int, port: int) -> None:
        nonlocal seq
        modbus = AsyncModbusTcpClient("127.0.0.1", port=port)
        prefixes = [items.tag_prefix(f"D{d:03}.T{n:03}", "HZ01") for n in range(tags)]
        unpack = struct.Struct(f">{tags}f").unpack
        deadline = time.monotonic()
        while True:
            registers: list[int] = []
            try:
                if not modbus.connected:  # a hundred servers may take a moment to listen
                    await modbus.connect()
                for start in range(0, 2 * tags, 124):
                    answer = await modbus.read_holding_registers(
                        start, count=min(124, 2 * tags - start), device_id=1
                    )
                    registers += answer.registers
            except ModbusException:
                deadline = time.monotonic() + poll_s  # this poll is lost; try again at the next
                await asyncio.sleep(poll_s)
                continue
            now = time.time_ns() // 1_000_000
            values = unpack(struct.pack(f">{2 * tags}H", *registers))
            texts = [
                items.reading_item(prefix, now, number(v), 0)
                for prefix, v in zip(prefixes, values, strict=True)
            ]
            seq += 1
            message = StoredMessage(seq, "rt", False, now, "[" + ",".join(texts) + "]")
            client.publish(topic, envelope(identity, message, now), qos=1)
            deadline += poll_s
            await asyncio.sleep(max(deadline - time.monotonic(), 0))

    await asyncio.gather(*(device(d, port) for d, port in enumerate(ports)))


# -- measuring ------------------------------------------------------------------------


def cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system time of a whole process, all its threads; or of one of its threads."""
    path = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


@dataclass
class Window:
    cpu_s: float = 0.0
    values: int = 0

    @property
    def ms_per_1000(self) -> float:
        return 1e6 * self.cpu_s / self.values if self.values else math.nan


def measure(
    pid: int,
    counts: Counts,
    gateway: str,
    seconds: float,
    expected_rate: float,
    *,
    patience_s: float = 60,
) -> Window:
    """Wait (up to `patience_s`) for the items to flow, then count CPU and items over `seconds`."""
    deadline = time.monotonic() + patience_s
    start_items = counts.items(gateway)
    while counts.items(gateway) - start_items < expected_rate * 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gateway}: nothing flows")
        time.sleep(0.1)
    time.sleep(WARMUP_S)
    items0, cpu0 = counts.items(gateway), cpu_s(pid)
    time.sleep(seconds)
    return Window(cpu_s(pid) - cpu0, counts.items(gateway) - items0)


def run_agent(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_AGENT_CLOCK": "synced"}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", str(config), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: Any) -> None:
    process.terminate()
    process.join(10) if hasattr(process, "join") else process.wait(10)


@dataclass
class Row:
    poll_s: float
    bare: Window
    agent: Window


def compare(args: argparse.Namespace, work: Path, broker: int, counts: Counts) -> list[Row]:
    ctx = mp.get_context("spawn")
    simulator, ports = spawn_simulator(scenario(args.devices, args.tags), work)
    rows = []
    try:
        for poll_s in args.polls:
            rate = args.devices * args.tags / poll_s
            row = Row(poll_s, Window(), Window())
            config = agent_config(work, ports, args.tags, poll_s, broker)
            for _ in range(args.rounds):
                after = counts.top(BARE_GATEWAY)
                bare = ctx.Process(
                    target=bare_reader, args=(ports, args.tags, poll_s, broker, after), daemon=True
                )
                bare.start()
                window = measure(bare.pid or 0, counts, BARE_GATEWAY, args.seconds, rate)
                stop(bare)
                row.bare.cpu_s += window.cpu_s
                row.bare.values += window.values
                agent = run_agent(config)
                window = measure(agent.pid, counts, AGENT_GATEWAY, args.seconds, rate)
                stop(agent)
                row.agent.cpu_s += window.cpu_s
                row.agent.values += window.values
                print(f"  poll {poll_s:g} s: bare {row.bare.ms_per_1000:.2f}, agent "
                      f"{row.agent.ms_per_1000:.2f} ms per 1,000 values", flush=True)  # fmt: skip
            rows.append(row)
    finally:
        simulator.terminate()
        simulator.wait(10)
    return rows


def memory(
    args: argparse.Namespace, work: Path, broker: int, counts: Counts
) -> tuple[float, float]:
    """VmRSS (MB) of the bare reader and of the agent at `--rss-devices` x `--tags`, 1 s."""
    ctx = mp.get_context("spawn")
    simulator, ports = spawn_simulator(scenario(args.rss_devices, args.tags), work)
    rate = args.rss_devices * args.tags
    try:
        after = counts.top(BARE_GATEWAY)
        bare = ctx.Process(
            target=bare_reader, args=(ports, args.tags, 1.0, broker, after), daemon=True
        )
        bare.start()
        measure(bare.pid or 0, counts, BARE_GATEWAY, 5.0, rate, patience_s=180)
        bare_mb = rss_mb(bare.pid or 0)
        stop(bare)
        agent = run_agent(agent_config(work, ports, args.tags, 1.0, broker))
        measure(agent.pid, counts, AGENT_GATEWAY, 5.0, rate, patience_s=180)
        agent_mb = rss_mb(agent.pid)
        stop(agent)
    finally:
        simulator.terminate()
        simulator.wait(10)
    return bare_mb, agent_mb


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--polls", type=lambda s: [float(x) for x in s.split(",")],
                        default=[1.0, 0.1, 0.02])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss-devices", type=int, default=100, help="0: skip the RSS run")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ctx = mp.get_context("spawn")
    counts = Counts(ctx, gateways=(AGENT_GATEWAY, BARE_GATEWAY))
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        with platform_stand_in(ctx, work / "broker", counts) as broker:
            # Memory first: after minutes at 20 ms polls the platform stand-in may lag.
            rss = memory(args, work, broker.port, counts) if args.rss_devices else None
            rows = compare(args, work, broker.port, counts)
            print_rows(args, rows)
    if rss is not None:
        print()
        print(f"RSS at {args.rss_devices * args.tags:,} tags, 1 s poll: bare {rss[0]:.0f} MB, "
              f"agent {rss[1]:.0f} MB")  # fmt: skip
    print(json.dumps({"rows": [[r.poll_s, r.bare.ms_per_1000, r.agent.ms_per_1000] for r in rows],
                      "rss": rss}))  # fmt: skip


def print_rows(args: argparse.Namespace, rows: list[Row]) -> None:
    print()
    print(f"{args.devices} devices x {args.tags} float32 tags, every value changing every poll; "
          f"{args.rounds} rounds of {args.seconds:g} s each; CPU-seconds per 1,000 delivered "
          "values")  # fmt: skip
    print()
    print("| poll | bare reader (merged reads, no store) | edge-agent | ratio | values/s (agent) |")
    print("|---|---|---|---|---|")
    for row in rows:
        ratio = row.agent.ms_per_1000 / row.bare.ms_per_1000
        rate = row.agent.values / (args.rounds * args.seconds)
        print(f"| {row.poll_s:g} s | {row.bare.ms_per_1000 / 1000:.4f} | "
              f"{row.agent.ms_per_1000 / 1000:.4f} | {ratio:.2f}x | {rate:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
