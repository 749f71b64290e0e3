"""The live tail: live readings packed from the copy the commit kept, never from a stale one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from stores import SyncStore

from edge_agent.model import Quality, Reading
from edge_agent.store import tail
from edge_agent.store.tail import LiveTail


def reading(ts: int) -> Reading:
    return Reading("HZ01.LT101", "HZ01", ts, float(ts), Quality.GOOD)


@pytest.fixture
def store(tmp_path: Path) -> SyncStore:
    store = SyncStore.open(tmp_path / "store.db", max_items=100)
    store.mark_live()
    return store


def add(store: SyncStore, *times: int) -> None:
    for ts in times:
        store.add_reading(reading(ts))
    store.flush()


def packed_times(store: SyncStore) -> list[int]:
    return [item["ts"] for m in store.pack_all() for item in json.loads(m.items_json)]


def test_live_readings_are_packed_without_reading_them_back(store: SyncStore) -> None:
    add(store, 1, 2, 3)
    statements: list[str] = []
    store.engine._db.set_trace_callback(statements.append)
    assert packed_times(store) == [1, 2, 3]
    assert not [sql for sql in statements if sql.startswith("SELECT id, tag_id")]


def test_live_readings_deleted_behind_the_copy_are_not_packed(store: SyncStore) -> None:
    # What thinning or retention does to live rows: the copy still holds them.
    add(store, 1, 2, 3, 4)
    store.engine._db.execute("DELETE FROM reading WHERE ts = 2")
    assert packed_times(store) == [1, 3, 4]


def test_live_readings_before_the_copy_are_packed_first(store: SyncStore) -> None:
    add(store, 1, 2)
    store.engine._outbox.tail.restart()  # a copy that wrongly believes nothing is live
    add(store, 3, 4)
    assert packed_times(store) == [1, 2, 3, 4]


def test_a_dropped_copy_starts_again_with_the_next_commit(store: SyncStore) -> None:
    add(store, 1, 2)
    store.engine._outbox.tail.drop()
    add(store, 3, 4)
    assert store.engine._outbox.tail.rows, "the next commit starts the copy again"
    statements: list[str] = []
    store.engine._db.set_trace_callback(statements.append)
    assert packed_times(store) == [1, 2, 3, 4]
    read_back = [sql for sql in statements if sql.startswith("SELECT id, tag_id")]
    assert len(read_back) == 1, "only the rows before the copy are read back"
    assert not store.engine._outbox.tail.behind


def test_a_back_log_past_the_bound_packs_its_oldest_rows_from_sql_first(
    store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail, "MAX_ROWS", 2)
    add(store, 1, 2)
    add(store, 3, 4, 5)
    assert [row[1] for row in store.engine._outbox.tail.rows] == [4, 5]
    assert packed_times(store) == [1, 2, 3, 4, 5]
    add(store, 6)
    assert packed_times(store) == [6]
    assert not store.engine._outbox.tail.behind


def test_once_nothing_live_waits_the_copy_is_trusted_again(store: SyncStore) -> None:
    store.engine._outbox.tail.drop()
    assert packed_times(store) == []
    assert not store.engine._outbox.tail.behind


def test_a_packing_rolled_back_leaves_the_copy_as_it_was(
    store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(store, 1, 2)
    outbox = store.engine._outbox
    message = outbox._message
    refusals = iter([True])

    def failing_once(*args: object) -> object:
        if next(refusals, False):
            raise sqlite3.OperationalError("disk I/O error")
        return message(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "_message", failing_once)
    assert store.pack_next() is None
    assert (outbox.tail.behind, len(outbox.tail.rows)) == (False, 2)
    assert packed_times(store) == [1, 2]


def test_rows_that_do_not_follow_on_start_the_copy_again() -> None:
    copy = LiveTail()
    copy.committed(10, [(1, 1, 1.0, 0), (1, 2, 2.0, 0)])
    copy.committed(13, [(1, 3, 3.0, 0)])  # row 12 is missing
    assert (copy.behind, copy.first_id, copy.rows) == (True, 13, [(1, 3, 3.0, 0)])
    copy.committed(14, [(1, 4, 4.0, 0)])
    assert copy.rows == [(1, 3, 3.0, 0), (1, 4, 4.0, 0)]


def test_packed_rows_leave_the_copy_from_the_front() -> None:
    copy = LiveTail()
    copy.committed(10, [(1, 1, 1.0, 0), (1, 2, 2.0, 0), (1, 3, 3.0, 0)])
    copy.taken(2)
    copy.committed(13, [(1, 4, 4.0, 0)])
    assert (copy.first_id, copy.rows) == (12, [(1, 3, 3.0, 0), (1, 4, 4.0, 0)])


def test_a_copy_past_its_bound_lets_go_of_its_oldest_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tail, "MAX_ROWS", 2)
    copy = LiveTail()
    copy.committed(1, [(1, 1, 1.0, 0), (1, 2, 2.0, 0)])
    assert not copy.behind
    copy.committed(3, [(1, 3, 3.0, 0)])
    assert (copy.behind, copy.first_id, copy.rows) == (True, 2, [(1, 2, 2.0, 0), (1, 3, 3.0, 0)])
