"""Keeping the store within its size cap and retention, degrading gracefully when full.

The cap counts everything on disk: the database file with its free pages and
the WAL. Past `THIN_AT` of the cap the waiting readings are thinned, one
stretch of `THIN_STRETCH` rows at a time, oldest first, so that an outage
gets coarser, never shorter: in each stretch, per tag and time bucket, the
readings kept are the lowest and the highest (with their real `ts`, so a gas
peak survives), every reading whose quality changed, every reading that
raised or cleared an alarm, and every change of a value that is not a number;
the rest go. When a pass over the whole back-log did not bring it under the
cap, the buckets double (10 s, 20 s, ... up to about a day: `thin_level`,
kept in the store) and the next pass starts again from the oldest. Only past
the largest bucket do the oldest readings go outright, then statistics, then
alarm events, then unsent messages (declared by `seq`). Only readings not yet
packed are thinned, so thinning never makes a `seq` gap. Every drop is
written to the loss ledger in the same transaction; consecutive passes grow
one entry (ledger.py).

Retention drops readings and events older than `store.retention`, from the
oldest, a slice at a time. After a back-log drains, free pages are returned to
the file system (incremental vacuum) a slice at a time, so the file shrinks
back. Every step here is bounded in rows or pages, so no step holds the
store's thread (and with it an alarm's commit) for long.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.store import ledger
from edge_agent.store.items import ALARMED
from edge_agent.store.ledger import Loss

THIN_AT: Final = 0.9
"""Fraction of the cap at which thinning starts."""
THIN_STRETCH: Final = 5_000
"""Waiting readings one thinning step works on."""
BUCKET_MS: Final = 10_000
"""The time bucket of the first thinning level; each level doubles it."""
MAX_LEVEL: Final = 13
"""10 s x 2**13: buckets of about 23 hours. Past it, the oldest readings go outright."""
DROP_SLICE: Final = 5_000
"""Rows one retention or last-resort step deletes at most."""
SHRINK_PAGES: Final = 256
"""Pages one shrinking step gives back."""

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

    def apply(self, db: sqlite3.Connection, *, checkpoints: bool = True) -> None:
        """Make SQLite hold the file within the cap: past it, inserts fail as on a full disk.

        Without `checkpoints` the WAL is never folded into the file automatically
        (while the file is still being checked: database.py).
        """
        db.execute(f"PRAGMA max_page_count={self.db_pages}")
        db.execute(f"PRAGMA wal_autocheckpoint={self.wal_pages if checkpoints else 0}")


def file_bytes(path: Path) -> int:
    """What the cap limits: the database file, free pages included, plus its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def over_cap(db: sqlite3.Connection, budget: Budget) -> bool:
    """Pages in use (seen inside the current transaction) past THIN_AT of the file's share."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return bool(pages - free >= THIN_AT * budget.db_pages)


@dataclass
class Thinning:
    """Where thinning stands: its level (buckets of BUCKET_MS x 2**level) and the next row."""

    level: int = 0
    after_id: int = 0


@dataclass(frozen=True, slots=True)
class Dropped:
    """What one step removed: the loss declared, and how many of its rows were back-fill."""

    loss: Loss
    below: int = 0
    table: str = "reading"


_VICTIMS = """
INSERT INTO temp.victim (id, ts)
SELECT id, ts FROM (
    SELECT id, ts, q, v, typeof(v) IN ('integer', 'real') AS number,
           row_number() OVER (PARTITION BY tag_id, ts / :bucket ORDER BY v, id) AS low,
           row_number() OVER (PARTITION BY tag_id, ts / :bucket ORDER BY v DESC, id) AS high,
           lag(q) OVER (PARTITION BY tag_id ORDER BY id) AS previous_q,
           lag(v) OVER (PARTITION BY tag_id ORDER BY id) AS previous_v
    FROM reading WHERE id BETWEEN :first AND :last)
WHERE low > 1 AND high > 1 AND q & :alarmed = 0 AND previous_q = q
      AND (number OR previous_v IS v)
