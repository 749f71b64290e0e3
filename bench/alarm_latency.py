"""Sample-to-PUBACK latency of alarms, with and without a back-log, on loopback and a slow link.

Run: .venv/bin/python bench/alarm_latency.py [--quick]

Plant (the project's Modbus simulator, in process): 10 gas detectors whose
values are sines of periods 1.0-1.9 s crossing their H limit, polled every
100 ms, so alarms are raised and cleared about 13 times a second; plus 20
noisy float tags polled every second. Live data (report deadband 10 on the
detectors) takes about a third of the slow link, so a back-log can drain.
The real `Agent` runs in the same process against a private Mosquitto,
through `edge_agent.demo.proxy.Proxy` (pass-through for loopback; 32 KiB/s
and 200 ms each way for the slow link).

Latency: for every live alarm message, the time from its (oldest) sample to
its PUBACK, as the uplink records it (`UplinkStats.alarm_deliveries`).

Cases, each on loopback and on the slow link:
- no back-log: a connected agent, for DURATION seconds;
- back-log: the store pre-filled with readings sampled earlier (N readings,
  waiting as back-fill), then the agent connects; every alarm sampled while
  the back-log drained, whenever its PUBACK came. Run with alarm priority (the default) and, as the
  baseline in the same run, with `uplink.alarm_priority: false`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge_agent.config.schema import AgentConfig
from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.proxy import Proxy
from edge_agent.drivers.simulator.modbus_server import start_simulator
from edge_agent.drivers.simulator.scenario import Scenario
from edge_agent.model import Quality, Reading
from edge_agent.reload import batch_limits, store_settings
from edge_agent.runtime import Agent
from edge_agent.store import Store

LATE_ACKS_S = 10.0
SLOW_RATE = 32 * 1024
SLOW_DELAY_S = 0.2
GAS = 10
NOISE = 20


@dataclass(frozen=True, slots=True)
class Case:
    link: str  # "loopback" or "slow"
    backlog: int  # readings waiting before the agent connects
    priority: bool = True

    @property
    def name(self) -> str:
        waiting = f"back-log {self.backlog:,}" if self.backlog else "no back-log"
        return f"{self.link}, {waiting}" + ("" if self.priority else ", priority off")


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    latencies_ms: list[int]
    seconds: float

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)]


def scenario() -> Scenario:
    gas = [
        {
            "address": f"hr:{i}",
            "type": "uint16",
            "value": {"sine": {"mean": 30, "amplitude": 20, "period": f"{1.0 + i / 10:.1f}s"}},
        }
        for i in range(GAS)
    ]
    noise = [
        {
            "address": f"hr:{100 + 2 * i}",
            "type": "float32",
            "value": {"noise": {"mean": 50, "sd": 5}},
        }
        for i in range(NOISE)
    ]
    return Scenario.model_validate(
        {"devices": [{"name": "plc", "port": 0, "unit": 1, "points": gas + noise}]}
    )


def agent_config(tmp: Path, plc_port: int, broker_port: int, priority: bool) -> AgentConfig:
    gas = [
        {
            "tag": f"HZ01.GT{i:03}",
            "hazard": "HZ01",
            "address": f"hr:{i}",
            "limits": {"H": 40},
            "report": {"deadband": 10},
        }
        for i in range(GAS)
    ]
    noise = [
        {"tag": f"HZ01.TT{i:03}", "hazard": "HZ01", "address": f"hr:{100 + 2 * i}"}
        | {"type": "float32", "poll": "1s"}
        for i in range(NOISE)
    ]
    return AgentConfig.model_validate(
        {
            "gateway": {"code": "GW-BENCH", "enterprise": "91370200MA3C00000K"},
            "uplink": {
                "mqtt": {"host": "127.0.0.1", "port": broker_port, "transport": "tcp"},
                "alarm_priority": priority,
            },
            "store": {"path": str(tmp / "store.db")},
            "stats": {"enabled": False},
            "metrics": {"enabled": False},
            "devices": [
                {
                    "name": "plc",
                    "driver": "modbus",
                    "host": "127.0.0.1",
                    "port": plc_port,
                    "poll": "100ms",
                    "tags": gas + noise,
                }
            ],
        }
    )


async def prefill(config: AgentConfig, readings: int) -> None:
    """Readings sampled an hour ago, waiting in the store as back-fill."""
    store = Store(store_settings(config), batch_limits(config))
    await store.open()
    start = time.time_ns() // 1_000_000 - 3_600_000
    for n in range(readings):
        store.add_reading(
            Reading(f"HZ01.OLD{n % 200:03}", "HZ01", start + n, 50.0 + n % 7, Quality.GOOD)
        )
        if n % 10_000 == 9_999:
            await store.flush()
    await store.close()


async def run_case(case: Case, broker: Mosquitto, duration_s: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-alarm-") as tmp, Proxy(broker.port) as link:
        if case.link == "slow":
            link.throttle(SLOW_RATE, SLOW_DELAY_S)
        simulator = await start_simulator(scenario())
        try:
            config = agent_config(Path(tmp), simulator.ports["plc"], link.port, case.priority)
            await prefill(config, case.backlog)
            agent = Agent(config)
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            started = time.monotonic()
            if case.backlog:
                await _until_drained(agent, timeout_s=600)
                until_ms = time.time_ns() // 1_000_000
                await asyncio.sleep(LATE_ACKS_S)  # alarms sampled before the end still land
            else:
                await asyncio.sleep(duration_s)
                until_ms = time.time_ns() // 1_000_000
            seconds = time.monotonic() - started
            deliveries = agent.uplink.stats.alarm_deliveries
            latencies = [latency for sampled, latency in deliveries if sampled <= until_ms]
            stop.set()
            await running
        finally:
            await simulator.close()
    return Result(case, latencies, seconds)


async def _until_drained(agent: Agent, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    await asyncio.sleep(1.0)
    while _waiting(agent) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the back-log did not drain")
        await asyncio.sleep(0.2)


def _waiting(agent: Agent) -> int:
    """Back-fill still waiting in the agent's store or in flight (the bench peeks into the
    store: it owns the process)."""
    uplink = agent.uplink
    return agent._store.backlog(uplink.in_flight).messages + uplink.backfill_in_flight


def report(results: list[Result]) -> None:
    print()
    print("| case | alarm messages | p50 | p99 | max | over 2 s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        over = sum(1 for x in r.latencies_ms if x > 2000)
        print(
            f"| {r.case.name} | {len(r.latencies_ms)} | {r.percentile(50):.0f} ms "
            f"| {r.percentile(99):.0f} ms | {max(r.latencies_ms)} ms | {over} |"
        )
    print()
    by_name = {r.case.name: r for r in results}
    for r in results:
        if not r.case.priority:
            with_priority = by_name[Case(r.case.link, r.case.backlog).name]
            print(
                f"{r.case.link}, back-log: p99 {r.percentile(99):.0f} ms without priority, "
                f"{with_priority.percentile(99):.0f} ms with: "
                f"{r.percentile(99) / max(with_priority.percentile(99), 1):.1f}x"
            )


async def main(quick: bool) -> None:
    duration = 10.0 if quick else 30.0
    loopback_backlog = 100_000 if quick else 500_000
    slow_backlog = 2_000 if quick else 5_000
    cases = [
        Case("loopback", 0),
        Case("loopback", loopback_backlog),
        Case("loopback", loopback_backlog, priority=False),
        Case("slow", 0),
        Case("slow", slow_backlog),
        Case("slow", slow_backlog, priority=False),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as workdir:
        broker = Mosquitto(Path(workdir))
        broker.start()
        try:
            for case in cases:
                print(f"running: {case.name} ...", flush=True)
                results.append(await run_case(case, broker, duration))
        finally:
            broker.stop()
    report(results)


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller back-logs")
    arguments = parser.parse_args()
    _quiet()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments.quick))
