"""Event-loop lag on a 2 GiB store while housekeeping and a drain run; READY after a crash.

Run: .venv/bin/python bench/store_lag.py [--store PATH] [--gib 2.0] [--seconds 60] [--quick]

Targets (the project's issue): loop lag p99 <= 20 ms and max <= 200 ms on a
store holding 2 GiB (about 70M readings) while maintenance, thinning and a
drain run; READY within 10 s on a 2 GiB store after an unclean stop.

Plant, built once at `--store` and reused (a build first checks that 2.5x
its size is free, for the working copy): a store made by `Store.open()` and
`close()`, so schema and counters are the real ones, then filled inside
SQLite (a recursive `INSERT ... SELECT`, no Python per row) with back-log
readings of 200 tags, 1 s apart per tag, floats with 2 decimals, quality
good, stored as `items.stored` keeps them, until the file is `--gib` GiB; its
counters (`readings`, `last_sample`) set as commits would have, left clean.
Every run works on a copy (`cp --reflink=auto`), deleted afterwards.

1. READY after an unclean stop: on the copy, the real Store (default
   settings but the path) commits live readings in a child process until
   its WAL holds about what the cap lets it (4 MiB), and the child is killed
   with SIGKILL (counter `clean` = 0, a WAL and its -shm left behind). The
   copy's pages are dropped from the page cache (fsync, then
   POSIX_FADV_DONTNEED), as after a power loss, and `await Store.open()`
   plus `active_alarms()` (what the runtime awaits before READY) is timed.
   Timed again after 2., whose agent is killed at the end of its window:
   READY on the WAL that maintenance, thinning and a drain leave.
2. Loop lag: the copy opened with `max_bytes` at 75 % of its size (so the
   cap thins) and a retention that puts the oldest 12 % of its row ids out
   of date (the drain takes the oldest too, from the start; retention and
   the cap act only once the integrity walk is through); on one event loop, for
   `--seconds`, in an agent's own process, from a cold page cache (as
   after the crash of 1.):
   - a ticker sleeping 10 ms in a loop records how late each wake-up is
     (the loop lag); a thread notes the loop's stack whenever the ticker is
     STALL_MS late, to name what held the loop;
   - the maintenance loop as runtime.py runs it (a step, then
     MAINTENANCE_PAUSE_S while more waits, else MAINTENANCE_INTERVAL_S),
     each `await store.maintain()` timed;
   - live readings: 2,000 tags every 100 ms, committed every
     `store.commit_interval` (the default) as the committer does;
   - the drain: the real `Uplink` (default config) against a private
     Mosquitto, with bench/backfill.py's subscriber counting the items in
     another process. Drain rate: readings acknowledged (PUBACK) over the
     window, back-fill and live apart.
   Items dropped come from the loss ledger (thinning and retention apart).
   To say where time goes, the store's own steps (a maintain step, a walk
   slice, a retention slice, a thinning stretch, a commit, making room in a
   commit, a take, the figures) are timed on its thread, by wrapping them.

`--quick`: a 0.1 GiB store at its own default path and 15 s, a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import structlog
from backfill import Counts, platform_stand_in

from edge_agent.config.schema import Store as StoreConfig
from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.model import Quality, Reading
from edge_agent.reload import uplink_settings_of
from edge_agent.runtime import MAINTENANCE_INTERVAL_S, MAINTENANCE_PAUSE_S
from edge_agent.store import Admission, Loss, Store, StoredMessage, StoreSettings, capacity, items
from edge_agent.store.capacity import WAL_MAX_PAGES
from edge_agent.store.engine import Engine
from edge_agent.store.maintenance import IntegrityWalk
from edge_agent.uplink import Identity, Uplink

DEFAULT_STORE = Path("/var/tmp/edge-agent-bench/store-2gib.db")
QUICK_STORE = Path("/var/tmp/edge-agent-bench/store-quick.db")
QUICK_GIB = 0.1
QUICK_SECONDS = 15.0
FREE_FACTOR = 2.5
"""Free disk a build asks for, in store sizes: the store and its working copy."""

TAGS = 200
FILL_CHUNK = 4_000_000
"""Rows per build transaction."""
BYTES_PER_ROW_GUESS = 29.0
"""A reading row on disk (capacity.BYTES_PER_READING plus the tree): sizes the first chunk."""
LIVE_TAGS = 2_000
LIVE_EVERY_S = 0.1
COMMIT_INTERVAL_S = float(StoreConfig.model_fields["commit_interval"].default)
TICK_S = 0.01
STALL_MS = 50.0
CAP_SHARE = 0.75
EXPIRED_SHARE = 0.12
CRASH_WAL_BYTES = WAL_MAX_PAGES * 4096
CRASH_MAX_COMMITS = 400

PREFIX = "safety/v1"
ENTERPRISE = "91370200MA3C00000K"
GATEWAY = "GW-BENCH-LAG"

TARGET_READY_S = 10.0
TARGET_P99_MS = 20.0
TARGET_MAX_MS = 200.0

GOOD = items.stored(Reading("T", "HZ01", 0, 1.25, Quality.GOOD))[1]
"""The `q` of a good float reading, as a row keeps it."""
_FILL = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO reading (tag_id, ts, v, q)
SELECT i % :tags + 1, (:t0 + i / :tags) * 1000,
       round(20.0 + (i % :tags) * 2.0 + 10.0 * sin((i / :tags) / 300.0 + i % :tags)
             + (random() % 100) / 100.0, 2),
       :q
FROM n
"""
"""Reading i: tag i % 200, second i / 200; a slow sine per tag plus noise, 2 decimals."""


