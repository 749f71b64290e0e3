"""Live polls during a back-fill drain: deadlines kept, and the drain rate, in one run.

Run: .venv/bin/python bench/backfill_polls.py [--backlog 1000000] [--devices 20] [--tags 100]
                                              [--poll 0.1] [--quick]

The issue: live polls keep >= 99 % of their deadlines while a 1M-reading
back-fill drains at 100 ms polls, `backfill_rate` unset, and the drain still
delivers >= 150,000 readings/s.

Plant (bench/pipeline.py's): `--devices` simulated Modbus TCP PLCs (their own
process) of `--tags` float32 tags each, every value a sine of its own phase,
so report by exception sends every value of every poll. A private Mosquitto.

1. Back-log: before the agent starts, its store (the path in its config) is
   filled with `--backlog` readings of the same tags sampled an hour ago,
   committed 100,000 per flush: they wait as back-fill.
2. `edge-agent run` (its own process, pipeline.py's config: site defaults,
   `backfill_rate` unset, /metrics on) connects and drains the back-log while
   it polls. The platform stand-in (a subscriber in its own process, QoS 1,
   defined here) tells back-fill items (`hist: true`) from live ones, and
   keeps the sample times of one tag per device (`Dnnn.T000`) and when each
   first arrived.
3. Two windows of the same agent run: "draining", from the connect (the first
   message the platform received; or the first /metrics answer, if later) to
   the last back-fill item received; then "no back-log", the same length
   again (at least MIN_WINDOW_S), as the reference. Then, once the agent has
   stopped, a third as long of the bare reader (bench/pipeline.py's) on the
   same plant and broker: the deadlines a reader with no store keeps (its
   polls are the sample times that reached the platform). Per window:
   - deadlines: window length / `--poll`, per device;
   - polls: the `edge_agent_device_polls` counters, scraped every SCRAPE_S
     and interpolated at the window's ends; kept = polls / deadlines. The
     pollers of one agent share a phase, so a window's ends may cost one
     deadline per device either way: about 1 % over 10 s at 100 ms;
   - sampled: distinct sample times of `Dnnn.T000` within the window that
     reached the platform (the platform's own count; same caveat);
   - missed (ledger): `edge_agent_store_lost_items` / tags per device: the
     deadlines the agent itself declares skipped (a poll ran past them). The
     verdict on the target uses this exact count (kept = 1 - missed /
     deadlines), not the window-edge-sensitive polls / deadlines;
   - live readings/s received (arrivals: the uplink lingers, so a short
     window is noisy), and sample-to-arrival latency of `T000`;
   - the agent's CPU (all threads, /proc/PID/stat) as a share of one core.
4. Drain rate: back-fill items received / time from the first message the
   platform received to the last back-fill item. Back-fill items include the
   live readings sampled before the connect (they waited as back-fill too);
   all `--backlog` must arrive.

`--quick`: 100,000 readings of back-log and 5 devices, a smoke run (the
draining window is then under a second: its poll figures are noise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pipeline import (
    AGENT_GATEWAY,
    BARE_GATEWAY,
    PREFIX,
    WARMUP_S,
    agent_config,
    bare_reader,
    cpu_s,
    run_agent,
    scenario,
)
from simulated import spawn_simulator

from edge_agent.config.loader import load_config
from edge_agent.demo.broker import Mosquitto
from edge_agent.model import Quality, Reading
from edge_agent.reload import batch_limits, store_settings
from edge_agent.store import Store
from edge_agent.wire import NumberFormat

TARGET_KEPT = 0.99
TARGET_DRAIN = 150_000
PREFILL_CHUNK = 100_000  # readings per flush; the write buffer holds at most 200,000
HOUR_MS = 3_600_000
SCRAPE_S = 0.5
MIN_WINDOW_S = 5.0
QUIET_S = 1.0  # no back-fill item for this long after all arrived: the drain is over
SETTLE_S = 1.0  # after the reference window, for its last live readings to land

_SEQ = re.compile(rb'"seq":(\d+)')
_SAMPLE = re.compile(rb'"tag":"D(\d{3})\.T000","hz":"HZ01","ts":(\d+)')
_POLLS = re.compile(r'^edge_agent_device_polls_total\{device="plc-(\d+)"\} (\S+)$', re.M)
_LOST = re.compile(r"^edge_agent_store_lost_items_total (\S+)$", re.M)


# -- 1: the back-log -----------------------------------------------------------


def prefill(config_path: Path, count: int, devices: int, tags: int, poll_s: float) -> float:
    """`count` readings of the plant's tags, sampled an hour ago, waiting as back-fill;
    returns the seconds it took."""
    start = time.perf_counter()
    asyncio.run(_prefill(config_path, count, devices, tags, poll_s))
    return time.perf_counter() - start


async def _prefill(config_path: Path, count: int, devices: int, tags: int, poll_s: float) -> None:
    config = load_config(config_path)
    store = Store(store_settings(config), batch_limits(config))
    await store.open()
    names = [f"D{d:03}.T{n:03}" for d in range(devices) for n in range(tags)]
    number = NumberFormat("float32").number
    values = [number(50 + 10 * math.sin(k / 7)) for k in range(997)]
    first_ms, step_ms = time.time_ns() // 1_000_000 - HOUR_MS, round(poll_s * 1000)
    for i in range(count):
        ts = first_ms + (i // len(names)) * step_ms
        store.add_reading(Reading(names[i % len(names)], "HZ01", ts, values[i % 997], Quality.GOOD))
        if i % PREFILL_CHUNK == PREFILL_CHUNK - 1:
            await store.flush()
    await store.close()


# -- the platform stand-in, in its own process ---------------------------------


@dataclass
class Arrivals:
    """What the platform received from the agent (first copy of each `seq` only)."""

    messages: list[tuple[float, bool, int]] = field(default_factory=list)
    """(wall time received, hist, items) per `rt` message."""
    samples: dict[int, dict[int, float]] = field(default_factory=dict)
    """Device number -> sample time (ms) of its T000 -> wall time first received."""
    duplicates: int = 0
    bare: list[tuple[float, int]] = field(default_factory=list)
    """(wall time received, items) per message of the bare reader."""
    bare_samples: dict[int, dict[int, float]] = field(default_factory=dict)


class Progress:
    """Shared with the subscriber: back-fill items, first message, last back-fill item."""

    def __init__(self, ctx: Any) -> None:
        self._array: Any = ctx.Array("d", 3)

    def note(self, now: float, hist_items: int) -> None:
        with self._array.get_lock():
            self._array[0] += hist_items
            self._array[1] = self._array[1] or now
            if hist_items:
                self._array[2] = now

    @property
    def hist_items(self) -> int:
        return int(self._array[0])

    @property
    def first_message(self) -> float:
        return float(self._array[1])

    @property
    def last_hist(self) -> float:
        return float(self._array[2])


def subscriber(
    port: int, progress: Progress, ready: MpEvent, stop: MpEvent, out: Queue[Arrivals]
) -> None:
    """Subscribes before the agent starts; on `stop`, puts what it saw on `out`."""
    arrivals = Arrivals()
    seen: set[int] = set()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-polls", protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_connect(client: paho.Client, *_: object) -> None:
        client.subscribe(f"{PREFIX}/#", qos=1)

    def on_subscribe(*_: object) -> None:
        ready.set()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        *_, gateway, kind = msg.topic.split("/")
        if gateway == BARE_GATEWAY:
            arrivals.bare.append((now, msg.payload.count(b'"tag"')))
            for device, ts in _SAMPLE.findall(msg.payload):
                arrivals.bare_samples.setdefault(int(device), {}).setdefault(int(ts), now)
            return
        if gateway != AGENT_GATEWAY:
            return
        if kind != "rt":
            progress.note(now, 0)  # `state` on connect: the first message tells the connect
            return
        match = _SEQ.search(msg.payload, 0, 200)
        if match is None:
            return
        seq = int(match.group(1))
        if seq in seen:
            arrivals.duplicates += 1
            return
        seen.add(seq)
        hist = b'"hist":true' in msg.payload[:200]
        items = msg.payload.count(b'"tag"')
        arrivals.messages.append((now, hist, items))
        for device, ts in _SAMPLE.findall(msg.payload):
            arrivals.samples.setdefault(int(device), {}).setdefault(int(ts), now)
        progress.note(now, items if hist else 0)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=properties)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    out.put(arrivals)


# -- /metrics, scraped from a thread of the bench -------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float
    """Wall time, the middle of the request."""
    polls: dict[int, float]
    lost_items: float
    cpu_s: float


class Scraper(threading.Thread):
    def __init__(self, url: str, pid: int) -> None:
        super().__init__(daemon=True)
        self._url, self._pid = url, pid
        self._done = threading.Event()
        self.scrapes: list[Scrape] = []

    def run(self) -> None:
        while not self._done.wait(SCRAPE_S if self.scrapes else 0.05):
            sent = time.time()
            try:
                with urllib.request.urlopen(self._url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue  # not listening yet
            polls = {int(d): float(n) for d, n in _POLLS.findall(text)}
            lost = _LOST.search(text)
            at = (sent + time.time()) / 2
            if polls:
                self.scrapes.append(
                    Scrape(at, polls, float(lost[1]) if lost else 0.0, cpu_s(self._pid))
                )

    def stop(self) -> None:
        self._done.set()
        self.join(10)

    def at(self, when: float, value: str, device: int = 0) -> float:
        """`value` ("polls" of `device`, "lost_items", "cpu_s") at `when`, interpolated
        between the scrapes either side."""

        def of(s: Scrape) -> float:
            return s.polls.get(device, 0.0) if value == "polls" else float(getattr(s, value))

        before = max((s for s in self.scrapes if s.at <= when), key=lambda s: s.at)
        after = min((s for s in self.scrapes if s.at >= when), key=lambda s: s.at)
        if after.at == before.at:
            return of(before)
        share = (when - before.at) / (after.at - before.at)
        return of(before) + share * (of(after) - of(before))


# -- 3: the windows ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    start: float
    end: float
    deadlines: float
    """Per device."""
    polls: list[float]
    """Per device, from /metrics."""
    sampled: list[int]
    """Per device, distinct T000 sample times received."""
    missed_declared: float
    """Per device, on average: the ledger's lost items / tags."""
    live_rate: float
    latency_ms: list[float]
    cpu: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def kept(self) -> float:
        return sum(self.polls) / (len(self.polls) * self.deadlines)

    @property
    def ledger_kept(self) -> float:
        """Deadlines kept by the agent's own count: the ledger declares every one missed.
        Exact, where polls / deadlines depends on where the window's ends fall."""
        return 1 - self.missed_declared / self.deadlines

    @property
    def worst(self) -> float:
        return min(self.polls) / self.deadlines

    @property
    def sampled_kept(self) -> float:
        return sum(self.sampled) / (len(self.sampled) * self.deadlines)

    def latency(self, p: int) -> float:
        if len(self.latency_ms) < 2:
            return math.nan
        return statistics.quantiles(self.latency_ms, n=100)[p - 1]


