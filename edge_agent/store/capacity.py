"""Keeping the store within its size cap and retention, degrading gracefully when full.

The cap counts everything on disk: the database file with its free pages and
the WAL. Past `THIN_AT` of the cap the oldest waiting readings are thinned:
in the oldest tenth of the back-log every second reading of each tag is
dropped, so an outage keeps its shape at a coarser step, and each pass over
the same stretch halves it again. Only readings not yet packed are thinned,
so thinning never makes a `seq` gap. Alarm events and packed messages are
dropped only when no reading is left to thin. Every drop is written to the
loss ledger in the same transaction.

After a back-log drains, the WAL is truncated and free pages are returned to
the file system (incremental vacuum), so the file shrinks back.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edge_agent.store import ledger
from edge_agent.store.ledger import Loss

THIN_AT = 0.9
"""Fraction of the cap at which thinning starts."""
THIN_MIN_ROWS = 1000
"""The smallest stretch of readings one thinning pass works on."""


WAL_SHARE = 0.1
"""Share of the cap kept for the WAL (at most WAL_MAX_PAGES); the database file gets the rest."""
WAL_MAX_PAGES = 1000
"""SQLite's own default checkpoint size (4 MiB of 4 KiB pages): a small WAL keeps a full disk
recoverable, because a checkpointed WAL is reused in place instead of growing."""
DISK_RESERVE = 512 * 1024
"""Free disk space the store leaves to others when the disk is smaller than its cap."""


@dataclass(frozen=True, slots=True)
class Budget:
    """How the cap is split between the database file and its WAL."""

    page_size: int
    db_pages: int
    wal_pages: int

    @classmethod
    def of(cls, max_bytes: int, page_size: int) -> Budget:
        wal_pages = min(max(int(max_bytes * WAL_SHARE) // page_size, 16), WAL_MAX_PAGES)
        return cls(page_size, max(max_bytes // page_size - wal_pages, 16), wal_pages)

    def fitted(self, path: Path) -> Budget:
        """This budget, or a smaller one when the disk holds less than the cap.

        A disk that would fill before the cap is treated like the cap: the
        store thins its oldest back-log while the deletes still have room to
        be written, and leaves DISK_RESERVE free.
        """
        disk = os.statvfs(path.parent)
        room = path.stat().st_size + disk.f_bavail * disk.f_frsize - DISK_RESERVE
        if room >= (self.db_pages + self.wal_pages) * self.page_size:
            return self
        wal_pages = max(int(room * WAL_SHARE) // self.page_size, 16)
        return Budget(self.page_size, max(room // self.page_size - wal_pages, 16), wal_pages)

    def apply(self, db: sqlite3.Connection) -> None:
        """Make SQLite hold the file within the cap: past it, inserts fail as on a full disk."""
        db.execute(f"PRAGMA max_page_count={self.db_pages}")
        db.execute(f"PRAGMA wal_autocheckpoint={self.wal_pages}")


def file_bytes(path: Path) -> int:
    """What the cap limits: the database file, free pages included, plus its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def over_cap(db: sqlite3.Connection, budget: Budget) -> bool:
    """Pages in use (seen inside the current transaction) past THIN_AT of the file's share."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return bool(pages - free >= THIN_AT * budget.db_pages)


def thin_oldest(db: sqlite3.Connection) -> Loss | None:
    """One thinning pass (inside the caller's transaction); None when no reading is left."""
    (count,) = db.execute("SELECT count(*) FROM reading").fetchone()
    if count == 0:
        return None
    span = max(count // 10, min(THIN_MIN_ROWS, count))
    low, high = db.execute(
        "SELECT min(id), max(id) FROM (SELECT id FROM reading ORDER BY id LIMIT ?)", (span,)
    ).fetchone()
    victims: tuple[str, tuple[int, ...]] = (
        "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY tag_id ORDER BY id) AS n "
        "FROM reading WHERE id BETWEEN ? AND ?) WHERE n % 2 = 0",
        (low, high),
    )
    loss = _delete_readings(db, *victims)
    if loss.items == 0:  # one reading per tag in the stretch: the oldest half goes outright
        loss = _delete_readings(
            db, "SELECT id FROM reading ORDER BY id LIMIT ?", (max(span // 2, 1),)
        )
    ledger.record(db, loss)
    return loss


def _delete_readings(db: sqlite3.Connection, victims: str, args: tuple[int, ...]) -> Loss:
    items, first, last = db.execute(
        f"SELECT count(*), min(ts), max(ts) FROM reading WHERE id IN ({victims})", args
    ).fetchone()
    db.execute(f"DELETE FROM reading WHERE id IN ({victims})", args)
    return Loss("store full: thinned back-log", items, first, last)


def drop_oldest_event_or_message(db: sqlite3.Connection) -> Loss | None:
    """When no reading is left: the oldest waiting event (statistics before alarms), else
    the oldest unsent message."""
    row = db.execute(
        "SELECT id, ts, topic FROM event ORDER BY topic = 'alarm', id LIMIT 1"
    ).fetchone()
    if row is not None:
        db.execute("DELETE FROM event WHERE id = ?", (row[0],))
        what = "an alarm event" if row[2] == "alarm" else "a statistics item"
        loss = Loss(f"store full: dropped {what}", 1, row[1], row[1])
    else:
        row = db.execute("SELECT seq, oldest FROM message ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        db.execute("DELETE FROM message WHERE seq = ?", (row[0],))
        loss = Loss("store full: dropped an unsent message", 0, None, None, (row[0], row[0]))
    ledger.record(db, loss)
    return loss


def drop_expired(db: sqlite3.Connection, before_ms: int) -> list[Loss]:
    """Drop waiting readings and events sampled before `before_ms` (the retention)."""
    losses = []
    for table, what in (("reading", "readings"), ("event", "alarm events and statistics")):
        items, first, last = db.execute(
            f"SELECT count(*), min(ts), max(ts) FROM {table} WHERE ts < ?", (before_ms,)
        ).fetchone()
        if items:
            db.execute(f"DELETE FROM {table} WHERE ts < ?", (before_ms,))
            loss = Loss(f"older than the store retention: {what}", items, first, last)
            ledger.record(db, loss)
            losses.append(loss)
    return losses


def mostly_free(db: sqlite3.Connection) -> bool:
    """A quarter or more of the file is free pages (and at least 1 MiB of them): worth shrinking."""
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return bool(free * 4 >= pages and free * page_size >= 1024 * 1024)


def shrink(db: sqlite3.Connection) -> None:
    """Give free pages back and truncate the WAL; call when little is waiting."""
    # Through execute() Python steps this pragma once, freeing a single page;
    # executescript() runs it to completion.
    db.executescript("PRAGMA incremental_vacuum;")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


BYTES_PER_READING = 28
"""Measured on-disk cost of one waiting reading (float value, 200 tags; docs/performance.md)."""


def outage_capacity_s(max_bytes: int, readings_per_s: float, page_size: int = 4096) -> float:
    """How long an outage the cap holds at this rate before thinning starts."""
    usable = Budget.of(max_bytes, page_size).db_pages * page_size * THIN_AT
    return usable / (BYTES_PER_READING * readings_per_s) if readings_per_s else float("inf")