def quiet_logs() -> None:
    """Warnings and worse, on stderr (in every process of the bench)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def store_files(path: Path) -> list[Path]:
    """The store and everything the agent keeps beside it."""
    suffixes = ("", "-wal", "-shm", "-wal.found", ".lock", ".seq")
    return [path.with_name(path.name + suffix) for suffix in suffixes]


def remove_store(path: Path) -> None:
    for file in store_files(path):
        file.unlink(missing_ok=True)


def need_free(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        sys.exit(
            f"{directory}: {free / 2**30:.1f} GiB free, {what} needs {needed / 2**30:.1f} GiB; "
            "free some space or pass --store on another disk"
        )


# -- building the store, once ----------------------------------------------------------


def build(path: Path, gib: float) -> None:
    """Create the store through the real Store, fill it inside SQLite, leave it clean."""
    target = int(gib * 2**30)
    path.parent.mkdir(parents=True, exist_ok=True)
    need_free(path.parent, int(FREE_FACTOR * target), f"a {gib:g} GiB store and its copy")
    building = path.with_name(path.name + ".building")
    remove_store(building)
    print(f"building a {gib:g} GiB store at {path} ...", flush=True)
    start = time.perf_counter()
    asyncio.run(_create(building))
    rows = _fill(building, target)
    for file in store_files(building)[1:]:
        file.unlink(missing_ok=True)
    building.rename(path)
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    print(
        f"built in {seconds:.0f} s: {rows:,} readings, {size / 2**30:.2f} GiB "
        f"({size / rows:.1f} bytes per reading)",
        flush=True,
    )


async def _create(path: Path) -> None:
    store = Store(StoreSettings(path), (500, 64 * 1024))
    await store.open()
    await store.close()


def _fill(path: Path, target: int) -> int:
    """Readings until the file is about `target` bytes; returns how many."""
    db = sqlite3.connect(path, isolation_level=None)
    with contextlib.closing(db):
        db.execute("PRAGMA journal_mode=DELETE")  # appends journal next to nothing
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        tags = [(i + 1, f"HZ01.T{i:03d}", "HZ01") for i in range(TAGS)]
        db.executemany("INSERT INTO tag (id, tag, hz) VALUES (?, ?, ?)", tags)
        expected = int(target / BYTES_PER_ROW_GUESS)
        t0 = int(time.time()) - expected // TAGS - 60  # the newest a minute old, give or take
        rows, per_row = 0, BYTES_PER_ROW_GUESS
        while (left := target - db.execute("PRAGMA page_count").fetchone()[0] * page_size) > (
            target // 200
        ):
            chunk = max(min(FILL_CHUNK, int(left / per_row)), 1_000)
            args = {"first": rows, "last": rows + chunk - 1, "tags": TAGS, "t0": t0, "q": GOOD}
            db.execute("BEGIN")
            db.execute(_FILL, args)
            db.execute("COMMIT")
            rows += chunk
            per_row = db.execute("PRAGMA page_count").fetchone()[0] * page_size / rows
            print(f"  {rows:,} readings", flush=True)
        last_ms = (t0 + (rows - 1) // TAGS) * 1000
        db.execute("UPDATE counter SET value = ? WHERE name = 'readings'", (rows,))
        db.execute("UPDATE counter SET value = ? WHERE name = 'last_sample'", (last_ms,))
        db.execute("PRAGMA journal_mode=WAL")  # as the store keeps it
    return rows


def working_copy(built: Path) -> Path:
    copy = built.with_name(f"{built.stem}-run{os.getpid()}{built.suffix}")
    need_free(built.parent, int(built.stat().st_size * 1.1), "the working copy")
    subprocess.run(["cp", "--reflink=auto", str(built), str(copy)], check=True)
    return copy


# -- live readings ---------------------------------------------------------------------


class LiveFeed:
    """`LIVE_TAGS` tags sampled together: what a poll cycle hands the store."""

    def __init__(self, tags: int) -> None:
        self._names = [f"LIVE.T{i:04d}" for i in range(tags)]
        self._cycle = 0

    def add(self, store: Store, ts_ms: int) -> None:
        self._cycle += 1
        wobble = (self._cycle % 100) / 100
        for i, name in enumerate(self._names):
            store.add_reading(Reading(name, "HZ02", ts_ms, round(i % 50 + wobble, 2), Quality.GOOD))
        store.sampled(ts_ms)


# -- 1: READY after an unclean stop ----------------------------------------------------


def run_then_die(path: str) -> None:
    """In a child process: commit live readings until the WAL is cap-sized, then SIGKILL."""
    quiet_logs()
    asyncio.run(_run_then_die(Path(path)))


async def _run_then_die(path: Path) -> None:
    store = Store(StoreSettings(path), (500, 64 * 1024))
    await store.open()
    wal, feed = path.with_name(path.name + "-wal"), LiveFeed(LIVE_TAGS)
    for _ in range(CRASH_MAX_COMMITS):
        if wal.exists() and wal.stat().st_size >= CRASH_WAL_BYTES:
            break
        feed.add(store, now_ms())
        await store.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def evict(path: Path) -> None:
    """Drop the store's pages from the page cache, as a power loss would have."""
    for file in store_files(path)[:3]:
        if file.exists():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@dataclass(frozen=True, slots=True)
