"""Opening the store file safely: one agent per store, schema checks, corruption set aside.

- A second agent on the same store is refused: an exclusive `flock` on
  `<store>.lock`, held for the life of the process (the kernel drops it when
  the process dies, even by kill -9).
- A store written by a newer edge-agent (a downgrade) is refused with a clear
  message and left untouched: it is not corrupt, and the newer version can
  still drain it.
- Before anything writes, the file is inspected on a read-only connection:
  its schema version, whether the last stop was clean, the mark of the last
  sample committed, and the newest row of every table. That is a few pages
  whatever the back-log, so READY comes within seconds on a 2 GiB store even
  after a power loss. The whole file is walked afterwards, in slices, on a
  read-only connection, with the WAL's checkpoints held off until the walk
  is through (maintenance.py, `IntegrityWalk`).
- A file that fails is moved aside by rename, as `<store>.corrupt-<UTC time>`
  with its `-wal` and `-shm` (no copy: the disk may be nearly full). A
  read-only connection neither writes the file nor folds the WAL into it, and
  while one is open a read-write connection that closes does not either: so
  the file set aside is byte for byte what was found, and its WAL holds what
  was found, followed by what this run wrote before the damage came to light.
  What it held is counted on the way, as far as it can still be read, and its
  loss ledger is carried into the fresh store. Never a crash loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final, Literal, TypeVar

import structlog

from edge_agent.errors import StoreError
from edge_agent.store import ledger
from edge_agent.store.ledger import Loss, Totals

log = structlog.get_logger(component="store")

T = TypeVar("T")

SCHEMA_VERSION: Final = 5

# Do not reorder or retype these columns without raising SCHEMA_VERSION and
# writing a migration (_MIGRATIONS): stores outlive agent versions.
_DDL_V1 = """
CREATE TABLE tag (id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE, hz TEXT NOT NULL);
CREATE TABLE reading (id INTEGER PRIMARY KEY AUTOINCREMENT, tag_id INTEGER NOT NULL,
                      ts INTEGER NOT NULL, v, q INTEGER NOT NULL);
CREATE TABLE event (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                    ts INTEGER NOT NULL, item TEXT NOT NULL);
CREATE TABLE message (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, hist INTEGER NOT NULL,
                      oldest INTEGER NOT NULL, items TEXT NOT NULL);
CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE loss (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                   reason TEXT NOT NULL, items INTEGER NOT NULL, first INTEGER, last INTEGER,
                   seq_first INTEGER, seq_last INTEGER);
INSERT INTO counter VALUES ('next_seq', 1), ('clean', 1);
"""
_MIGRATIONS: Final = {
    # v2: alarms active at the last stop, so they are neither raised again nor lost.
    2: """
CREATE TABLE active_alarm (id TEXT PRIMARY KEY, tag TEXT NOT NULL, kind TEXT NOT NULL,
                           item TEXT NOT NULL);
""",
    # v3: the mark of the last sample committed (0: none yet), for the downtime a stop
    # leaves; and the ledger totals of a store set aside, carried into its successor.
    3: """
INSERT OR IGNORE INTO counter VALUES ('last_sample', 0), ('carried_entries', 0),
                                     ('carried_items', 0);
""",
    # v4: what waits, counted in the transactions that change it (O(1) to read, whatever
    # the back-log); events found by topic through an index; the thinning level.
    4: """
CREATE INDEX IF NOT EXISTS event_by_topic ON event (topic, id);
INSERT OR IGNORE INTO counter SELECT 'readings', count(*) FROM reading;
INSERT OR IGNORE INTO counter SELECT 'events', count(*) FROM event;
INSERT OR IGNORE INTO counter SELECT 'messages', count(*) FROM message;
INSERT OR IGNORE INTO counter VALUES ('thin_level', 0);
""",
    # v5: the ledger's totals counted as entries are written (O(1) to read, however long
    # an overload made the ledger).
    5: """
INSERT OR IGNORE INTO counter SELECT 'loss_entries', count(*) FROM loss;
INSERT OR IGNORE INTO counter SELECT 'loss_items', coalesce(sum(items), 0) FROM loss;
""",
}
TABLES: Final = {"tag": 1, "reading": 1, "event": 1, "message": 1, "loss": 1, "active_alarm": 2}
"""Every table, and the schema version that brought it."""

Synchronous = Literal["normal", "full"]


@dataclass(frozen=True, slots=True)
class Held:
    """What a store set aside held and had not delivered, as far as it could be read."""

    items: int = 0
    """Readings, events and the items of packed messages, counted."""
    first_ms: int | None = None
    last_ms: int | None = None
    seq: tuple[int, int] | None = None
    """The `seq` range of its packed, unacknowledged messages."""
    readable: bool = True
    """False when not even the counts could be read."""
    complete: bool = True
    """False when a part of it could not be read (and so is not in `items`)."""
    ledger: list[Loss] = field(default_factory=list)
    totals: Totals = field(default_factory=lambda: Totals(0, 0))


@dataclass(frozen=True, slots=True)
class SetAside:
    """A store file that failed its checks and was moved aside."""

    kept_as: Path
    reason: str
    held: Held


@dataclass(frozen=True, slots=True)
class LastStop:
    """How the agent last left the store: for the stretch it did not sample."""

    clean: bool
    last_sample_ms: int | None
    """The newest sample time committed before the stop; None when unknown."""


@dataclass
class Opened:
    db: sqlite3.Connection
    last_stop: LastStop | None
    """None for a new store."""
    set_aside: SetAside | None


class StoreLock:
    """An exclusive lock on `<store>.lock`; the file records the holder's pid."""

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreError(
                f"{store_path}: another edge-agent (pid {holder}) is using this store; "
                "stop it first, or give this agent its own store.path"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)