def window(
    name: str, span: tuple[float, float], scraper: Scraper, arrivals: Arrivals, args: Any
) -> Window:
    start, end = span
    seconds = end - start
    polls = [
        scraper.at(end, "polls", d) - scraper.at(start, "polls", d) for d in range(args.devices)
    ]
    lost = scraper.at(end, "lost_items") - scraper.at(start, "lost_items")
    start_ms, end_ms = start * 1000, end * 1000
    sampled, latency = [], []
    for d in range(args.devices):
        inside = {
            ts: got for ts, got in arrivals.samples.get(d, {}).items() if start_ms <= ts < end_ms
        }
        sampled.append(len(inside))
        latency += [got * 1000 - ts for ts, got in inside.items()]
    live = sum(n for at, hist, n in arrivals.messages if not hist and start <= at < end)
    cpu = scraper.at(end, "cpu_s") - scraper.at(start, "cpu_s")
    return Window(
        name,
        start,
        end,
        seconds / args.poll,
        polls,
        sampled,
        lost / (args.tags * args.devices),
        live / seconds,
        latency,
        cpu / seconds,
    )


@dataclass(frozen=True, slots=True)
class BareRun:
    start: float
    end: float
    cpu_s: float


def run_bare(ctx: Any, ports: list[int], args: Any, broker: int, seconds: float) -> BareRun:
    """The bare reader (pipeline.py's) on the same plant and broker, after the agent, for
    as long as the reference window: the same deadlines with no store and no back-log."""
    process = ctx.Process(
        target=bare_reader, args=(ports, args.tags, args.poll, broker), daemon=True
    )
    process.start()
    try:
        time.sleep(WARMUP_S)
        start, cpu0 = time.time(), cpu_s(process.pid or 0)
        time.sleep(seconds)
        end, cpu1 = time.time(), cpu_s(process.pid or 0)
        time.sleep(SETTLE_S)
    finally:
        process.terminate()
        process.join(10)
    return BareRun(start, end, cpu1 - cpu0)


