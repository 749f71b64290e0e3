"""Opening the store file safely: one agent per store, schema checks, corruption set aside.

- A second agent on the same store is refused: an exclusive `flock` on
  `<store>.lock`, held for the life of the process (the kernel drops it when
  the process dies, even by kill -9).
- A store written by a newer edge-agent (a downgrade) is refused with a clear
  message and left untouched: it is not corrupt, and the newer version can
  still drain it.
- A store that cannot be opened as SQLite, or fails `PRAGMA quick_check`
  after an unclean stop, is moved aside as `<store>.corrupt-<UTC time>` (kept
  for forensics) and a fresh store is started; the caller records the loss.
  Never a crash loop.

The quick check reads the whole file, so it runs only after an unclean stop
(kill -9, power loss), not after a clean one: start-up stays independent of
the back-log in the usual case.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import structlog

from edge_agent.errors import StoreError

log = structlog.get_logger(component="store")

SCHEMA_VERSION: Final = 2

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
}

Synchronous = Literal["normal", "full"]


@dataclass(frozen=True, slots=True)
class SetAside:
    """A store file that failed its checks and was moved aside."""

    kept_as: Path
    reason: str
    lowest_unsent_seq: int | None


@dataclass
class Opened:
    db: sqlite3.Connection
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
    """Open (or create) the store at `path`; set it aside if it is corrupt."""
    try:
        return Opened(_open_checked(path, synchronous), None)
    except _Corrupt as exc:
        set_aside = _set_aside(path, str(exc))
        return Opened(_open_checked(path, synchronous), set_aside)


class _Corrupt(Exception):
    pass


def _open_checked(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # Read the version before anything writes: a newer store must stay untouched.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{path}: this store was written by a newer edge-agent (store schema {version}; "
                f"this version reads {SCHEMA_VERSION}). It is not damaged and was left as it is: "
                "run the newer edge-agent to drain it, or move the file aside to start afresh."
            )
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
        (clean,) = db.execute("SELECT value FROM counter WHERE name = 'clean'").fetchone()
        if not clean:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise _Corrupt(f"quick_check: {result}")
        for table in ("tag", "reading", "event", "message", "loss", "active_alarm"):
            db.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchall()
        db.execute("UPDATE counter SET value = 0 WHERE name = 'clean'")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _Corrupt(str(exc)) from None
    return db


def mark_clean(db: sqlite3.Connection) -> None:
    """A clean close: checkpoint the WAL into the file, so the next start skips the quick check."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("UPDATE counter SET value = 1 WHERE name = 'clean'")


def _set_aside(path: Path, reason: str) -> SetAside:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept_as = path.with_name(f"{path.name}.corrupt-{stamp}")
    lowest = _lowest_unsent_seq(path)
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(kept_as.with_name(kept_as.name + suffix))
    log.error("store_set_aside", path=str(path), kept_as=str(kept_as), reason=reason)
    return SetAside(kept_as, reason, lowest)


def _lowest_unsent_seq(path: Path) -> int | None:
    """Best effort: the lowest `seq` still waiting in a damaged store, if it can be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (lowest,) = db.execute("SELECT min(seq) FROM message").fetchone()
            return int(lowest) if lowest is not None else None
    except sqlite3.Error:
        return None