def open_database(path: Path, synchronous: Synchronous) -> Opened:
    """Open (or create) the store at `path`; set it aside first if it fails its checks."""
    last_stop: LastStop | None = None
    set_aside: SetAside | None = None
    if path.exists():
        try:
            last_stop = _inspect(path)
        except _Corrupt as corrupt:
            set_aside = set_aside_files(path, corrupt.reason, corrupt.held)
            last_stop = corrupt.last_stop
        else:
            if last_stop is not None and not last_stop.clean:
                keep_found_wal(path)
    try:
        db = open_writable(path, synchronous)
    except _Corrupt as corrupt:  # passed the read-only checks, failed writing: the same
        set_aside = set_aside_files(path, corrupt.reason, corrupt.held)
        db = open_writable(path, synchronous)
    return Opened(db, last_stop, set_aside)


class _Corrupt(Exception):
    def __init__(self, reason: str, held: Held, last_stop: LastStop | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.held = held
        self.last_stop = last_stop


def _inspect(path: Path) -> LastStop | None:
    """Check the file on a read-only connection; None when it holds no store yet."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.OperationalError as exc:  # permissions, a missing directory: not damage
        raise StoreError(f"{path}: cannot open the store: {exc}") from None
    with contextlib.closing(db):
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: this store was written by a newer edge-agent (store schema "
                    f"{version}; this version reads {SCHEMA_VERSION}). It is not damaged and "
                    "was left as it is: run the newer edge-agent to drain it, or move the "
                    "file aside to start afresh."
                )
            if version == 0:
                return None  # created, never written: nothing to check or lose
            last_stop = _last_stop(db)
            for table in (name for name, since in TABLES.items() if version >= since):
                # The path to the newest row of each table: a few pages. The whole tree
                # is walked after READY, in slices (maintenance.py, IntegrityWalk).
                db.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not is_corruption(exc):
                raise StoreError(f"{path}: cannot read the store: {exc}") from None
            raise _Corrupt(str(exc), read_held(db), _try(lambda: _last_stop(db))) from None
    return last_stop


def is_corruption(exc: sqlite3.Error) -> bool:
    """The file is damaged (not merely full, locked or unwritable)."""
    if type(exc) is sqlite3.DatabaseError:  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    return "malformed" in str(exc) or "not a database" in str(exc)


def _last_stop(db: sqlite3.Connection) -> LastStop:
    counters = dict(db.execute("SELECT name, value FROM counter").fetchall())
    return LastStop(bool(counters.get("clean", 0)), counters.get("last_sample") or None)


def _try(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except sqlite3.Error:
        return None


SALVAGE_SLICE: Final = 10_000
"""Rows of a damaged table counted per query."""
SALVAGE_MIN: Final = 64
"""The smallest slice of a damaged table given up on (a page holds about 150 readings)."""

_Span = tuple[int, int | None, int | None]
"""(rows, oldest ts, newest ts)."""
_Count = tuple[int, int | None, int | None, bool]
"""A _Span, and whether every row could be counted."""


def read_held(db: sqlite3.Connection) -> Held:
    """Count what a damaged store still shows, each table on its own and a damaged table
    slice by slice: what cannot be read is left out of the count, never guessed."""
    parts = [
        _count_rows(db, "reading"),
        _count_rows(db, "event"),
        _count_messages(db),
    ]
    seq = _try(lambda: db.execute("SELECT min(seq), max(seq) FROM message").fetchone())
    read = [part for part in parts if part is not None]
    times = [t for _, first, last, _ in read for t in (first, last) if t is not None]
    return Held(
        items=sum(count for count, *_ in read),
        first_ms=min(times, default=None),
        last_ms=max(times, default=None),
        seq=(seq[0], seq[1]) if seq is not None and seq[0] is not None else None,
        readable=bool(read),
        complete=len(read) == len(parts) and all(whole for *_, whole in read),
        ledger=_try(lambda: ledger.entries(db)) or [],
        totals=_try(lambda: ledger.totals(db)) or Totals(0, 0),
    )


def _fetch_one(db: sqlite3.Connection, query: str, args: tuple[int, int]) -> _Span:
    row: _Span = db.execute(query, args).fetchone()
    return row


def _count_messages(db: sqlite3.Connection) -> _Count | None:
    """The items in packed messages, and their oldest sample times."""
    query = (
        "SELECT coalesce(sum(json_array_length(items)), 0), min(oldest), max(oldest) FROM message"
    )
    counted: _Span | None = _try(lambda: db.execute(query).fetchone())
    return None if counted is None else (*counted, True)


def _count_rows(db: sqlite3.Connection, table: str) -> _Count | None:
    query = f"SELECT count(*), min(ts), max(ts) FROM {table}"
    whole: _Span | None = _try(lambda: db.execute(query).fetchone())
    if whole is not None:
        return (*whole, True)
    # A damaged table: counted slice by slice, a failing slice halved down to
    # SALVAGE_MIN rows, so that a broken page costs about the rows it held.
    low_id = _try(lambda: db.execute(f"SELECT min(id) FROM {table}").fetchone()[0])
    high_id = _try(lambda: db.execute(f"SELECT max(id) FROM {table}").fetchone()[0]) or _try(
        lambda: db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()[0]
    )  # the ids ever given, when the newest rows' page is the broken one
    if high_id is None:
        return None
    slices: list[_Span] = []
    for low in range(low_id or 1, high_id + 1, SALVAGE_SLICE):
        slices += _salvage(db, f"{query} WHERE id BETWEEN ? AND ?", low, low + SALVAGE_SLICE - 1)
    if not slices:
        return None
    firsts = [first for _, first, _ in slices if first is not None]
    lasts = [last for _, _, last in slices if last is not None]
    rows = sum(n for n, _, _ in slices)
    return rows, min(firsts, default=None), max(lasts, default=None), False


def _salvage(db: sqlite3.Connection, query: str, low: int, high: int) -> list[_Span]:
    counted = _try(partial(_fetch_one, db, query, (low, high)))
    if counted is not None:
        return [counted]
    if high - low < SALVAGE_MIN:
        return []
    middle = (low + high) // 2
    return _salvage(db, query, low, middle) + _salvage(db, query, middle + 1, high)


def open_writable(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # No checkpoint folds the WAL into the file before the integrity walk is through.
        db.execute("PRAGMA wal_autocheckpoint=0")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # Chosen before anything is written (the WAL switch writes the header):
            # it lets the file shrink back after an outage drains, so the cap holds.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if version < SCHEMA_VERSION:
            steps = [_DDL_V1] if version == 0 else []
            steps += [_MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
            ddl = "".join(steps)
            db.executescript(f"BEGIN; {ddl} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        db.execute("UPDATE counter SET value = 0 WHERE name = 'clean'")
    except sqlite3.DatabaseError as exc:
        held = read_held(db)
        db.close()
        if isinstance(exc, sqlite3.OperationalError) and not is_corruption(exc):
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        raise _Corrupt(str(exc), held) from None
    return db


def in_transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run `work` in one write transaction: all of it is committed, or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        if db.in_transaction:  # SQLITE_FULL has rolled it back already
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def mark_clean(db: sqlite3.Connection) -> None:
    """A clean close: checkpoint the WAL into the file, so the next start skips the quick check."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("UPDATE counter SET value = 1 WHERE name = 'clean'")


FOUND_WAL: Final = "-wal.found"


def keep_found_wal(path: Path) -> None:
    """After an unclean stop, copy the WAL as found (at most about 64 MiB: the WAL held
    back for the integrity walk is bounded, maintenance.py) before anything writes:
    SQLite overwrites the torn frames at its end. The copy
    goes when the integrity walk is through (`drop_found_wal`), or stands in for the WAL
    if the store is set aside."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        shutil.copyfile(wal, path.with_name(path.name + FOUND_WAL))


def drop_found_wal(path: Path) -> None:
    path.with_name(path.name + FOUND_WAL).unlink(missing_ok=True)


def set_aside_files(path: Path, reason: str, held: Held) -> SetAside:
    """Rename the store and its WAL and shared-memory files to `<store>.corrupt-<UTC time>`.

    The WAL kept is the one found at the start, where there was one
    (`keep_found_wal`); what this run wrote after it is kept as `...-wal.run`.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept_as = path.with_name(f"{path.name}.corrupt-{stamp}")
    found = path.with_name(path.name + FOUND_WAL)
    renames = {"": "", "-shm": "-shm"}
    renames.update({"-wal": "-wal.run", FOUND_WAL: "-wal"} if found.exists() else {"-wal": "-wal"})
    for suffix, kept_suffix in renames.items():
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(kept_as.with_name(kept_as.name + kept_suffix))
    log.error(
        "store_set_aside",
        path=str(path),
        kept_as=str(kept_as),
        reason=reason,
        items=held.items if held.readable else "unreadable",
    )
    return SetAside(kept_as, reason, held)