def bare_window(bare: BareRun, arrivals: Arrivals, args: Any) -> Window:
    """The bare reader's window: its polls are the sample times that reached the platform
    (it declares nothing and has no /metrics)."""
    seconds = bare.end - bare.start
    start_ms, end_ms = bare.start * 1000, bare.end * 1000
    sampled, latency = [], []
    for d in range(args.devices):
        inside = {
            ts: got
            for ts, got in arrivals.bare_samples.get(d, {}).items()
            if start_ms <= ts < end_ms
        }
        sampled.append(len(inside))
        latency += [got * 1000 - ts for ts, got in inside.items()]
    live = sum(n for at, n in arrivals.bare if bare.start <= at < bare.end)
    return Window(
        "bare reader, same plant, after",
        bare.start,
        bare.end,
        seconds / args.poll,
        [float(n) for n in sampled],
        sampled,
        0.0,
        live / seconds,
        latency,
        bare.cpu_s / seconds,
    )


@dataclass(frozen=True, slots=True)
class Result:
    prefill_s: float
    connect: float
    drained: float
    hist_items: int
    duplicates: int
    windows: list[Window]

    @property
    def drain_rate(self) -> float:
        return self.hist_items / (self.drained - self.connect)


def wait_drained(
    progress: Progress, backlog: int, agent: subprocess.Popen[bytes], timeout: float
) -> None:
    """Until every back-fill item arrived and none came for QUIET_S."""
    deadline = time.monotonic() + timeout
    while progress.hist_items < backlog or time.time() - progress.last_hist < QUIET_S:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.returncode}) before the drain ended")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{progress.hist_items:,} of {backlog:,} back-fill items arrived")
        time.sleep(0.05)


