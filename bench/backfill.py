"""Store write rate, disk bytes per stored reading, and back-fill drain rate, in one run.

Run: .venv/bin/python bench/backfill.py [--readings N] [--quick]

Plant: N readings (default 1,000,000; `--quick` 100,000) of 200 tags, float
values with 2 decimals, 1 s apart per tag, stored while the uplink is down.

1. Store write rate: the N readings committed 100 per commit, as the agent's
   committer does, into a fresh store (only the Store calls are timed);
   baseline in the same run: one commit per reading (first 20,000).
2. Disk bytes per stored reading: that store's file (database + WAL, after the
   checkpoint of a clean close) divided by N.
3. Back-fill drain rate: the store reopened, the real `Uplink` (default
   config) run against a private Mosquitto until nothing waits; a subscriber
   in another process (paho, QoS 1, persistent session) counts the items
   received, and all N must arrive. Readings/s from the start of the connect
   to the last PUBACK. Baseline in the same run: the same readings, one per
   message (QoS 1, a plain paho `loop_start` client with max_inflight 20), for
   the first 20,000, extrapolated. The baseline does no store work at all, so
   the ratio flatters the baseline, if anything.

Absolute rates vary with the machine; the ratios are what the project tracks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing as mp
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.demo.broker import Mosquitto
from edge_agent.model import Quality, Reading
from edge_agent.reload import uplink_settings_of
from edge_agent.store import Store, StoredMessage, StoreSettings
from edge_agent.uplink import Identity, Uplink
from edge_agent.uplink.envelope import envelope

TAGS = 200
PER_COMMIT = 100
BASELINE_SAMPLE = 20_000
PREFIX = "safety/v1"
ENTERPRISE = "91370200MA3C00000K"
GATEWAY = "GW-BENCH-01"
BASELINE_GATEWAY = "GW-BENCH-BASE"
TARGET_RATE = 50_000
TARGET_BYTES = 40

_SEQ = re.compile(rb'"seq":(\d+)')


# -- the readings --------------------------------------------------------------


def reading_batches(count: int, first_s: int, size: int = PER_COMMIT) -> Iterator[list[Reading]]:
    """`count` readings in batches of `size`: 200 tags, each sampled once a second.

    Values wander around a per-tag level and carry 2 decimals, as scaled
    process values do; the same seed gives the same readings every run.
    """
    rng = random.Random(20261129)
    levels = [rng.uniform(0.0, 500.0) for _ in range(TAGS)]
    names = [f"HZ01.T{i:03d}" for i in range(TAGS)]
    batch: list[Reading] = []
    for i in range(count):
        tag = i % TAGS
        levels[tag] += rng.uniform(-0.5, 0.5)
        ts_ms = (first_s + i // TAGS) * 1000
        batch.append(Reading(names[tag], "HZ01", ts_ms, round(levels[tag], 2), Quality.GOOD))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def first_second(count: int) -> int:
    """Start the plant so its last reading is a minute old: well inside the retention."""
    return int(time.time()) - math.ceil(count / TAGS) - 60


# -- 1 and 2: writing, and the bytes on disk -----------------------------------


@dataclass(frozen=True, slots=True)
class WriteResult:
    rate: float
    """Readings per second, store calls only."""
    commit_p50_s: float
    commit_p99_s: float


def write(path: Path, count: int, per_commit: int, limits: tuple[int, int]) -> WriteResult:
    """Fill a fresh store committing every `per_commit` readings; close it (a checkpoint)."""
    return asyncio.run(_write(path, count, per_commit, limits))


async def _write(path: Path, count: int, per_commit: int, limits: tuple[int, int]) -> WriteResult:
    store = Store(StoreSettings(path), limits)
    await store.open()
    busy = 0.0
    commits: list[float] = []
    for batch in reading_batches(count, first_second(count), per_commit):
        start = time.perf_counter()
        for reading in batch:
            store.add_reading(reading)
        before_flush = time.perf_counter()
        await store.flush()
        end = time.perf_counter()
        busy += end - start
        commits.append(end - before_flush)
    await store.close()
    p99 = statistics.quantiles(commits, n=100)[98] if len(commits) >= 2 else commits[0]
    return WriteResult(count / busy, statistics.median(commits), p99)


def disk_bytes(path: Path) -> int:
    """The database file (free pages included) plus its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# -- the subscriber, in its own process ----------------------------------------


