"""Store write rate and commit latency: batched commits against one commit per reading.

Run: .venv/bin/python bench/store_commit.py [--readings N]
Both variants use the real Store on a temporary file in the same run, as the
agent does: readings added on the event loop, committed on the store's thread
(the time of a commit is from asking to the commit being on disk); the figure
that matters is the ratio, not the absolute rate of this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from edge_agent.model import Quality, Reading
from edge_agent.store import Store, StoreSettings

LIMITS = (500, 64 * 1024)


def readings(count: int) -> list[Reading]:
    return [
        Reading(f"HZ01.T{i % 200:03d}", "HZ01", 1_764_441_154_000 + i, i * 0.1, Quality.GOOD)
        for i in range(count)
    ]


async def run(batch: int, rows: list[Reading], directory: Path) -> tuple[float, list[float]]:
    """Readings/s and per-commit latencies (s) when committing every `batch` readings."""
    store = Store(StoreSettings(directory / f"bench-{batch}.db"), LIMITS)
    await store.open()
    latencies = []
    start = time.perf_counter()
    for offset in range(0, len(rows), batch):
        for reading in rows[offset : offset + batch]:
            store.add_reading(reading)
        before = time.perf_counter()
        await store.flush()
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - start
    await store.close()
    return len(rows) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=20_000)
    args = parser.parse_args()
    rows = readings(args.readings)
    with tempfile.TemporaryDirectory() as tmp:
        base_rate, _ = asyncio.run(run(1, rows[: args.readings // 4], Path(tmp)))
        rate, lat = asyncio.run(run(100, rows, Path(tmp)))
    p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
    print(f"one commit per reading : {base_rate:10,.0f} readings/s")
    print(f"100 readings per commit: {rate:10,.0f} readings/s  ({rate / base_rate:.1f}x)")
    print(f"commit latency, 100 readings: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