def measure(args: Any, work: Path) -> Result:
    ctx = mp.get_context("spawn")
    simulator, ports = spawn_simulator(scenario(args.devices, args.tags), work)
    broker = Mosquitto(work / "broker")
    progress, ready, done = Progress(ctx), ctx.Event(), ctx.Event()
    out: Queue[Arrivals] = ctx.Queue()
    platform = ctx.Process(target=subscriber, args=(broker.port, progress, ready, done, out))
    broker.start()
    try:
        config = agent_config(work, ports, args.tags, args.poll, broker.port)
        listen = yaml.safe_load(config.read_text())["metrics"]["listen"]
        prefill_s = prefill(config, args.backlog, args.devices, args.tags, args.poll)
        print(f"back-log of {args.backlog:,} readings stored in {prefill_s:.1f} s", flush=True)
        platform.start()
        if not ready.wait(20):
            raise TimeoutError("the subscriber could not subscribe")
        agent = run_agent(config)
        scraper = Scraper(f"http://{listen}/metrics", agent.pid)
        scraper.start()
        try:
            wait_drained(progress, args.backlog, agent, 120 + args.backlog / 2000)
            while not scraper.scrapes:
                time.sleep(0.05)
            connect, drained = progress.first_message, progress.last_hist
            start = max(connect, scraper.scrapes[0].at)  # polls are known from the first scrape
            print(f"drained in {drained - connect:.1f} s; the reference window ...", flush=True)
            reference_end = drained + max(drained - start, MIN_WINDOW_S)
            time.sleep(max(reference_end - time.time(), 0) + SETTLE_S)
        finally:
            scraper.stop()
            agent.terminate()
            agent.wait(10)
        bare = run_bare(ctx, ports, args, broker.port, reference_end - drained)
        done.set()
        arrivals = out.get(timeout=30)
        platform.join(10)
    finally:
        done.set()
        if platform.is_alive():
            platform.terminate()
        broker.stop()
        simulator.terminate()
        simulator.wait(10)
    windows = [
        window("draining", (start, drained), scraper, arrivals, args),
        window("no back-log", (drained, reference_end), scraper, arrivals, args),
        bare_window(bare, arrivals, args),
    ]
    return Result(
        prefill_s,
        connect,
        drained,
        sum(n for _, hist, n in arrivals.messages if hist),
        arrivals.duplicates,
        windows,
    )