class Counts:
    """Per gateway: items received (first copy of each seq only), messages, duplicate copies,
    and the highest `seq` received: with `seq` counted from 1, `messages == top` means no gap."""

    FIELDS = 4

    def __init__(self, ctx: Any, gateways: tuple[str, ...] = ()) -> None:
        self._gateways = gateways or (GATEWAY, BASELINE_GATEWAY)
        self._array: Any = ctx.Array("q", len(self._gateways) * self.FIELDS)

    def _base(self, gateway: str) -> int:
        return self._gateways.index(gateway) * self.FIELDS

    def add(self, gateway: str, seq: int, items: int, duplicate: bool) -> None:
        base = self._base(gateway)
        with self._array.get_lock():
            if duplicate:
                self._array[base + 2] += 1
            else:
                self._array[base] += items
                self._array[base + 1] += 1
                self._array[base + 3] = max(self._array[base + 3], seq)

    def items(self, gateway: str) -> int:
        return int(self._array[self._base(gateway)])

    def messages(self, gateway: str) -> int:
        return int(self._array[self._base(gateway) + 1])

    def duplicates(self, gateway: str) -> int:
        return int(self._array[self._base(gateway) + 2])

    def top(self, gateway: str) -> int:
        return int(self._array[self._base(gateway) + 3])


def subscriber(port: int, counts: Counts, ready: MpEvent, stop: MpEvent) -> None:
    """The platform stand-in: subscribes before anything is published, counts `rt` items."""
    seen: dict[str, set[int]] = {}
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-platform", protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_connect(client: paho.Client, *_: object) -> None:
        client.subscribe(f"{PREFIX}/#", qos=1)

    def on_subscribe(*_: object) -> None:
        ready.set()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        *_, gateway, kind = msg.topic.split("/")
        if kind != "rt":
            return
        match = _SEQ.search(msg.payload, 0, 200)
        if match is None:
            return
        seq = int(match.group(1))
        known = seen.setdefault(gateway, set())
        counts.add(gateway, seq, msg.payload.count(b'"tag"'), duplicate=seq in known)
        known.add(seq)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    # Back within a second of a broker restart (bench/uplink_storm.py), as a platform
    # would be; paho's default backoff grows to two minutes.
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=properties)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


@contextlib.contextmanager
def platform_stand_in(ctx: Any, directory: Path, counts: Counts) -> Iterator[Mosquitto]:
    """A private Mosquitto in `directory` and the subscriber counting into `counts`,
    subscribed before this yields; both stopped afterwards, whatever happened."""
    broker = Mosquitto(directory)
    ready, stop = ctx.Event(), ctx.Event()
    platform = ctx.Process(target=subscriber, args=(broker.port, counts, ready, stop))
    broker.start()
    try:
        platform.start()
        if not ready.wait(20):
            raise TimeoutError("the subscriber could not subscribe")
        yield broker
    finally:
        stop.set()
        if platform.pid is not None:
            platform.join(10)
            if platform.is_alive():
                platform.terminate()
        broker.stop()


