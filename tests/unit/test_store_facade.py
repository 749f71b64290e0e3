"""The store as the event loop sees it: work runs on the store's thread, the most urgent
first; adding never waits; the figures of what waits come back with every job."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Reading
from edge_agent.store import Store, StoreSettings, tail
from edge_agent.store.actor import Urgency
from edge_agent.store.engine import Engine
from edge_agent.uplink.window import Window

T0 = 1_764_441_000_000
RAISED = AlarmEvent("a1", "HZ01.GT201", "HZ01", T0, AlarmKind.H, AlarmState.RAISED, 27.5, 25.0)


async def opened(tmp_path: Path) -> Store:
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024))
    await store.open()
    return store


async def test_no_sqlite_call_runs_on_the_event_loops_thread(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    threads: set[str] = set()
    original = Engine.commit

    def commit(engine: Engine, batch: object) -> object:
        threads.add(threading.current_thread().name)
        return original(engine, batch)  # type: ignore[arg-type]

    Engine.commit = commit  # type: ignore[method-assign]
    try:
        store.add_reading(Reading("A", "HZ01", T0, 1.0, Quality.GOOD))
        await store.flush()
    finally:
        Engine.commit = original  # type: ignore[method-assign]
    assert threads == {"store"}
    await store.close()


async def test_an_urgent_job_goes_ahead_of_housekeeping_already_queued(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    order: list[str] = []

    def slow(name: str) -> object:
        def run(engine: Engine) -> None:
            time.sleep(0.02)
            order.append(name)

        return run

    actor = store._actor
    idle = [asyncio.ensure_future(actor.call(Urgency.IDLE, slow(f"idle{n}"))) for n in range(5)]
    await asyncio.sleep(0.005)  # the first is running
    await actor.call(Urgency.URGENT, slow("alarm"))
    await asyncio.gather(*idle)
    assert order.index("alarm") <= 1, order
    await store.close()


async def test_the_figures_are_fresh_when_a_job_returns(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    for n in range(1200):
        store.add_reading(Reading(f"T{n % 4}", "HZ01", T0 + n, float(n), Quality.GOOD))
    assert store.backlog(0, connected=False).messages == 3, "counted while still in memory"
    await store.flush()
    assert (store.figures.readings, store.figures.oldest_ms) == (1200, T0)
    assert store.backlog(0, connected=False).messages == 3
    await store.close()


async def test_a_take_commits_first_and_never_offers_an_acknowledged_message(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    await store.mark_live()
    store.add_alarm(RAISED)
    window = Window(10, priority=True, max_bytes=64 * 1024)
    (alarm,) = await store.take(window.top_up(time.monotonic()), set(), T0, 0)
    assert alarm.topic == "alarm"
    store.ack(alarm.seq)  # acknowledged, deleted with the next commit only
    assert await store.take(window.top_up(time.monotonic()), set(), T0, 0) == []
    await store.close()


async def test_acknowledgements_alone_may_wait_for_the_next_commit(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.mark_live()
    store.add_alarm(RAISED)
    window = Window(10, priority=True, max_bytes=64 * 1024)
    (alarm,) = await store.take(window.top_up(time.monotonic()), set(), T0, 0)
    store.ack(alarm.seq)
    await store.flush(acks_alone=False)
    assert (store.unflushed, store.figures.messages) == (1, 1), "no job for an ack alone"
    store.add_reading(Reading("T1", "HZ01", T0, 1.0, Quality.GOOD))
    await store.flush(acks_alone=False)
    assert (store.unflushed, store.figures.messages) == (0, 0), "it went with the reading"
    await store.close()


async def test_the_oldest_live_reading_not_packed_tells_how_far_the_uplink_lags(
    tmp_path: Path,
) -> None:
    store = Store(StoreSettings(tmp_path / "store.db"), (100, 64 * 1024))
    await store.open()
    for n in range(150):
        store.add_reading(Reading("T1", "HZ01", T0 + n, float(n), Quality.GOOD))
    await store.mark_live()  # what waits from before is back-fill, not live
    assert store.live_lag_s(T0 + 2000) == 0.0, "back-fill is not live"
    store.add_reading(Reading("T1", "HZ01", T0 + 1000, 1.0, Quality.GOOD))
    assert store.live_lag_s(T0 + 2000) == 1.0, "buffered, it counts"
    await store.flush()
    store.add_reading(Reading("T1", "HZ01", T0 + 1500, 2.0, Quality.GOOD))
    assert store.live_lag_s(T0 + 2000) == 1.0, "committed, the oldest is still the first"
    await store.flush()
    window = Window(10, priority=True, max_bytes=64 * 1024)
    await store.take(window.top_up(time.monotonic()), set(), T0 + 2000, 0)
    assert store.live_lag_s(T0 + 2000) == 0.0, "packed, they no longer wait"
    await store.close()


async def test_live_readings_keep_up_while_recent_and_within_the_memory_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail, "MAX_ROWS", 100)
    store = Store(StoreSettings(tmp_path / "store.db"), (100, 64 * 1024))
    await store.open()
    await store.mark_live()
    for n in range(100):
        store.add_reading(Reading("T1", "HZ01", T0 + n, float(n), Quality.GOOD))
    await store.flush()
    assert store.live_keeps_up(T0 + 1000, 1.0)
    assert not store.live_keeps_up(T0 + 1001, 1.0), "the oldest waits too long"
    store.add_reading(Reading("T1", "HZ01", T0 + 100, 0.0, Quality.GOOD))
    await store.flush()
    assert not store.live_keeps_up(T0 + 1000, 1.0), "more wait than the copy holds"
    await store.close()


async def test_a_commit_is_due_after_the_first_thing_buffered_and_a_take_commits_too(
    tmp_path: Path,
) -> None:
    told: list[None] = []
    store = Store(StoreSettings(tmp_path / "store.db"), (500, 64 * 1024), lambda: told.append(None))
    await store.open()
    await store.mark_live()
    assert store.commit_due_in(0.25) is None, "nothing waits: nothing is due"
    store.add_reading(Reading("T1", "HZ01", T0, 1.0, Quality.GOOD))
    store.buffered()
    store.buffered()
    assert len(told) == 1, "the first thing buffered since the last commit is told, once"
    assert 0.2 < (store.commit_due_in(0.25) or 0) <= 0.25
    await asyncio.sleep(0.3)
    assert store.commit_due_in(0.25) == 0, "what waits has waited long enough"
    window = Window(10, priority=True, max_bytes=64 * 1024)
    await store.take(window.top_up(time.monotonic()), set(), T0, 0)
    assert store.commit_due_in(0.25) is None, "the take committed what waited"
    store.ack(1)
    assert store.commit_due_in(0.25) is None, "an acknowledgement alone is never due"
    store.add_alarm(RAISED)
    assert len(told) == 2
    assert await store.flush()
    assert not await store.flush(), "nothing left to commit"
    await store.close()


async def test_a_reading_that_changed_an_alarm_is_marked_for_thinning_to_keep(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    store.add_reading(Reading("A", "HZ01", T0, 30.0, Quality.GOOD), alarmed=True)
    await store.flush()
    flags = await store._actor.call(
        Urgency.NORMAL, lambda engine: engine._db.execute("SELECT q FROM reading").fetchone()[0]
    )
    assert flags & 0x20
    await store.close()