# -- the report ----------------------------------------------------------------


def report(args: Any, r: Result) -> None:
    drain_ok = "met" if r.drain_rate >= TARGET_DRAIN else "MISSED"
    kept = r.windows[0].ledger_kept
    kept_ok = "met" if kept >= TARGET_KEPT else "MISSED"
    print()
    print(
        f"{args.devices} devices x {args.tags} float32 tags, poll {args.poll:g} s, every value "
        f"changing every poll; back-log {args.backlog:,} readings; `backfill_rate` unset"
    )
    print()
    print(
        "| window | seconds | deadlines/device | polls kept (/metrics) | worst device "
        "| sampled kept (platform) | missed/device (ledger) | live readings/s "
        "| live latency p50 / p99 | agent CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w in r.windows:
        print(
            f"| {w.name} | {w.seconds:.1f} | {w.deadlines:.1f} | {w.kept:.1%} | {w.worst:.1%} "
            f"| {w.sampled_kept:.1%} | {w.missed_declared:.1f} | {w.live_rate:,.0f} "
            f"| {w.latency(50):.0f} / {w.latency(99):.0f} ms | {w.cpu:.0%} |"
        )
    print()
    print(
        "The pollers share a phase: a window's ends may cost one deadline per device either "
        f"way (+-{1 / r.windows[0].deadlines:.1%} draining, "
        f"+-{1 / r.windows[1].deadlines:.1%} reference)."
    )
    print(
        f"back-fill drain: {r.hist_items:,} items in {r.drained - r.connect:.2f} s from the "
        f"connect to the last one: {r.drain_rate:,.0f} readings/s "
        f"(target >= {TARGET_DRAIN:,}: {drain_ok}); {r.duplicates} duplicate messages"
    )
    print(
        f"polls kept while draining, by the ledger's count of missed deadlines: {kept:.1%} "
        f"(target >= {TARGET_KEPT:.0%}: {kept_ok}); "
        f"back-log stored in {r.prefill_s:.1f} s"
    )
    print(json.dumps(figures(args, r)))


def figures(args: Any, r: Result) -> dict[str, Any]:
    """The run as one JSON object."""
    windows = {
        w.name: {
            "seconds": round(w.seconds, 3),
            "deadlines": round(w.deadlines, 1),
            "kept": round(w.kept, 4),
            "worst": round(w.worst, 4),
            "sampled_kept": round(w.sampled_kept, 4),
            "missed_declared": round(w.missed_declared, 2),
            "live_rate": round(w.live_rate),
            "latency_p99_ms": round(w.latency(99), 1),
            "cpu": round(w.cpu, 3),
        }
        for w in r.windows
    }
    return {
        "backlog": args.backlog,
        "devices": args.devices,
        "tags": args.tags,
        "poll": args.poll,
        "drain_rate": round(r.drain_rate),
        "drain_s": round(r.drained - r.connect, 3),
        "hist_items": r.hist_items,
        "windows": windows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=1_000_000, help="readings waiting")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--poll", type=float, default=0.1, help="seconds")
    parser.add_argument("--quick", action="store_true", help="100,000 readings, 5 devices")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.devices = 100_000, 5
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with tempfile.TemporaryDirectory(prefix="bench-backfill-polls-") as tmp:
        result = measure(args, Path(tmp))
    report(args, result)


if __name__ == "__main__":
    main()