def wait_items(counts: Counts, gateway: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while counts.items(gateway) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # let a late duplicate show
    return counts.items(gateway)


# -- 3: back-fill through the real uplink --------------------------------------


class TimedStore(Store):
    """The real store, noting when the uplink connected and each PUBACK."""

    connected_at = 0.0
    last_ack_at = 0.0
    acks = 0

    async def mark_live(self) -> None:
        self.connected_at = self.connected_at or time.perf_counter()
        await super().mark_live()

    def ack(self, seq: int) -> None:
        self.last_ack_at = time.perf_counter()
        self.acks += 1
        super().ack(seq)


@dataclass(frozen=True, slots=True)
class DrainResult:
    rate: float
    seconds: float
    connect_s: float
    messages: int


def drained(store: Store) -> bool:
    figures = store.figures
    return figures.readings == 0 and figures.messages == 0


async def drain(path: Path, count: int, port: int, counts: Counts) -> DrainResult:
    """Run the real Uplink on the back-logged store until nothing waits."""
    config = UplinkConfig.model_validate({"mqtt": {"host": "127.0.0.1", "port": port}})
    settings = uplink_settings_of(config)
    store = TimedStore(StoreSettings(path), (settings.max_items, settings.max_bytes))
    await store.open()
    uplink = Uplink(settings, Identity(PREFIX, ENTERPRISE, GATEWAY), store, dict, "bench")
    timeout = 120 + count / 1000
    start = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    checked = start
    try:
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            # The full check counts the back-log (a scan): keep it rare until the end is near.
            if counts.items(GATEWAY) < count and now - checked < 2.0:
                continue
            checked = now
            if store.acks and drained(store):
                break
            if now - start > timeout:
                raise TimeoutError(f"back-fill not drained after {timeout:.0f} s")
    finally:
        await uplink.stop()
        await task
        await store.close()
    seconds = store.last_ack_at - start
    return DrainResult(
        rate=count / seconds,
        seconds=seconds,
        connect_s=store.connected_at - start,
        messages=store.acks,
    )


def baseline(port: int, count: int) -> float:
    """One reading per message, QoS 1, window 20: readings/s from connect to the last PUBACK."""
    identity = Identity(PREFIX, ENTERPRISE, BASELINE_GATEWAY)
    topic = identity.topic("rt")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-baseline", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    done = threading.Event()
    acked = 0
    last_ack = 0.0

    def on_connect(*_: object) -> None:
        connected.set()

    def on_publish(*_: object) -> None:
        nonlocal acked, last_ack
        acked += 1
        if acked == count:
            last_ack = time.perf_counter()
            done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    start = time.perf_counter()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        raise TimeoutError("the baseline client could not connect")
    seq = 0
    for batch in reading_batches(count, first_second(count)):
        for r in batch:
            seq += 1
            item = {"tag": r.tag, "hz": r.hz, "ts": r.ts_ms, "v": r.value, "q": int(r.quality)}
            message = StoredMessage(seq, "rt", True, r.ts_ms, _item_json(item))
            client.publish(topic, envelope(identity, message, int(time.time() * 1000)), qos=1)
    if not done.wait(120):
        raise TimeoutError(f"baseline: {acked} of {count} PUBACKs after 120 s")
    client.disconnect()
    client.loop_stop()
    return count / (last_ack - start)


def _item_json(item: dict[str, object]) -> str:
    return "[" + json.dumps(item, allow_nan=False) + "]"


# -- the run -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    count: int
    sample: int
    one_by_one: WriteResult
    batched: WriteResult
    per_reading: float
    base_rate: float
    base_received: int
    drain: DrainResult
    received: int
    duplicates: int


def measure(count: int, work: Path) -> Figures:
    sample = min(BASELINE_SAMPLE, count)
    limits = (500, 64 * 1024)  # the uplink.batch defaults
    one_by_one = write(work / "one-by-one.db", sample, 1, limits)
    batched = write(work / "store.db", count, PER_COMMIT, limits)
    per_reading = disk_bytes(work / "store.db") / count
    print("store written; draining through the uplink ...", flush=True)

    ctx = mp.get_context("spawn")
    counts = Counts(ctx)
    with platform_stand_in(ctx, work / "broker", counts) as broker:
        base_rate = baseline(broker.port, sample)
        base_received = wait_items(counts, BASELINE_GATEWAY, sample, 30)
        result = asyncio.run(drain(work / "store.db", count, broker.port, counts))
        received = wait_items(counts, GATEWAY, count, 60)
    return Figures(
        count,
        sample,
        one_by_one,
        batched,
        per_reading,
        base_rate,
        base_received,
        result,
        received,
        counts.duplicates(GATEWAY),
    )


def report(f: Figures) -> None:
    ok_rate = "met" if f.drain.rate >= TARGET_RATE else "MISSED"
    ok_bytes = "met" if f.per_reading <= TARGET_BYTES else "MISSED"
    print()
    print("| measure | agent | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| store write, {PER_COMMIT} readings per commit | {f.batched.rate:,.0f} readings/s "
        f"| {f.one_by_one.rate:,.0f} (one commit per reading) "
        f"| {f.batched.rate / f.one_by_one.rate:.1f}x | |"
    )
    print(
        f"| disk per stored reading (db + WAL) | {f.per_reading:.1f} bytes | | "
        f"| <= {TARGET_BYTES}: {ok_bytes} |"
    )
    print(
        f"| back-fill drain, real Uplink | {f.drain.rate:,.0f} readings/s "
        f"| {f.base_rate:,.0f} (one reading per message) "
        f"| {f.drain.rate / f.base_rate:.1f}x | >= {TARGET_RATE:,}: {ok_rate} |"
    )
    print()
    print(
        f"commit of {PER_COMMIT} readings: p50 {f.batched.commit_p50_s * 1e3:.2f} ms, "
        f"p99 {f.batched.commit_p99_s * 1e3:.2f} ms"
    )
    print(
        f"drain: {f.drain.seconds:.1f} s for {f.drain.messages:,} messages "
        f"(connect {f.drain.connect_s * 1e3:.0f} ms)"
    )
    print(
        f"received: {f.received:,} of {f.count:,} back-filled readings "
        f"({f.duplicates} duplicate messages); baseline {f.base_received:,} of {f.sample:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=1_000_000, help="back-log size N")
    parser.add_argument("--quick", action="store_true", help="N = 100,000, for a fast check")
    args = parser.parse_args()
    count: int = 100_000 if args.quick else args.readings
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(f"{count:,} readings: {TAGS} tags, 2-decimal floats, 1 s apart per tag", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        figures = measure(count, Path(tmp))
    report(figures)
    if figures.received != count or figures.base_received != figures.sample:
        sys.exit("not every reading arrived")


if __name__ == "__main__":
    main()