class Ready:
    open_s: float
    ready_s: float
    wal_bytes: int


def crash_with_cap_sized_wal(path: Path) -> None:
    child = mp.get_context("spawn").Process(target=run_then_die, args=(str(path),))
    child.start()
    child.join()
    killed(child)


def killed(child: BaseProcess) -> None:
    if child.exitcode != -signal.SIGKILL:
        sys.exit(f"the agent's process ended with {child.exitcode}, not by SIGKILL")


def ready_after_crash(path: Path) -> Ready:
    """Time READY on the store a killed agent left, its pages out of the page cache."""
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    evict(path)
    return asyncio.run(_time_open(path, wal_bytes))


async def _time_open(path: Path, wal_bytes: int) -> Ready:
    store = Store(StoreSettings(path), (500, 64 * 1024))
    start = time.perf_counter()
    await store.open()
    opened = time.perf_counter()
    await store.active_alarms()
    ready = time.perf_counter()
    await store.close()
    return Ready(opened - start, ready - start, wal_bytes)


# -- 2: loop lag under housekeeping and a drain ----------------------------------------


class CountingStore(Store):
    """The real store, tallying the readings of each message the broker acknowledged."""

    def __init__(self, settings: StoreSettings, limits: tuple[int, int]) -> None:
        super().__init__(settings, limits)
        self._out: dict[int, tuple[bool, int]] = {}
        self.acked = {True: 0, False: 0}
        """Readings acknowledged: back-fill (True) and live (False)."""

    async def take(
        self, admission: Admission, skip: set[int], now_ms: int, linger_ms: int
    ) -> list[StoredMessage]:
        taken = await super().take(admission, skip, now_ms, linger_ms)
        for message in taken:
            if message.topic == "rt":
                self._out[message.seq] = (message.hist, message.items_json.count('"tag"'))
        return taken

    def ack(self, seq: int) -> None:
        hist, count = self._out.pop(seq, (False, 0))
        self.acked[hist] += count
        super().ack(seq)


class StallWatch:
    """A thread that notes the event loop's stack whenever the ticker is STALL_MS late."""

    def __init__(self) -> None:
        self.beat = time.perf_counter()
        self.stacks: collections.Counter[str] = collections.Counter()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        stalled = False
        while not self._stop.wait(TICK_S):
            late = time.perf_counter() - self.beat > STALL_MS / 1000
            if late and not stalled:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self.stacks[_short_stack(frame)] += 1
            stalled = late


