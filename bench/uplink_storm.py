"""Hundreds of real uplinks drain their back-logs after a broker restart: how long, how hard.

Run: .venv/bin/python bench/uplink_storm.py [--gateways 500] [--backlog 5000]
                                            [--outage 30] [--rate 20000]

Plant: one process runs `--gateways` gateways, each the real `Uplink` (default
config, one broker) on its own real `Store` in a temporary directory, against
one private Mosquitto: bench/backfill.py's platform stand-in, whose subscriber
(its own process, subscribed first) counts the items and the highest `seq` of
each gateway.

Scenario, run twice: with `uplink.backfill_rate` unset, then at `--rate` payload
bytes per second per gateway.
1. Every uplink connects, its store empty.
2. The broker is stopped (SIGTERM). Once every uplink has seen it go, each store
   takes `--backlog` readings (bench/backfill.py's plant: 200 tags, 1 s apart
   per tag) while the uplinks retry with their jittered backoff.
3. `--outage` seconds after the stop (longer if the filling took longer), the
   broker starts again on the same port.

Measured from the broker's start: when each gateway connected (the busiest
second, the last connect), when the last PUBACK came with every store empty,
and CPU of the broker and of this process (user + system, all threads, from
/proc) every 0.2 s. Then the subscriber must hold every reading of every
gateway, each gateway's `seq` from 1 without a gap.

The gateways' CPU is part of the figures: here every uplink and every store's
thread share one Python process (one interpreter lock), which a real gateway
never does; on a 2-core machine this process may well be the bottleneck,
not the broker, and the table shows which.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from backfill import (
    ENTERPRISE,
    PREFIX,
    Counts,
    TimedStore,
    drained,
    first_second,
    platform_stand_in,
    reading_batches,
)
from pipeline import cpu_s

from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.demo.broker import Mosquitto
from edge_agent.model import Reading
from edge_agent.reload import uplink_settings_of
from edge_agent.store import StoreSettings
from edge_agent.uplink import Identity, Uplink

SAMPLE_S = 0.2
IDLE_S = 5.0
"""How long CPU is measured with every gateway connected and idle, before the stop."""
FILES_PER_GATEWAY = 5
"""Open files of one gateway: its socket, the store's database, WAL and shared-memory
files, and one spare (a connect in progress holds a second socket)."""
FILL_BATCH = 1_000
"""Readings per commit while the back-logs build: about 4 s of a 200-tag plant, as the
committer would write them every 0.25 s, in fewer jobs."""


@dataclass
class Gateway:
    name: str
    store: TimedStore
    uplink: Uplink
    task: asyncio.Task[None]


Part = Literal["broker", "agent", "loop"]
"""Whose CPU: the broker's, this process's (every thread), its event loop's thread."""


@dataclass(frozen=True, slots=True)
class Cpu:
    """Cumulative CPU-seconds of the broker, of this process and of its event loop's thread
    at one moment."""

    at: float
    broker_s: float
    agent_s: float
    loop_s: float

    @classmethod
    def now(cls, broker_pid: int) -> Cpu:
        me = os.getpid()
        return cls(time.perf_counter(), cpu_s(broker_pid), cpu_s(me), cpu_s(me, thread=me))

    def seconds(self, part: Part) -> float:
        return {"broker": self.broker_s, "agent": self.agent_s, "loop": self.loop_s}[part]


def cores(first: Cpu, last: Cpu, part: Part) -> float:
    """CPU used between two samples, in cores."""
    return (last.seconds(part) - first.seconds(part)) / (last.at - first.at)


@dataclass(frozen=True, slots=True)
class Run:
    rate: int | None
    outage_s: float
    fill_s: float
    idle: tuple[Cpu, Cpu]
    """Before the stop, every gateway connected and nothing to send."""
    connect_offsets: list[float]
    """Seconds from the broker's start to each gateway's connect."""
    drain_s: float
    """From the broker's start to the last PUBACK, every store empty."""
    cpu: list[Cpu]
    """From the broker's start to the end of the drain, every `SAMPLE_S`."""
    received: int
    expected: int
    gapped: int
    """Gateways whose received `seq`s are not 1..n without a gap."""
    duplicates: int

    @property
    def peak_connects(self) -> int:
        return max(Counter(int(t) for t in self.connect_offsets).values())

    def peak_cpu(self, part: Part) -> float:
        """Busiest `SAMPLE_S` window of the drain, in cores."""
        return max(cores(a, b, part) for a, b in zip(self.cpu, self.cpu[1:], strict=False))

    def mean_cpu(self, part: Part) -> float:
        return cores(self.cpu[0], self.cpu[-1], part)


