"""The store's part in alarms: active alarms kept across restarts, statistics packed
on their own topic, priority and first-in-first-out packing, and the v1 -> v2 migration."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from stores import SyncStore

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Reading, StatItem
from edge_agent.store.database import SCHEMA_VERSION

RAISED = AlarmEvent("a1", "HZ01.GT201", "HZ01", 5, AlarmKind.H, AlarmState.RAISED, 27.5, 25.0)


def open_store(path: Path) -> SyncStore:
    return SyncStore.open(path, max_items=100)


def test_an_active_alarm_is_kept_across_a_restart_until_its_clear(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    store.add_alarm(RAISED)
    store.flush()
    store.close()
    store = open_store(tmp_path / "s.db")
    assert store.active_alarms() == [RAISED]
    store.add_alarm(dataclasses.replace(RAISED, state=AlarmState.CLEARED, ts_ms=9, value=20.0))
    store.flush()
    assert store.active_alarms() == []
    store.close()


def test_an_active_alarm_survives_a_crash_once_flushed(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    store.add_alarm(RAISED)
    store.flush()
    store.crash()  # no close: the process dies here
    again = open_store(tmp_path / "s.db")
    assert again.active_alarms() == [RAISED]
    again.close()


def stat(tag: str) -> StatItem:
    return StatItem(tag, "HZ01", 300_000, 300, 1.0, 3.0, 2.0, 10, 1)


def test_statistics_go_on_their_own_topic_after_alarms_and_live_readings(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    store.mark_live()
    store.add_stat(stat("A"))
    store.add_reading(Reading("A", "HZ01", 1, 1.0, Quality.GOOD))
    store.add_alarm(RAISED)
    topics = []
    while (message := store.pack_next(now_ms=10_000, linger_ms=0)) is not None:
        topics.append(message.topic)
        if message.topic == "stat":
            (item,) = json.loads(message.items_json)
            assert item == {
                "tag": "A",
                "hz": "HZ01",
                "ts": 300_000,
                "win": 300,
                "min": 1.0,
                "max": 3.0,
                "avg": 2.0,
                "n": 10,
                "bad": 1,
            }
    assert topics == ["alarm", "rt", "stat"]
    store.close()


def backlog_then_alarm(path: Path) -> SyncStore:
    store = open_store(path)
    for ts in range(50):
        store.add_reading(Reading("A", "HZ01", ts, float(ts), Quality.GOOD))
    store.mark_live()  # what waited is back-fill now
    store.add_alarm(RAISED)
    return store


def test_alarms_are_packed_ahead_of_back_fill(tmp_path: Path) -> None:
    store = backlog_then_alarm(tmp_path / "s.db")
    first = store.pack_next(now_ms=10_000, linger_ms=0)
    assert first is not None
    assert (first.topic, first.hist) == ("alarm", False)
    store.close()


def test_without_priority_back_fill_goes_first(tmp_path: Path) -> None:
    store = backlog_then_alarm(tmp_path / "s.db")
    first = store.pack_next(now_ms=10_000, linger_ms=0, priority=False)
    second = store.pack_next(now_ms=10_000, linger_ms=0, priority=False)
    assert first is not None
    assert second is not None
    assert [(m.topic, m.hist) for m in (first, second)] == [("rt", True), ("alarm", False)]
    store.close()


def test_without_bulk_only_alarms_are_packed(tmp_path: Path) -> None:
    store = backlog_then_alarm(tmp_path / "s.db")
    only_alarms = frozenset({"alarm"})
    first = store.pack_next(now_ms=10_000, linger_ms=0, kinds=only_alarms)
    assert first is not None
    assert first.topic == "alarm"
    assert store.pack_next(now_ms=10_000, linger_ms=0, kinds=only_alarms) is None
    store.close()


def test_a_smaller_message_budget_packs_fewer_readings(tmp_path: Path) -> None:
    store = backlog_then_alarm(tmp_path / "s.db")
    store.pack_next(now_ms=10_000, linger_ms=0)  # the alarm
    small = store.pack_next(now_ms=10_000, linger_ms=0, max_bytes=1024)
    assert small is not None
    assert len(small.items_json) <= 1024
    assert 1 < len(json.loads(small.items_json)) < 50
    store.close()


def test_a_version_1_store_is_migrated_in_place_and_keeps_what_waits(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = open_store(path)
    store.add_reading(Reading("A", "HZ01", 1, 1.0, Quality.GOOD))
    store.close()
    with sqlite3.connect(path) as db:  # what an agent of schema 1 left behind
        db.execute("DROP TABLE active_alarm")
        db.execute("PRAGMA user_version = 1")
    store = open_store(path)
    assert store.active_alarms() == []
    assert store.backlog(in_flight=0).messages == 1
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_after_a_reconnect_unacknowledged_alarms_are_resent_first(tmp_path: Path) -> None:
    store = backlog_then_alarm(tmp_path / "s.db")
    backfill = store.pack_next(now_ms=10_000, linger_ms=0, priority=False)
    alarm = store.pack_next(now_ms=10_000, linger_ms=0, priority=False)
    assert backfill is not None
    assert alarm is not None
    assert alarm.seq > backfill.seq
    assert [m.seq for m in store.unsent(set(), 10)] == [alarm.seq, backfill.seq]
    assert [m.seq for m in store.unsent(set(), 10, alarms_first=False)] == [
        backfill.seq,
        alarm.seq,
    ]
    store.close()