def _short_stack(frame: FrameType) -> str:
    """The innermost frames, file:line function, innermost first."""
    summary = traceback.extract_stack(frame)[-5:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(summary))


PROFILED: dict[str, tuple[object, str]] = {
    "maintain (one step, all of it)": (Engine, "maintain"),
    "  integrity walk slice": (IntegrityWalk, "step"),
    "  retention slice": (capacity, "expire_step"),
    "  thinning stretch (maintain or commit)": (capacity, "thin_step"),
    "commit": (Engine, "commit"),
    "  making room in a commit (thin + checkpoint)": (Engine, "_make_room"),
    "take (resend, pack)": (Engine, "take"),
    "figures (after every job)": (Engine, "figures"),
}
"""What runs on the store's thread, timed there by wrapping (kind: owner, attribute)."""


class Profile:
    """Wraps the PROFILED functions for its life, recording each call's time."""

    def __init__(self, start: float) -> None:
        self._start = start
        self.times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in PROFILED}
        self._originals: list[tuple[object, str, object]] = []

    def __enter__(self) -> Profile:
        for kind, (owner, name) in PROFILED.items():
            original = getattr(owner, name)
            self._originals.append((owner, name, original))
            setattr(owner, name, self._timed(self.times[kind], original))
        return self

    def __exit__(self, *_: object) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)

    def _timed(
        self, times: list[tuple[float, float]], function: Callable[..., object]
    ) -> Callable[..., object]:
        @functools.wraps(function)
        def timed(*args: object, **kwargs: object) -> object:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times.append((began - self._start, time.perf_counter() - began))

        return timed


@dataclass
class Lag:
    lags_ms: list[float] = field(default_factory=list)
    steps_s: list[float] = field(default_factory=list)
    """Each `await store.maintain()`, queueing behind commits and packing included."""
    profile: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Store-thread work by kind: (start s into the window, seconds)."""
    feed_ms: list[float] = field(default_factory=list)
    """Time on the loop of adding one cycle of live readings."""
    stacks: collections.Counter[str] = field(default_factory=collections.Counter)
    acked: dict[bool, int] = field(default_factory=dict)
    received: int = 0
    seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    start_readings: int = 0
    end_readings: int = 0
    cap_bytes: int = 0
    retention_s: float = 0.0
    wal_peak: tuple[int, float] = (0, 0.0)
    """The WAL's largest size seen (bytes), and when (s into the window)."""


async def ticker(watch: StallWatch, lag: Lag) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + TICK_S
        await asyncio.sleep(TICK_S)
        lag.lags_ms.append((loop.time() - due) * 1000)
        watch.beat = time.perf_counter()


async def maintain(store: Store, lag: Lag) -> None:
    """runtime.Agent._maintain_periodically, each step timed."""
    while True:
        began = time.perf_counter()
        more = await store.maintain(now_ms())
        lag.steps_s.append(time.perf_counter() - began)
        await asyncio.sleep(MAINTENANCE_PAUSE_S if more else MAINTENANCE_INTERVAL_S)


async def feed(store: Store, lag: Lag) -> None:
    live, deadline = LiveFeed(LIVE_TAGS), time.monotonic()
    while True:
        began = time.perf_counter()
        live.add(store, now_ms())
        lag.feed_ms.append((time.perf_counter() - began) * 1000)
        deadline += LIVE_EVERY_S
        await asyncio.sleep(max(deadline - time.monotonic(), 0))


async def watch_wal(path: Path, lag: Lag, start: float) -> None:
    """The WAL's largest size (checkpoints are held off until the integrity walk is through)."""
    wal = path.with_name(path.name + "-wal")
    while True:
        with contextlib.suppress(FileNotFoundError):
            size = wal.stat().st_size
            if size > lag.wal_peak[0]:
                lag.wal_peak = (size, time.perf_counter() - start)
        await asyncio.sleep(0.5)


async def commit(store: Store) -> None:
    """runtime.Agent._commit_periodically, without alarms."""
    while True:
        await asyncio.sleep(COMMIT_INTERVAL_S)
        await store.flush()