# -- the gateways --------------------------------------------------------------


def raise_open_files(gateways: int) -> None:
    """Raise the soft limit of open files for this process and the broker it starts
    (a child inherits it); a default of 1,024 holds about 200 gateways."""
    needed = gateways * FILES_PER_GATEWAY + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"{gateways} gateways need {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def start_gateways(
    names: list[str], work: Path, port: int, rate: int | None
) -> list[Gateway]:
    raw: dict[str, object] = {"mqtt": {"host": "127.0.0.1", "port": port}}
    if rate is not None:
        raw["backfill_rate"] = f"{rate}B"
    settings = uplink_settings_of(UplinkConfig.model_validate(raw))
    gateways = []
    for name in names:
        store = TimedStore(
            StoreSettings(work / f"{name}.db"), (settings.max_items, settings.max_bytes)
        )
        await store.open()
        uplink = Uplink(settings, Identity(PREFIX, ENTERPRISE, name), store, dict, "bench")
        gateways.append(Gateway(name, store, uplink, asyncio.create_task(uplink.run())))
    return gateways


async def stop_gateways(gateways: list[Gateway]) -> None:
    await asyncio.gather(*(g.uplink.stop() for g in gateways))
    await asyncio.gather(*(g.task for g in gateways))
    await asyncio.gather(*(g.store.close() for g in gateways))


