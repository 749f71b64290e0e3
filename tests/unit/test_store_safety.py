"""The store under misuse and damage: one agent per store, downgrades, corruption, rollback,
the size cap, retention and a full disk. Every loss lands in the ledger; no seq is reused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from stores import SyncStore

from edge_agent.errors import StoreError
from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Reading
from edge_agent.store.capacity import file_bytes


def open_store(path: Path, **settings: object) -> SyncStore:
    return SyncStore.open(path, max_items=50, **settings)


def fill(store: SyncStore, count: int, tags: int = 4, start_ms: int = 1_000_000) -> None:
    for i in range(count):
        store.add_reading(Reading(f"T{i % tags}", "HZ01", start_ms + i, float(i), Quality.GOOD))
    store.flush()


def publish_all(store: SyncStore) -> list[int]:
    """Pack everything as the uplink would (the seq mark raised first), return the seqs."""
    store.mark_live()
    return [message.seq for message in store.pack_all()]


def reasons(store: SyncStore) -> list[str]:
    entries, _ = store.losses()
    return [loss.reason for loss in entries]


def test_a_second_agent_on_the_same_store_is_refused(tmp_path: Path) -> None:
    first = open_store(tmp_path / "store.db")
    with pytest.raises(StoreError, match="another edge-agent"):
        open_store(tmp_path / "store.db")
    first.close()
    open_store(tmp_path / "store.db").close()  # free again once the first is gone


def test_a_store_from_a_newer_version_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer edge-agent"):
        open_store(path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_corrupt_store_is_set_aside_and_numbering_continues(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 120)
    published = publish_all(store)
    store.close()
    path.write_bytes(b"this is not a database" * 100)

    fresh = open_store(path)
    fill(fresh, 10)
    again = publish_all(fresh)
    assert again[0] == max(published) + 1
    assert len(list(tmp_path.glob("store.db.corrupt-*"))) == 1
    assert any(r.startswith("store set aside") for r in reasons(fresh))


def test_a_rolled_back_store_never_reuses_a_published_seq(tmp_path: Path) -> None:
    """Imitates a power loss: an older copy of the store files comes back."""
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 60)
    publish_all(store)
    store.close()
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(path, backup / "store.db")
    store = open_store(path)
    fill(store, 200)
    seen_by_platform = publish_all(store)
    store.close()
    shutil.copy(backup / "store.db", path)  # the rollback; the seq mark beside it stays

    rolled_back = open_store(path)
    fill(rolled_back, 10)
    after = publish_all(rolled_back)
    assert after[0] == max(seen_by_platform) + 1
    entries, _ = rolled_back.losses()
    assert entries[-1].seq == (min(seen_by_platform), max(seen_by_platform))


def test_reopening_after_a_clean_or_crashed_stop_skips_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 60)
    first = publish_all(store)
    store.close()
    store = open_store(path)
    fill(store, 60)
    second = publish_all(store)
    # A crash: no close and no clean mark.
    store.crash()
    crashed = open_store(path)
    fill(crashed, 60)
    third = publish_all(crashed)
    assert first + second + third == list(range(1, len(first + second + third) + 1))
    assert reasons(crashed) == []


def test_the_size_cap_thins_the_oldest_readings_and_keeps_alarms(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db", max_bytes=1024 * 1024)
    store.add_alarm(AlarmEvent("a1", "T0", "HZ01", 1, AlarmKind.H, AlarmState.RAISED, 30.0, 25.0))
    for _ in range(10):
        fill(store, 5000)
        store.maintain(now_ms=1_000_000)
    entries, totals = store.losses()
    assert entries, "thinning must have happened"
    assert all(e.reason == "store full: thinned back-log" for e in entries)
    (waiting,) = store.engine._db.execute("SELECT count(*) FROM reading").fetchone()
    assert waiting + totals.items == 50_000, "the ledger counts exactly what was thinned"
    (alarms,) = store.engine._db.execute("SELECT count(*) FROM event").fetchone()
    assert alarms == 1


def test_inserts_past_the_cap_are_kept_in_memory_and_room_is_made(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db", max_bytes=256 * 1024)
    for _ in range(40):
        fill(store, 1000)
    assert store.unflushed == 0 or store.disk_full
    store.maintain(now_ms=1_000_000)
    fill(store, 10)
    assert not store.disk_full
    assert reasons(store)


def test_readings_past_the_retention_are_dropped_and_declared(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db", retention_s=60.0)
    fill(store, 100, start_ms=0)
    fill(store, 100, start_ms=100_000)
    store.maintain(now_ms=150_000)
    entries, totals = store.losses()
    assert (entries[-1].reason, totals.items) == ("older than the store retention: readings", 100)


def test_the_file_shrinks_back_after_a_back_log_drains(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 100_000)
    grown = file_bytes(path)
    for seq in publish_all(store):
        store.ack(seq)
    store.flush()
    store.maintain(now_ms=1_000_000)
    assert file_bytes(path) < grown / 4