def lag_settings(path: Path) -> StoreSettings:
    """A cap at CAP_SHARE of the file; a retention the oldest EXPIRED_SHARE falls out of."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with contextlib.closing(db):
        (cut_ms,) = db.execute(
            "SELECT ts FROM reading WHERE id >= (SELECT min(id) + ? * (max(id) - min(id)) "
            "FROM reading) ORDER BY id LIMIT 1",
            (EXPIRED_SHARE,),
        ).fetchone()
    retention_s = (now_ms() - cut_ms) / 1000
    return StoreSettings(path, int(path.stat().st_size * CAP_SHARE), retention_s)


async def measure_lag(path: Path, seconds: float, port: int, counts: Counts) -> Lag:
    settings = lag_settings(path)
    config = UplinkConfig.model_validate({"mqtt": {"host": "127.0.0.1", "port": port}})
    uplink_settings = uplink_settings_of(config)
    store = CountingStore(settings, (uplink_settings.max_items, uplink_settings.max_bytes))
    await store.open()
    lag = Lag(cap_bytes=settings.max_bytes, retention_s=settings.retention_s)
    lag.start_readings = store.figures.readings
    uplink = Uplink(uplink_settings, Identity(PREFIX, ENTERPRISE, GATEWAY), store, dict, "bench")
    losses_before, received_before = (await store.losses())[0], counts.items(GATEWAY)
    start = time.perf_counter()
    with StallWatch() as watch, Profile(start) as profile:
        drain = asyncio.create_task(uplink.run())
        tasks = [
            asyncio.create_task(ticker(watch, lag)),
            asyncio.create_task(maintain(store, lag)),
            asyncio.create_task(feed(store, lag)),
            asyncio.create_task(commit(store)),
            asyncio.create_task(watch_wal(path, lag, start)),
        ]
        await asyncio.sleep(seconds)
        lag.seconds = time.perf_counter() - start
        lag.acked, lag.received = dict(store.acked), counts.items(GATEWAY) - received_before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lag.stacks, lag.profile = watch.stacks, profile.times
    await uplink.stop()
    await drain
    lag.dropped = dropped_since(losses_before, (await store.losses())[0])
    lag.end_readings = store.figures.readings
    return lag  # the store left open: the process is killed next


def dropped_since(before: list[Loss], after: list[Loss]) -> dict[str, int]:
    """Items of the ledger entries added or grown since `before`, by reason."""
    known = {(loss.reason, loss.first_ms): loss.items for loss in before}
    dropped: collections.Counter[str] = collections.Counter()
    for loss in after:
        dropped[loss.reason] += loss.items - known.get((loss.reason, loss.first_ms), 0)
    return {reason: count for reason, count in dropped.items() if count > 0}


def lag_then_die(path: str, seconds: float, port: int, counts: Counts, results: Connection) -> None:
    """In a child process: the lag measurement, its results sent, then SIGKILL."""
    quiet_logs()
    results.send(asyncio.run(measure_lag(Path(path), seconds, port, counts)))
    results.close()
    os.kill(os.getpid(), signal.SIGKILL)


def lag_run(path: Path, seconds: float) -> Lag:
    """The lag measurement in an agent's process that is killed at its end."""
    ctx = mp.get_context("spawn")
    counts = Counts(ctx, gateways=(GATEWAY,))
    directory = path.parent / f"broker-{os.getpid()}"
    try:
        with platform_stand_in(ctx, directory, counts) as broker:
            received, sender = ctx.Pipe(duplex=False)
            agent = ctx.Process(
                target=lag_then_die, args=(str(path), seconds, broker.port, counts, sender)
            )
            agent.start()
            if not received.poll(seconds + 600):
                raise TimeoutError("the lag measurement did not end")
            lag: Lag = received.recv()
            agent.join()
            killed(agent)
            return lag
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the report ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)] if ordered else math.nan


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(size: int, readies: tuple[Ready, Ready], lag: Lag) -> None:
    p50, p99, worst = (percentile(lag.lags_ms, p) for p in (50, 99, 100))
    steps = lag.steps_s
    backfill_rate, live_rate = (lag.acked.get(h, 0) / lag.seconds for h in (True, False))
    thinned = sum(n for reason, n in lag.dropped.items() if reason.startswith("store full"))
    expired = sum(n for reason, n in lag.dropped.items() if reason.startswith("older than"))
    met_p99, met_max = verdict(p99 <= TARGET_P99_MS), verdict(worst <= TARGET_MAX_MS)
    print()
    print(
        f"store {size / 2**30:.2f} GiB, {lag.start_readings:,} readings waiting; window "
        f"{lag.seconds:.0f} s; cap {lag.cap_bytes / 2**30:.2f} GiB, retention "
        f"{lag.retention_s / 86400:.2f} d"
    )
    print()
    print("| measure | result | target |")
    print("|---|---|---|")
    for when, ready in zip(("agent killed", "killed after the window"), readies, strict=True):
        print(
            f"| READY, {when} (cold cache, WAL {ready.wal_bytes / 2**20:,.1f} MiB) "
            f"| {ready.ready_s:.2f} s (open {ready.open_s:.2f} s) "
            f"| <= {TARGET_READY_S:g} s: {verdict(ready.ready_s <= TARGET_READY_S)} |"
        )
    print(f"| loop lag p50 | {p50:.2f} ms | |")
    print(f"| loop lag p99 | {p99:.2f} ms | <= {TARGET_P99_MS:g} ms: {met_p99} |")
    print(f"| loop lag max | {worst:.1f} ms | <= {TARGET_MAX_MS:g} ms: {met_max} |")
    print(f"| drain, back-fill (PUBACKed) | {backfill_rate:,.0f} readings/s | |")
    print(f"| drain, live (PUBACKed) | {live_rate:,.0f} readings/s of {LIVE_TAGS * 10:,} | |")
    print(f"| readings thinned / expired | {thinned:,} / {expired:,} | |")
    print(
        f"| maintenance steps, as awaited | {len(steps):,}; p99 "
        f"{percentile(steps, 99) * 1e3:.0f} ms, max {max(steps, default=0) * 1e3:.0f} ms | |"
    )
    report_details(lag)
    print(
        json.dumps(
            {
                "gib": round(size / 2**30, 3),
                "ready_s": [round(ready.ready_s, 3) for ready in readies],
                "lag_ms": [round(p50, 2), round(p99, 2), round(worst, 1)],
                "drain": [round(backfill_rate), round(live_rate)],
                "thinned": thinned,
                "expired": expired,
                "steps": [len(steps), round(max(steps, default=0) * 1e3)],
            }
        )
    )


