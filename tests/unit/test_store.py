"""The store: seq given at packing, never reused; alarms first; back-fill flagged; acks delete."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from stores import SyncStore

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Reading
from edge_agent.store.engine import insert_readings


def reading(ts: int, value: float | bool | None = 1.0, q: Quality = Quality.GOOD) -> Reading:
    return Reading("HZ01.LT101", "HZ01", ts, value, q)


def alarm(ts: int) -> AlarmEvent:
    return AlarmEvent("a1", "HZ01.GT201", "HZ01", ts, AlarmKind.H, AlarmState.RAISED, 27.5, 25.0)


def open_store(path: Path) -> SyncStore:
    return SyncStore.open(path, max_items=3)


@pytest.fixture
def store(tmp_path: Path) -> SyncStore:
    return open_store(tmp_path / "store.db")


def test_seq_starts_at_one_and_rises_by_one_per_packed_message(store: SyncStore) -> None:
    store.mark_live()
    for ts in range(7):
        store.add_reading(reading(ts))
    seqs = []
    while (message := store.pack_next(now_ms=10_000, linger_ms=0)) is not None:
        seqs.append(message.seq)
    assert seqs == [1, 2, 3]


def test_items_keep_their_types_and_quality(store: SyncStore) -> None:
    store.mark_live()
    store.add_reading(reading(1, True))
    store.add_reading(reading(2, None, Quality.COMM))
    store.add_reading(Reading("HZ01.N", "HZ01", 3, 42, Quality.GOOD))
    message = store.pack_next(now_ms=10_000, linger_ms=0)
    assert message is not None
    assert json.loads(message.items_json) == [
        {"tag": "HZ01.LT101", "hz": "HZ01", "ts": 1, "v": True, "q": 0},
        {"tag": "HZ01.LT101", "hz": "HZ01", "ts": 2, "v": None, "q": 2},
        {"tag": "HZ01.N", "hz": "HZ01", "ts": 3, "v": 42, "q": 0},
    ]


def test_alarms_are_packed_before_waiting_readings(store: SyncStore) -> None:
    for ts in range(5):
        store.add_reading(reading(ts))
    store.add_alarm(alarm(9))
    first = store.pack_next(now_ms=10_000, linger_ms=0)
    assert first is not None
    assert (first.topic, first.seq) == ("alarm", 1)


def test_readings_stored_while_down_are_back_fill(store: SyncStore) -> None:
    store.add_reading(reading(1))
    store.mark_live()
    store.add_reading(reading(2))
    live = store.pack_next(now_ms=10_000, linger_ms=0)
    hist = store.pack_next(now_ms=10_000, linger_ms=0)
    assert live is not None
    assert hist is not None
    assert (live.hist, hist.hist) == (False, True)


def test_live_readings_linger_until_due(store: SyncStore) -> None:
    store.mark_live()
    store.add_reading(reading(1000))
    assert store.pack_next(now_ms=1200, linger_ms=500) is None
    assert store.pack_next(now_ms=1500, linger_ms=500) is not None


def test_a_message_stays_until_acked_and_is_resent_with_the_same_items(store: SyncStore) -> None:
    store.mark_live()
    store.add_reading(reading(1))
    packed = store.pack_next(now_ms=10_000, linger_ms=0)
    assert packed is not None
    assert store.unsent(skip=set(), limit=10) == [packed]
    assert store.unsent(skip={packed.seq}, limit=10) == []
    store.ack(packed.seq)
    store.flush()
    assert store.unsent(skip=set(), limit=10) == []


def test_seq_survives_reopening_and_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = open_store(path)
    first.add_reading(reading(1))
    message = first.pack_next(now_ms=10_000, linger_ms=0)
    assert message is not None
    first.ack(message.seq)
    first.close()
    second = open_store(path)
    second.add_reading(reading(2))
    again = second.pack_next(now_ms=10_000, linger_ms=0)
    assert again is not None
    assert again.seq == message.seq + 1


def test_backlog_counts_waiting_messages_and_back_fill(store: SyncStore) -> None:
    for ts in range(7):
        store.add_reading(reading(ts))
    store.mark_live()
    backlog = store.backlog(in_flight=0)
    assert (backlog.messages, backlog.oldest_ms) == (3, 0)
    while store.pack_next(now_ms=10_000, linger_ms=0):
        pass
    assert store.backlog(in_flight=3).messages == 0


def test_readings_after_the_store_drained_empty_are_still_live(store: SyncStore) -> None:
    store.mark_live()
    store.add_reading(reading(1))
    assert store.pack_next(now_ms=10_000, linger_ms=0) is not None
    store.add_reading(reading(2))
    again = store.pack_next(now_ms=10_000, linger_ms=0)
    assert again is not None
    assert again.hist is False


def test_an_acked_message_is_not_offered_again_before_the_flush(store: SyncStore) -> None:
    store.mark_live()
    store.add_reading(reading(1))
    packed = store.pack_next(now_ms=10_000, linger_ms=0)
    assert packed is not None
    store.ack(packed.seq)
    assert store.unsent(skip=set(), limit=10) == []


def test_alarms_stored_while_down_and_live_alarms_go_in_separate_messages(store: SyncStore) -> None:
    store.add_alarm(alarm(1))
    store.mark_live()
    store.add_alarm(alarm(2))
    first = store.pack_next(now_ms=10_000, linger_ms=0)
    second = store.pack_next(now_ms=10_000, linger_ms=0)
    assert first is not None
    assert second is not None
    assert [(first.hist, first.oldest_ms), (second.hist, second.oldest_ms)] == [
        (True, 1),
        (False, 2),
    ]


@pytest.mark.parametrize("count", [0, 1, 3, 4, 31, 33, 256, 300, 1000])
def test_rows_inserted_many_per_statement_all_arrive_in_order(count: int) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE reading (id INTEGER PRIMARY KEY, tag_id, ts, v, q)")
    rows = [(n % 7, 1000 + n, n * 0.5 if n % 3 else "text", n % 5) for n in range(count)]
    insert_readings(db, rows)
    assert db.execute("SELECT tag_id, ts, v, q FROM reading ORDER BY id").fetchall() == rows


def test_a_packing_rolled_back_leaves_the_back_log_counts_as_they_were(
    store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counts of what waits below the live boundary live in memory; a packing whose
    # transaction fails (an I/O error) must not count its rows as gone: they are still there.
    for ts in range(10):
        store.add_reading(reading(ts))
    store.add_alarm(alarm(10))
    store.mark_live()
    outbox = store.engine._outbox
    message = outbox._message
    refusals = iter([True, True, False, False])

    def failing_twice(*args: object) -> object:
        if next(refusals, False):
            raise sqlite3.OperationalError("disk I/O error")
        return message(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "_message", failing_twice)
    tries = (store.pack_next(now_ms=10_000, linger_ms=0) for _ in range(12))
    packed = [m for m in tries if m is not None]  # a refused packing gives nothing, then on
    assert sum(len(json.loads(m.items_json)) for m in packed if m.topic == "rt") == 10
    assert (outbox.boundary.backfill_readings, outbox.boundary.backfill_events) == (0, 0)
    assert store.backlog(in_flight=len(packed)).messages == 0
