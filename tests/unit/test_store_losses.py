"""What the store declares: the stretch a stop leaves, a store set aside, what a failing disk
drops; and that no call raises for what SQLite does and no seq is reused after a crash."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from stores import OneMessage, SyncStore

from edge_agent.model import Quality, Reading
from edge_agent.store import Kind, Loss, StoredMessage, buffer
from edge_agent.store.hwm import HighWaterMark

T0 = 1_764_441_000_000


def open_store(path: Path) -> SyncStore:
    return SyncStore.open(path, max_items=50)


def fill(store: SyncStore, count: int, start_ms: int = T0) -> None:
    for i in range(count):
        store.add_reading(Reading(f"T{i % 4}", "HZ01", start_ms + i, float(i), Quality.GOOD))
    store.flush()


def pack(store: SyncStore) -> StoredMessage:
    message = store.pack_next(now_ms=T0 + 10**6, linger_ms=0)
    assert message is not None
    return message


def crash_copy(path: Path, into: Path) -> Path:
    """The files a kill -9 leaves: copied while the store is open (closing it, even by
    garbage collection, would checkpoint the WAL and hide the crash)."""
    into.mkdir()
    for suffix in ("", "-wal", ".seq"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copy(source, into / source.name)
    return into / path.name


def digest(*files: Path) -> list[str]:
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def stretches(store: SyncStore) -> list[Loss]:
    return [loss for loss in store.losses()[0] if loss.reason.startswith("not sampling")]


def test_a_clean_stop_leaves_a_stretch_open_until_the_first_sample_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    store.sampled(T0 + 5_000)
    fill(store, 10)
    store.close()

    store = open_store(path)
    (opened,) = stretches(store)
    assert opened == Loss("not sampling: agent stopped", first_ms=T0 + 5_000)
    assert opened.as_json() == {"reason": "not sampling: agent stopped", "first": T0 + 5_000}
    store.sampled(T0 + 60_000)
    store.sampled(T0 + 61_000)
    store.flush()
    assert stretches(store) == [Loss("not sampling: agent stopped", 0, T0 + 5_000, T0 + 60_000)]
    store.close()


def test_an_unclean_stop_is_declared_from_the_last_mark_that_survived(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    store.sampled(T0 + 1_000)
    store.flush()
    copy = crash_copy(path, tmp_path / "crashed")
    store.sampled(T0 + 2_000)  # after the crash: never committed there
    store.close()

    crashed = open_store(copy)
    (stretch,) = stretches(crashed)
    assert stretch.reason == "not sampling: unclean stop (crash, kill or power loss)"
    assert (stretch.first_ms, stretch.last_ms) == (T0 + 1_000, None)
    crashed.close()


def test_a_store_never_sampled_on_a_trusted_clock_declares_no_stretch(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(path).close()
    store = open_store(path)
    assert stretches(store) == []
    store.close()


def test_a_seq_packed_before_a_crash_is_guarded_before_its_first_resend(tmp_path: Path) -> None:
    """kill -9 between packing and guard_published, then a power loss: without the guard on
    resends, the rolled-back store would give the resent seq to other items."""
    path = tmp_path / "store.db"
    store = open_store(path)
    store.mark_live()
    fill(store, 10)
    packed = store.pack_next(now_ms=T0 + 10**6, linger_ms=0)
    assert packed is not None
    copy = crash_copy(path, tmp_path / "crashed")  # the mark was never raised
    store.close()

    restarted = open_store(copy)
    (resend,) = restarted.engine.take(Resends(), set(), T0, 0)  # before its first publish
    mark = HighWaterMark(copy.with_name("store.db.seq"))
    assert mark.value == resend.seq == packed.seq
    mark.close()
    restarted.close()


class Resends(OneMessage):
    """Takes what is offered again, packs nothing new."""

    def allows(self, kind: Kind) -> bool:
        return False

    def admit(self, message: StoredMessage, *, packed: bool) -> bool:
        return True


def corrupt_page(path: Path, page: int) -> None:
    with path.open("r+b") as file:
        file.seek(page * 4096)
        file.write(b"\xff" * 4096)


def test_a_store_damaged_after_a_clean_stop_is_set_aside_unchanged_and_what_it_held_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    store.record_loss(Loss("store full: thinned back-log", 7, T0, T0 + 1))
    fill(store, 30_000)
    store.mark_live()
    sent = [pack(store).seq for _ in range(3)]
    store.ack(sent[0])
    store.close()
    pages = path.stat().st_size // 4096
    corrupt_page(path, pages // 2)
    before = digest(path)

    fresh = open_store(path)  # READY at once: the walk finds the damage after it
    fresh.maintain(T0)
    (aside,) = tmp_path.glob("store.db.corrupt-*Z")
    assert digest(aside) == before, "the file set aside is byte for byte what was found"
    entries, totals = fresh.losses()
    assert entries[0] == Loss("store full: thinned back-log", 7, T0, T0 + 1), "carried over"
    (declared,) = [e for e in entries if e.reason.startswith("store set aside")]
    assert declared.seq == (sent[1], sent[2]), "only what was not acknowledged"
    assert 0 < declared.items < 30_000, "counted where readable, never guessed"
    assert declared.first_ms is not None
    assert declared.first_ms >= T0
    assert totals.items == 7 + declared.items
    fill(fresh, 10)
    fresh.mark_live()
    assert pack(fresh).seq == sent[2] + 1
    fresh.close()


def test_a_store_damaged_before_a_crash_is_set_aside_with_what_was_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 30_000)
    store.engine._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fill(store, 100)
    copy = crash_copy(path, tmp_path / "crashed")
    store.close()
    corrupt_page(copy, copy.stat().st_size // 4096 // 2)
    wal = copy.with_name("store.db-wal")
    found_wal = wal.read_bytes()
    before = digest(copy)

    fresh = open_store(copy)
    fresh.maintain(T0)
    aside = next(tmp_path.joinpath("crashed").glob("store.db.corrupt-*[0-9Z]"))
    assert digest(aside) == before
    assert aside.with_name(aside.name + "-wal").read_bytes() == found_wal, "the WAL as found"
    assert aside.with_name(aside.name + "-wal.run").exists(), "and what this run wrote"
    assert any(e.reason.startswith("store set aside") for e in fresh.losses()[0])
    fresh.close()


def test_a_store_damaged_while_running_is_set_aside_when_a_query_meets_the_damage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    fill(store, 20_000)
    store.maintain(T0)  # the first walk is through: the damage comes later
    store.engine._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_page(path, path.stat().st_size // 4096 // 2)
    store.engine._db.execute("PRAGMA shrink_memory")  # forget the pages cached before
    store.mark_live()
    store.pack_all()  # packing meets the damaged pages, and does not raise
    assert list(tmp_path.glob("store.db.corrupt-*"))
    assert any(e.reason.startswith("store set aside") for e in store.losses()[0])
    store.add_reading(Reading("LATE", "HZ01", T0 + 99, 1.0, Quality.GOOD))
    packed = store.pack_next()
    assert packed is not None
    assert "LATE" in packed.items_json
    store.close()


def test_a_commit_that_meets_damage_goes_into_the_fresh_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path / "store.db")
    fill(store, 10)
    write = store.engine._write
    damaged = iter([sqlite3.DatabaseError("database disk image is malformed")])

    def once_damaged(batch: object, readings: object) -> object:
        error = next(damaged, None)
        if error is not None:
            raise error
        return write(batch, readings)  # type: ignore[arg-type]

    monkeypatch.setattr(store.engine, "_write", once_damaged)
    store.add_reading(Reading("LATE", "HZ01", T0 + 99, 1.0, Quality.GOOD))
    store.flush()
    assert store.unflushed == 0
    assert list(tmp_path.glob("store.db.corrupt-*"))
    store.mark_live()
    assert "LATE" in (pack(store).items_json)
    store.close()


def test_no_call_raises_when_the_connection_is_gone(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db")
    fill(store, 10)
    store.engine._db.close()  # every query now raises sqlite3.ProgrammingError
    store.add_reading(Reading("T", "HZ01", T0, 1.0, Quality.GOOD))
    store.flush()
    assert store.write_error is not None
    assert store.pack_next(now_ms=T0, linger_ms=0) is None
    assert store.backlog(0).messages == 0
    assert store.active_alarms() == []
    store.maintain(T0)
    store.close()


def test_a_failing_disk_holds_readings_in_memory_within_the_bound_and_declares_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffer, "MAX_READINGS", 100)
    store = open_store(tmp_path / "store.db")
    failing = sqlite3.OperationalError("disk I/O error")

    def cannot_write(batch: object, readings: object) -> None:
        raise failing

    monkeypatch.setattr(store.engine, "_write", cannot_write)
    fill(store, 250)
    assert store.write_error == "OperationalError: disk I/O error"
    assert len(store._buffer.readings) == 100
    monkeypatch.undo()
    store.flush()
    assert store.write_error is None
    (loss,) = store.losses()[0]
    assert loss == Loss("store cannot write: readings not stored", 150, T0, T0 + 149)
    assert store.backlog(0, connected=False).messages == 2  # the 100 kept, 50 a message
    store.close()


def test_while_the_uplink_is_down_everything_stored_is_back_log(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db")
    store.mark_live()
    fill(store, 120)
    assert store.backlog(0).messages == 0, "connected: live readings on their way"
    down = store.backlog(0, connected=False)
    assert (down.messages, down.oldest_ms) == (3, T0)
    store.close()


def test_a_recurring_loss_grows_one_entry_and_other_reasons_stay_apart(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db")
    missed = "not sampling: plc-1 missed poll deadlines"
    for second in range(5):
        store.record_loss(Loss(missed, 10, T0 + second * 1000, T0 + second * 1000))
    store.record_loss(Loss("not sampling: plc-2 missed poll deadlines", 1, T0, T0))
    store.record_loss(Loss(missed, 10, T0 + 3_600_000, T0 + 3_600_000))
    store.flush()
    entries, totals = store.losses()
    assert [(e.reason, e.items, e.first_ms, e.last_ms) for e in entries] == [
        (missed, 50, T0, T0 + 4000),
        ("not sampling: plc-2 missed poll deadlines", 1, T0, T0),
        (missed, 10, T0 + 3_600_000, T0 + 3_600_000),
    ]
    assert totals.items == 61
    store.close()


def test_losses_of_devices_missing_deadlines_in_turn_grow_one_entry_each(tmp_path: Path) -> None:
    # Twenty overloaded devices: an entry per missed poll would fill the newest-100 view in
    # a fraction of a second and grow the ledger without end.
    store = open_store(tmp_path / "store.db")
    reasons = [f"not sampling: plc-{device} missed poll deadlines" for device in range(20)]
    for poll in range(10):
        for reason in reasons:
            store.record_loss(Loss(reason, 100, T0 + poll * 20, T0 + poll * 20))
        store.flush()
    entries, totals = store.losses()
    assert [(e.reason, e.items, e.first_ms, e.last_ms) for e in entries] == [
        (reason, 1000, T0, T0 + 180) for reason in reasons
    ]
    assert (totals.entries, totals.items) == (20, 20_000)
    store.close()


def test_the_ledger_totals_carry_over_a_schema_that_did_not_count_them(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(path)
    store.record_loss(Loss("not sampling: plc-1 missed poll deadlines", 7, T0, T0))
    store.record_loss(Loss("seq skipped: test", seq=(3, 4)))
    store.close()
    with sqlite3.connect(path) as db:  # what an agent of schema 4 left behind
        db.execute("DELETE FROM counter WHERE name IN ('loss_entries', 'loss_items')")
        db.execute("PRAGMA user_version = 4")
    store = open_store(path)
    store.record_loss(Loss("disk full: readings not stored", 5, T0, T0))
    _, totals = store.losses()
    assert (totals.entries, totals.items) == (3, 12)
    store.close()


def test_the_wal_held_back_for_the_integrity_walk_stays_within_its_bound(
    tmp_path: Path,
) -> None:
    # Until the walk has checked the file, the WAL is not folded into it (a damaged
    # store is set aside as found); but the cap, which counts the WAL, comes first.
    path = tmp_path / "store.db"
    store = SyncStore.open(path, max_items=50, max_bytes=4 * 1024**2)
    wal = path.with_name("store.db-wal")
    fill(store, 60_000)  # written before the walk's first step: all of it in the WAL
    held = wal.stat().st_size
    assert held > 1.6 * 1024**2, "more than the bound: 4 x the WAL's budget of 10 % of the cap"

    assert store.engine.maintain(T0), "one step of the walk; more to walk"
    assert not store.engine._walk.done
    fill(store, 30_000)
    assert wal.stat().st_size <= held, "checkpoints resumed: the WAL is reused, not grown"
    store.close()
