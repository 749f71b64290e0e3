"""The store-and-forward buffer: one SQLite file in WAL mode.

Invariants
----------
1. Nothing leaves the store before its PUBACK. Readings and events wait as rows
   until they are packed; a packed message waits as a row until `ack()`.
2. `seq` is given when a message is packed, in the same transaction that moves
   its items out of the waiting tables and raises the counter. A message is
   committed before it is first handed to MQTT, so every copy of a `seq`
   carries the same items and the same `hist`, and a `seq` is never reused.
3. Back-fill leaves oldest first: unacknowledged messages go again in `seq`
   order before anything new is packed.
4. Waiting readings are never loaded whole into memory: packing reads one
   message's worth by primary-key range.

What a crash costs
------------------
Readings are buffered in memory and committed at least every
`commit_interval` (and before every packing), alarms at once. A kill -9 loses
the readings of at most the last `commit_interval`; everything committed
survives it (WAL with synchronous=NORMAL survives a process crash). An ack
committed late only means a duplicate `seq` is sent again, which the platform
drops. A power loss may roll back the last commits (synchronous=NORMAL).

On-disk layout (schema version in PRAGMA user_version; do not reorder or
retype these columns without raising the version)
---------------------------------------------------------------------------
- `tag(id, tag, hz)`: a small integer per tag, so a reading row stays short.
- Row ids of `reading` and `event` are AUTOINCREMENT: they never go back, even
  when the table drains empty, because the live/back-fill boundary is an id.
- `reading(id, tag_id, ts, v, q)`: waiting readings. `v` keeps its SQLite type
  (REAL, INTEGER, TEXT or NULL); bit 4 of `q` marks a boolean stored as 0/1.
- `event(id, topic, ts, item)`: waiting alarm items as JSON text.
- `message(seq, topic, hist, oldest, items)`: packed messages awaiting PUBACK;
  `items` is the JSON array exactly as published.
- `counter(name, value)`: `next_seq`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.errors import StoreError
from edge_agent.model import AlarmEvent, Quality, Reading, Value

SCHEMA_VERSION: Final = 1
_BOOL_FLAG: Final = 0x10

_SCHEMA = """
CREATE TABLE tag (id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE, hz TEXT NOT NULL);
CREATE TABLE reading (id INTEGER PRIMARY KEY AUTOINCREMENT, tag_id INTEGER NOT NULL,
                      ts INTEGER NOT NULL, v, q INTEGER NOT NULL);
CREATE TABLE event (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, ts INTEGER NOT NULL,
                    item TEXT NOT NULL);
CREATE TABLE message (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, hist INTEGER NOT NULL,
                      oldest INTEGER NOT NULL, items TEXT NOT NULL);
CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counter VALUES ('next_seq', 1);
"""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A packed message: everything of the envelope but `sent` and the identity."""

    seq: int
    topic: str
    hist: bool
    oldest_ms: int
    items_json: str


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_items: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits because the uplink was down: the `state` fields `backlog` and `oldest`."""

    messages: int
    oldest_ms: int | None


class Store:
    """The agent's only durable state. Not thread-safe: use it from the event loop."""

    def __init__(self, db: sqlite3.Connection, limits: BatchLimits) -> None:
        self._db = db
        self._limits = limits
        self._tag_ids: dict[str, int] = {
            tag: tag_id for tag_id, tag in db.execute("SELECT id, tag FROM tag")
        }
        self._readings: list[tuple[int, int, Value, int]] = []
        self._events: list[tuple[str, int, str]] = []
        self._acks: list[int] = []
        # Rows below these ids waited while the uplink was down: they are back-fill.
        self._live_reading_id = self._next_id("reading")
        self._live_event_id = self._next_id("event")

    @classmethod
    def open(cls, path: str | Path, limits: BatchLimits) -> Store:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: store schema version {version} is not {SCHEMA_VERSION}; it was "
                    "written by another version of edge-agent. Run that version to drain it, "
                    "or move the file aside."
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        return cls(db, limits)

    def close(self) -> None:
        self.flush()
        self._db.close()

    # -- writing -----------------------------------------------------------

    def add_reading(self, reading: Reading) -> None:
        """Buffer a reading; it is durable after the next `flush()`."""
        value = reading.value
        flags = int(reading.quality)
        if isinstance(value, bool):
            value, flags = int(value), flags | _BOOL_FLAG
        self._readings.append((self._tag_id(reading.tag, reading.hz), reading.ts_ms, value, flags))

    def add_alarm(self, event: AlarmEvent) -> None:
        """Buffer an alarm event; the caller flushes at once (alarms never wait)."""
        self._events.append(("alarm", event.ts_ms, json.dumps(_alarm_item(event), allow_nan=False)))

    def ack(self, seq: int) -> None:
        """The message `seq` was delivered; it is dropped at the next `flush()`."""
        self._acks.append(seq)

    @property
    def unflushed(self) -> int:
        return len(self._readings) + len(self._events) + len(self._acks)

    def flush(self) -> None:
        """Commit everything buffered in one transaction."""
        if not self.unflushed:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO reading (tag_id, ts, v, q) VALUES (?, ?, ?, ?)", self._readings
            )
            self._db.executemany(
                "INSERT INTO event (topic, ts, item) VALUES (?, ?, ?)", self._events
            )
            self._db.executemany("DELETE FROM message WHERE seq = ?", ((s,) for s in self._acks))
        self._readings.clear()
        self._events.clear()
        self._acks.clear()

    # -- reading out -------------------------------------------------------

    def mark_live(self) -> None:
        """The uplink is up from now: what waits already is back-fill (`hist: true`)."""
        self.flush()
        self._live_reading_id = self._next_id("reading")
        self._live_event_id = self._next_id("event")

    def unsent(self, skip: set[int], limit: int) -> list[StoredMessage]:
        """Packed messages not in `skip` (those in flight), oldest `seq` first."""
        skip = skip | set(self._acks)  # acknowledged, deleted at the next flush
        rows = self._db.execute(
            "SELECT seq, topic, hist, oldest, items FROM message ORDER BY seq LIMIT ?",
            (len(skip) + limit,),
        ).fetchall()
        unsent = [StoredMessage(s, t, bool(h), o, i) for s, t, h, o, i in rows if s not in skip]
        return unsent[:limit]

    def pack_next(self, now_ms: int, linger_ms: int) -> StoredMessage | None:
        """Give the next message its `seq`, or None when nothing is due.

        Priority: alarm events (live or back-fill), then live readings once the
        oldest has lingered `linger_ms` or a message is full, then back-fill.
        Live readings go before back-fill whenever they are due, so a back-log
        never delays them by more than one message.
        """
        self.flush()
        if self._has_rows("event", ""):
            return self._pack_events()
        if self._live_due(now_ms, linger_ms):
            return self._pack_readings(f"id >= {self._live_reading_id}", hist=False)
        if self._has_rows("reading", f"id < {self._live_reading_id}"):
            return self._pack_readings(f"id < {self._live_reading_id}", hist=True)
        return None

    def backlog(self, in_flight: int) -> Backlog:
        """Messages waiting because of an outage: packed but not in flight, plus back-fill."""
        (packed,) = self._db.execute("SELECT count(*) FROM message").fetchone()
        (readings,) = self._db.execute(
            "SELECT count(*) FROM reading WHERE id < ?", (self._live_reading_id,)
        ).fetchone()
        (events,) = self._db.execute(
            "SELECT count(*) FROM event WHERE id < ?", (self._live_event_id,)
        ).fetchone()
        oldest = [
            row[0]
            for row in (
                self._db.execute("SELECT min(oldest) FROM message").fetchone(),
                self._db.execute(
                    "SELECT ts FROM reading WHERE id < ? ORDER BY id LIMIT 1",
                    (self._live_reading_id,),
                ).fetchone(),
                self._db.execute(
                    "SELECT min(ts) FROM event WHERE id < ?", (self._live_event_id,)
                ).fetchone(),
            )
            if row is not None and row[0] is not None
        ]
        to_pack = -(-readings // self._limits.max_items) + (1 if events else 0)
        waiting = max(packed - in_flight, 0) + to_pack
        return Backlog(waiting, min(oldest) if waiting and oldest else None)

    # -- internals ---------------------------------------------------------

    def _pack_events(self) -> StoredMessage:
        """Back-fill events first; a message never mixes back-fill and live, so `hist` is true."""
        hist = self._has_rows("event", f"id < {self._live_event_id}")
        where = f"id < {self._live_event_id}" if hist else f"id >= {self._live_event_id}"
        rows = self._db.execute(
            f"SELECT id, ts, item FROM event WHERE {where} ORDER BY id LIMIT ?",
            (self._limits.max_items,),
        ).fetchall()
        items = _fit([item for _, _, item in rows], self._limits.max_bytes)
        taken = rows[: len(items)]
        return self._commit_message(
            "event",
            (taken[0][0], taken[-1][0]),
            topic="alarm",
            hist=hist,
            oldest_ms=min(ts for _, ts, _ in taken),
            items=items,
        )

    def _pack_readings(self, where: str, hist: bool) -> StoredMessage:
        rows = self._db.execute(
            "SELECT reading.id, tag.tag, tag.hz, reading.ts, reading.v, reading.q "
            f"FROM reading JOIN tag ON tag.id = reading.tag_id WHERE reading.{where} "
            "ORDER BY reading.id LIMIT ?",
            (self._limits.max_items,),
        ).fetchall()
        items = _fit([_reading_item_json(*row[1:]) for row in rows], self._limits.max_bytes)
        taken = rows[: len(items)]
        return self._commit_message(
            "reading",
            (taken[0][0], taken[-1][0]),
            topic="rt",
            hist=hist,
            oldest_ms=min(row[3] for row in taken),
            items=items,
        )

    def _commit_message(
        self,
        table: str,
        id_range: tuple[int, int],
        *,
        topic: str,
        hist: bool,
        oldest_ms: int,
        items: list[str],
    ) -> StoredMessage:
        """Move the rows `id_range` of `table` into a new message with the next `seq`."""
        items_json = "[" + ",".join(items) + "]"
        with self._transaction():
            (seq,) = self._db.execute(
                "UPDATE counter SET value = value + 1 WHERE name = 'next_seq' RETURNING value - 1"
            ).fetchone()
            self._db.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", id_range)
            self._db.execute(
                "INSERT INTO message (seq, topic, hist, oldest, items) VALUES (?, ?, ?, ?, ?)",
                (seq, topic, int(hist), oldest_ms, items_json),
            )
        return StoredMessage(seq, topic, hist, oldest_ms, items_json)

    def _live_due(self, now_ms: int, linger_ms: int) -> bool:
        first = self._db.execute(
            "SELECT ts FROM reading WHERE id >= ? ORDER BY id LIMIT 1", (self._live_reading_id,)
        ).fetchone()
        if first is None:
            return False
        if first[0] <= now_ms - linger_ms:
            return True
        full = self._db.execute(
            "SELECT 1 FROM reading WHERE id >= ? ORDER BY id LIMIT 1 OFFSET ?",
            (self._live_reading_id, self._limits.max_items - 1),
        ).fetchone()
        return full is not None

    def _has_rows(self, table: str, where: str) -> bool:
        sql = f"SELECT 1 FROM {table} {'WHERE ' + where if where else ''} LIMIT 1"
        return self._db.execute(sql).fetchone() is not None

    def _next_id(self, table: str) -> int:
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchone()
        return (int(row[0]) if row else 0) + 1

    def _tag_id(self, tag: str, hz: str) -> int:
        tag_id = self._tag_ids.get(tag)
        if tag_id is None:
            (tag_id,) = self._db.execute(
                "INSERT INTO tag (tag, hz) VALUES (?, ?) "
                "ON CONFLICT (tag) DO UPDATE SET hz = excluded.hz RETURNING id",
                (tag, hz),
            ).fetchone()
            self._tag_ids[tag] = tag_id
        return tag_id

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _fit(items: list[str], max_bytes: int) -> list[str]:
    """The longest prefix of `items` whose JSON array (plus envelope) fits in `max_bytes`.

    At least one item is always taken, so an item never blocks the queue.
    """
    budget = max_bytes - 256  # the envelope around the items
    size = 2
    for count, item in enumerate(items):
        size += len(item.encode()) + 1
        if size > budget and count:
            return items[:count]
    return items


def _reading_item_json(tag: str, hz: str, ts: int, value: Value, flags: int) -> str:
    if flags & _BOOL_FLAG:
        value = bool(value)
    quality = Quality(flags & ~_BOOL_FLAG)
    return json.dumps(
        {"tag": tag, "hz": hz, "ts": ts, "v": value, "q": int(quality)}, allow_nan=False
    )


def _alarm_item(event: AlarmEvent) -> dict[str, object]:
    item: dict[str, object] = {
        "id": event.id,
        "tag": event.tag,
        "hz": event.hz,
        "ts": event.ts_ms,
        "kind": str(event.kind),
        "state": str(event.state),
        "v": event.value,
    }
    if event.limit is not None:
        item["limit"] = event.limit
    return item