"""


def thin_step(db: sqlite3.Connection, thinning: Thinning, boundary: int) -> Dropped | None:
    """One thinning step (inside the caller's transaction); None when nothing could go.

    `boundary`: the first live row id, to count how many of the dropped were back-fill.
    """
    while thinning.level <= MAX_LEVEL:
        stretch = db.execute(
            "SELECT min(id), max(id) FROM (SELECT id FROM reading WHERE id > ? ORDER BY id "
            "LIMIT ?)",
            (thinning.after_id, THIN_STRETCH),
        ).fetchone()
        if stretch[0] is None:  # a whole pass done: coarser buckets, from the oldest again
            thinning.level += 1
            thinning.after_id = 0
            db.execute("UPDATE counter SET value = ? WHERE name = 'thin_level'", (thinning.level,))
            continue
        thinning.after_id = stretch[1]
        db.execute("CREATE TEMP TABLE IF NOT EXISTS victim (id INTEGER PRIMARY KEY, ts INTEGER)")
        bounds = {"first": stretch[0], "last": stretch[1], "alarmed": ALARMED}
        db.execute(_VICTIMS, {**bounds, "bucket": BUCKET_MS << thinning.level})
        dropped = _drop_victims(db, boundary)
        if dropped is not None:
            return dropped
    return drop_oldest(db, boundary)


def _drop_victims(db: sqlite3.Connection, boundary: int) -> Dropped | None:
    count, first, last, below = db.execute(
        "SELECT count(*), min(ts), max(ts), count(*) FILTER (WHERE id < ?) FROM temp.victim",
        (boundary,),
    ).fetchone()
    if count:
        db.execute("DELETE FROM reading WHERE id IN (SELECT id FROM temp.victim)")
    db.execute("DELETE FROM temp.victim")
    if not count:
        return None
    return _declare(db, Loss("store full: thinned back-log", count, first, last), below)


def drop_oldest(db: sqlite3.Connection, boundary: int) -> Dropped | None:
    """The last resort, past the largest bucket: the oldest readings outright, then the
    oldest statistics, alarm events, unsent messages; None when nothing is left."""
    count, first, last, below = db.execute(
        "SELECT count(*), min(ts), max(ts), count(*) FILTER (WHERE id < ?) FROM "
        "(SELECT id, ts FROM reading ORDER BY id LIMIT ?)",
        (boundary, DROP_SLICE),
    ).fetchone()
    if count:
        db.execute(
            "DELETE FROM reading WHERE id IN (SELECT id FROM reading ORDER BY id LIMIT ?)",
            (DROP_SLICE,),
        )
        return _declare(
            db, Loss("store full: dropped the oldest readings", count, first, last), below
        )
    row = db.execute(
        "SELECT id, ts, topic FROM event ORDER BY topic = 'alarm', id LIMIT 1"
    ).fetchone()
    if row is not None:
        db.execute("DELETE FROM event WHERE id = ?", (row[0],))
        what = "an alarm event" if row[2] == "alarm" else "a statistics item"
        loss = Loss(f"store full: dropped {what}", 1, row[1], row[1])
        return _declare(db, loss, 0, "event")
    row = db.execute(
        "SELECT seq, oldest, json_array_length(items), "
        "(SELECT max(value ->> 'ts') FROM json_each(items)) FROM message ORDER BY seq LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    seq, oldest, count, newest = row
    db.execute("DELETE FROM message WHERE seq = ?", (seq,))
    loss = Loss("store full: dropped an unsent message", count, oldest, newest, (seq, seq))
    return _declare(db, loss, 0, "message")


def expire_step(
    db: sqlite3.Connection, table: str, before_ms: int, boundary: int
) -> Dropped | None:
    """Drop up to DROP_SLICE of the oldest rows of `table` sampled before `before_ms`."""
    oldest = f"SELECT id, ts FROM {table} ORDER BY id LIMIT {DROP_SLICE}"
    count, first, last, below = db.execute(
        f"SELECT count(*), min(ts), max(ts), count(*) FILTER (WHERE id < ?) FROM ({oldest}) "
        "WHERE ts < ?",
        (boundary, before_ms),
    ).fetchone()
    if not count:
        return None
    db.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM ({oldest}) WHERE ts < ?)", (before_ms,)
    )
    what = "readings" if table == "reading" else "alarm events and statistics"
    loss = Loss(f"older than the store retention: {what}", count, first, last)
    return _declare(db, loss, below, table)


_COUNTERS = {"reading": "readings", "event": "events", "message": "messages"}


def _declare(db: sqlite3.Connection, loss: Loss, below: int, table: str = "reading") -> Dropped:
    removed = 1 if table == "message" else loss.items
    db.execute("UPDATE counter SET value = value - ? WHERE name = ?", (removed, _COUNTERS[table]))
    ledger.record(db, loss)
    return Dropped(loss, below, table)


def mostly_free(db: sqlite3.Connection) -> bool:
    """A quarter or more of the file is free pages (and at least 1 MiB of them): worth shrinking."""
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return bool(free * 4 >= pages and free * page_size >= 1024 * 1024)


def shrink_step(db: sqlite3.Connection) -> bool:
    """Give up to SHRINK_PAGES free pages back and truncate the WAL; True while free pages
    remain."""
    # Through execute() Python steps this pragma once, freeing a single page;
    # executescript() runs it to completion.
    db.executescript(f"PRAGMA incremental_vacuum({SHRINK_PAGES});")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return bool(db.execute("PRAGMA freelist_count").fetchone()[0])


BYTES_PER_READING = 28
"""Measured on-disk cost of one waiting reading (float value, 200 tags; docs/performance.md)."""


def outage_capacity_s(max_bytes: int, readings_per_s: float, page_size: int = 4096) -> float:
    """How long an outage the cap holds at this rate before thinning starts."""
    usable = Budget.of(max_bytes, page_size).db_pages * page_size * THIN_AT
    return usable / (BYTES_PER_READING * readings_per_s) if readings_per_s else float("inf")