def report_details(lag: Lag) -> None:
    """Where the store's thread spent its time, what the ledger got, what held the loop."""
    print()
    print("| on the store's thread | calls | p50 ms | p99 ms | max ms | total s | last at s |")
    print("|---|---|---|---|---|---|---|")
    for kind, calls in lag.profile.items():
        took = [seconds * 1e3 for _, seconds in calls]
        last = max((at for at, _ in calls), default=math.nan)
        print(
            f"| {kind} | {len(took):,} | {percentile(took, 50):.1f} | {percentile(took, 99):.1f} "
            f"| {max(took, default=0):.1f} | {sum(took) / 1e3:.1f} | {last:.1f} |"
        )
    print()
    print(f"WAL at most {lag.wal_peak[0] / 2**20:.1f} MiB, {lag.wal_peak[1]:.0f} s into the window")
    for reason, count in lag.dropped.items():
        print(f"ledger: {count:,} items: {reason}")
    print(
        f"adding one cycle of {LIVE_TAGS:,} live readings on the loop: p50 "
        f"{percentile(lag.feed_ms, 50):.1f} ms, max {max(lag.feed_ms, default=0):.1f} ms"
    )
    print(
        f"received by the subscriber: {lag.received:,} items; readings waiting "
        f"{lag.start_readings:,} -> {lag.end_readings:,}"
    )
    for stack, times in lag.stacks.most_common(5):
        print(f"loop > {STALL_MS:g} ms late x{times}, the loop was in: {stack}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, help=f"the built store (default {DEFAULT_STORE})")
    parser.add_argument("--gib", type=float, help="its size when built (default 2.0)")
    parser.add_argument("--seconds", type=float, help="the lag window (default 60)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_GIB} GiB, a smoke run")
    args = parser.parse_args()
    built: Path = args.store or (QUICK_STORE if args.quick else DEFAULT_STORE)
    gib: float = args.gib or (QUICK_GIB if args.quick else 2.0)
    seconds: float = args.seconds or (QUICK_SECONDS if args.quick else 60.0)
    quiet_logs()
    if built.exists():
        print(f"the store built before: {built}", flush=True)
    else:
        build(built, gib)
    size = built.stat().st_size
    copy = working_copy(built)
    try:
        print("READY after an unclean stop ...", flush=True)
        crash_with_cap_sized_wal(copy)
        ready = ready_after_crash(copy)
        print(f"loop lag for {seconds:g} s, then the agent killed ...", flush=True)
        lag = lag_run(copy, seconds)
        print("READY after that ...", flush=True)
        ready_after_lag = ready_after_crash(copy)
    finally:
        remove_store(copy)
    report(size, (ready, ready_after_lag), lag)


if __name__ == "__main__":
    main()