async def wait_until(check: Callable[[], bool], within_s: float) -> bool:
    """Poll `check()` every `SAMPLE_S` until it is true (True) or `within_s` passed (False)."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(SAMPLE_S)
    return True


async def must(condition: str, check: Callable[[], bool], within_s: float) -> None:
    if not await wait_until(check, within_s):
        raise TimeoutError(f"not {condition} after {within_s:.0f} s")


async def fill(gateways: list[Gateway], backlog: list[list[Reading]]) -> None:
    """Each store takes the same back-log (the topics differ by gateway)."""

    async def one(store: TimedStore) -> None:
        for batch in backlog:
            for reading in batch:
                store.add_reading(reading)
            await store.flush()

    await asyncio.gather(*(one(g.store) for g in gateways))


# -- one run -------------------------------------------------------------------


async def sample_cpu(broker_pid: int, into: list[Cpu]) -> None:
    while True:
        into.append(Cpu.now(broker_pid))
        await asyncio.sleep(SAMPLE_S)


async def restart_and_drain(
    gateways: list[Gateway], broker: Mosquitto, within_s: float
) -> tuple[list[float], float, list[Cpu]]:
    """Start the broker; (connect offsets, drain seconds, CPU samples) once all drained."""
    connects_before = [g.uplink.stats.connects for g in gateways]
    broker.start()
    started_perf, started_mono = time.perf_counter(), time.monotonic()
    assert broker.pid is not None
    samples: list[Cpu] = []
    sampler = asyncio.create_task(sample_cpu(broker.pid, samples))
    try:
        await must(
            "drained", lambda: all(g.store.acks and drained(g.store) for g in gateways), within_s
        )
    finally:
        sampler.cancel()
    samples.append(Cpu.now(broker.pid))
    again = sum(g.uplink.stats.connects - n for g, n in zip(gateways, connects_before, strict=True))
    if again != len(gateways):
        print(f"note: {again} connects for {len(gateways)} gateways after the restart")
    offsets = [g.uplink.stats.since - started_mono for g in gateways]
    drain_s = max(g.store.last_ack_at for g in gateways) - started_perf
    return offsets, drain_s, samples


async def storm(args: argparse.Namespace, rate: int | None, work: Path) -> Run:
    names = [f"GW-STORM-{n:04d}" for n in range(args.gateways)]
    backlog = list(reading_batches(args.backlog, first_second(args.backlog), FILL_BATCH))
    ctx = mp.get_context("spawn")
    counts = Counts(ctx, gateways=tuple(names))
    with platform_stand_in(ctx, work / "broker", counts) as broker:
        gateways = await start_gateways(names, work, broker.port, rate)
        try:
            await must(
                "all connected", lambda: all(g.uplink.stats.connected for g in gateways), 120
            )
            assert broker.pid is not None
            idle_from = Cpu.now(broker.pid)
            await asyncio.sleep(IDLE_S)
            idle = (idle_from, Cpu.now(broker.pid))
            stopped = time.monotonic()
            broker.stop()
            await must(
                "all disconnected", lambda: not any(g.uplink.stats.connected for g in gateways), 120
            )
            await fill(gateways, backlog)
            fill_s = time.monotonic() - stopped
            await asyncio.sleep(max(args.outage - fill_s, 0.0))
            outage_s = time.monotonic() - stopped
            within_s = 300 + args.gateways * args.backlog / 1_000
            offsets, drain_s, samples = await restart_and_drain(gateways, broker, within_s)
        finally:
            await stop_gateways(gateways)
        expected = args.backlog * len(names)
        # Whatever is missing after this shows in the table.
        await wait_until(lambda: sum(counts.items(n) for n in names) >= expected, 120)
    return Run(
        rate=rate,
        outage_s=outage_s,
        fill_s=fill_s,
        idle=idle,
        connect_offsets=offsets,
        drain_s=drain_s,
        cpu=samples,
        received=sum(counts.items(n) for n in names),
        expected=expected,
        gapped=sum(counts.messages(n) != counts.top(n) for n in names),
        duplicates=sum(counts.duplicates(n) for n in names),
    )


# -- the report ----------------------------------------------------------------


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    print()
    print(
        f"{args.gateways} gateways x {args.backlog:,} readings of back-log, "
        f"broker down {', '.join(f'{r.outage_s:.0f}' for r in runs)} s"
    )
    print()
    print(
        "| backfill_rate | agent CPU, idle | peak connects/s | last connect | full drain "
        "| readings/s | broker CPU peak / mean | agent CPU peak / mean (event loop) "
        "| received | seq gaps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        rate = "unset" if r.rate is None else f"{r.rate / 1000:g} kB/s per gateway"
        print(
            f"| {rate} | {cores(*r.idle, 'agent'):.2f} cores | {r.peak_connects} "
            f"| {max(r.connect_offsets):.1f} s | {r.drain_s:.1f} s "
            f"| {r.expected / r.drain_s:,.0f} "
            f"| {r.peak_cpu('broker'):.2f} / {r.mean_cpu('broker'):.2f} cores "
            f"| {r.peak_cpu('agent'):.2f} / {r.mean_cpu('agent'):.2f} "
            f"({r.mean_cpu('loop'):.2f}) cores "
            f"| {r.received:,} of {r.expected:,} | {r.gapped} |"
        )
    print()
    for r in runs:
        spread = sorted(r.connect_offsets)
        quartiles = [spread[math.floor(q * (len(spread) - 1))] for q in (0.0, 0.5, 1.0)]
        print(
            f"rate {r.rate or 'unset'}: broker CPU idle {cores(*r.idle, 'broker'):.2f} cores; "
            f"back-logs built in {r.fill_s:.1f} s; connects at "
            f"{' / '.join(f'{q:.1f}' for q in quartiles)} s (first / median / last); "
            f"{r.duplicates} duplicate messages"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=500, help="uplinks in this process")
    parser.add_argument("--backlog", type=int, default=2_000, help="readings per gateway")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker is down")
    parser.add_argument(
        "--rate", type=int, default=20_000, help="backfill_rate of the second run, bytes/s"
    )
    args = parser.parse_args()
    # Every failed connect during the outage is a warning: thousands of lines.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    raise_open_files(args.gateways)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        for n, rate in enumerate((None, args.rate)):
            print(f"run {n + 1}: backfill_rate {rate or 'unset'} ...", flush=True)
            work = Path(tmp) / f"run-{n + 1}"
            work.mkdir()
            runs.append(asyncio.run(storm(args, rate, work)))
    report(args, runs)
    if any(r.received != r.expected or r.gapped for r in runs):
        sys.exit("not every reading arrived, or a seq is missing")


if __name__ == "__main__":
    main()
