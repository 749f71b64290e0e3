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
   order (alarm messages ahead of the rest) before anything new is packed.
4. Waiting readings are never loaded whole into memory: packing reads one
   message's worth by primary-key range.

What a crash or a power loss costs: see docs/store.md (the durability
table). In short: a kill -9 loses at most the readings of the last
`commit_interval`; with synchronous=normal a power loss may also roll back
the last commits, and the `seq` high-water mark (hwm.py) keeps numbering
above anything that may have been published.

Row layout (schema in database.py)
----------------------------------
- `tag(id, tag, hz)`: a small integer per tag, so a reading row stays short.
- Row ids of `reading` and `event` are AUTOINCREMENT: they never go back, even
  when the table drains empty, because the live/back-fill boundary is an id.
- `reading(id, tag_id, ts, v, q)`: waiting readings. `v` keeps its SQLite type
  (REAL, INTEGER, TEXT or NULL); bit 4 of `q` marks a boolean stored as 0/1.
- `event(id, topic, ts, item)`: waiting `alarm` and `stat` items as JSON text.
- `message(seq, topic, hist, oldest, items)`: packed messages awaiting PUBACK;
  `items` is the JSON array exactly as published.
- `counter(name, value)`: `next_seq`, and `clean` (1 after a clean close).
- `loss(...)`: the loss ledger (ledger.py).
- `active_alarm(id, tag, kind, item)`: every alarm raised and not yet cleared,
  as its `raised` item; written in the same transaction as the event, so
  after a crash the active alarms and the events sent agree.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from edge_agent.errors import StoreError
from edge_agent.model import (
    AlarmEvent,
    AlarmKind,
    AlarmState,
    Quality,
    Reading,
    StatItem,
    Value,
)
from edge_agent.store import capacity, ledger
from edge_agent.store.database import (
    StoreLock,
    Synchronous,
    mark_clean,
    open_database,
)
from edge_agent.store.hwm import HighWaterMark
from edge_agent.store.ledger import Loss

log = structlog.get_logger(component="store")

T = TypeVar("T")

_BOOL_FLAG: Final = 0x10
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
FLUSH_CHUNK: Final = 10_000
"""Most readings written in one transaction."""
FULL_RETRIES: Final = 8
"""Thinning passes a flush may make to fit its buffers at the cap."""
MEMORY_LIMIT: Final = 200_000
"""Most readings held in memory while the disk is full; beyond it the oldest are dropped."""


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
class PackOptions:
    """What `pack_next` may pack now."""

    backfill: bool = True
    """Back-fill readings may be packed (the uplink's back-fill share and rate allow)."""
    bulk: bool = True
    """Anything but alarms may be packed (the uplink's byte budget allows)."""
    priority: bool = True
    """Alarms first. Without it (a switch for tests, to show what priority is worth)
    back-fill readings go first, then alarms: first in, first out."""
    max_bytes: int | None = None
    """Largest readings message, below the configured one (the uplink's pace)."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """How the store is kept; mirrors the `store` config section."""

    path: Path
    max_bytes: int = 2 * 1024**3
    retention_s: float = 30 * 86400
    synchronous: Synchronous = "normal"


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits because the uplink was down: the `state` fields `backlog` and `oldest`."""

    messages: int
    oldest_ms: int | None


class Store:
    """The agent's only durable state. Not thread-safe: use it from the event loop."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        settings: StoreSettings,
        limits: BatchLimits,
        hwm: HighWaterMark,
        lock: StoreLock,
        budget: capacity.Budget,
    ) -> None:
        self._db = db
        self._settings = settings
        self._limits = limits
        self._hwm = hwm
        self._lock = lock
        self._budget = budget
        self._tag_ids: dict[str, int] = {
            tag: tag_id for tag_id, tag in db.execute("SELECT id, tag FROM tag")
        }
        # Buffered by tag name: tag ids are given inside the flush transaction, so a
        # full disk can fail only the flush, never the poll that adds a reading.
        self._readings: list[tuple[str, str, int, Value, int]] = []
        self._events: list[tuple[str, int, str]] = []
        self._raised: list[tuple[str, str, str, str]] = []  # active_alarm rows to add
        self._cleared: list[str] = []  # active_alarm ids to drop
        self._acks: list[int] = []
        self._pending_losses: list[Loss] = []
        self._packed_max = 0
        self._thinned = 0  # readings thinned since the last log line
        self.disk_full = False
        self.write_error: str | None = None
        """Why the last flush could not commit (the disk is full), or None when it did."""
        # Rows below these ids waited while the uplink was down: they are back-fill.
        self._live_reading_id = self._next_id("reading")
        self._live_event_id = self._next_id("event")

    @classmethod
    def open(cls, settings: StoreSettings, limits: BatchLimits) -> Store:
        """Lock, open (setting a corrupt file aside), and resume `seq` above the high-water mark."""
        path = settings.path
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path)
        try:
            opened = open_database(path, settings.synchronous)
            hwm = HighWaterMark(path.with_name(path.name + ".seq"))
        except (sqlite3.Error, OSError) as exc:
            lock.release()
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        except StoreError:
            lock.release()
            raise
        page_size = opened.db.execute("PRAGMA page_size").fetchone()[0]
        budget = capacity.Budget.of(settings.max_bytes, page_size)
        budget.fitted(path).apply(opened.db)
        store = cls(opened.db, settings=settings, limits=limits, hwm=hwm, lock=lock, budget=budget)
        if opened.set_aside is not None:
            aside = opened.set_aside
            store._record(
                Loss(
                    f"store set aside ({aside.reason}), kept as {aside.kept_as.name}: "
                    "its unsent readings and messages are lost",
                    seq=(aside.lowest_unsent_seq or 1, hwm.value) if hwm.value else None,
                )
            )
        store._resume_above_high_water_mark(declare=opened.set_aside is None)
        return store

    def _resume_above_high_water_mark(self, declare: bool) -> None:
        """After a rollback (power loss, a restored store) never reuse a published seq."""
        (next_seq,) = self._db.execute(
            "SELECT value FROM counter WHERE name = 'next_seq'"
        ).fetchone()
        if next_seq > self._hwm.value:
            return
        skipped = Loss(
            "seq skipped: the store was behind numbers that may have been published "
            "(power loss, or a store restored from a copy)",
            seq=(next_seq, self._hwm.value),
        )
        with self._transaction():
            self._db.execute(
                "UPDATE counter SET value = ? WHERE name = 'next_seq'", (self._hwm.value + 1,)
            )
            if declare:
                ledger.record(self._db, skipped)
        log.warning("seq_skipped", first=next_seq, last=self._hwm.value)

    def close(self) -> None:
        """Flush, checkpoint and mark the store clean; then release the lock."""
        self.flush()
        try:
            mark_clean(self._db)
        except sqlite3.Error as exc:
            log.error("store_close_failed", error=str(exc))
        self._db.close()
        self._hwm.close()
        self._lock.release()

    # -- writing -----------------------------------------------------------

    def add_reading(self, reading: Reading) -> None:
        """Buffer a reading; it is durable after the next `flush()`.

        Whatever the value, it is stored: an integer beyond SQLite's 64 bits
        is kept as its decimal text (exact, and what the wire sends for a
        64-bit tag); a value JSON cannot carry becomes null with q=4.
        """
        value = reading.value
        flags = int(reading.quality)
        if isinstance(value, bool):
            value, flags = int(value), flags | _BOOL_FLAG
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                value = str(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                value, flags = None, int(Quality.CONFIG)
        elif value is not None and not isinstance(value, str):
            value, flags = None, int(Quality.CONFIG)
        self._readings.append((reading.tag, reading.hz, reading.ts_ms, value, flags))

    def add_alarm(self, event: AlarmEvent) -> None:
        """Buffer an alarm event; the caller flushes at once (alarms never wait)."""
        item = _item_json(_alarm_item(event))
        self._events.append(("alarm", event.ts_ms, item))
        if event.state is AlarmState.RAISED:
            self._raised.append((event.id, event.tag, str(event.kind), item))
        else:
            self._cleared.append(event.id)

    def add_stat(self, stat: StatItem) -> None:
        """Buffer the statistics of one tag's window; durable after the next `flush()`."""
        item = {
            "tag": stat.tag,
            "hz": stat.hz,
            "ts": stat.start_ms,
            "win": stat.window_s,
            "min": stat.min,
            "max": stat.max,
            "avg": stat.avg,
            "n": stat.n,
            "bad": stat.bad,
        }
        self._events.append(("stat", stat.start_ms, _item_json(item)))

    def active_alarms(self) -> list[AlarmEvent]:
        """The `raised` events of the alarms active when the agent last stopped."""
        rows = self._db.execute("SELECT item FROM active_alarm ORDER BY rowid").fetchall()
        return [_alarm_event(json.loads(item)) for (item,) in rows]

    def ack(self, seq: int) -> None:
        """The message `seq` was delivered; it is dropped at the next `flush()`."""
        self._acks.append(seq)

    @property
    def unflushed(self) -> int:
        return len(self._readings) + len(self._events) + len(self._acks) + len(self._cleared)

    def flush(self) -> None:
        """Commit everything buffered in one transaction.

        If the disk stays full even after thinning, the buffers stay in
        memory, up to MEMORY_LIMIT readings (the oldest beyond it are dropped
        and declared), and the next flush tries again: polling and alarms go
        on meanwhile.
        """
        while self.unflushed:
            # In chunks, so that after a full disk the back-log held in memory is
            # written as far as room allows, and the rest waits.
            chunk = self._readings[:FLUSH_CHUNK]
            try:
                new_ids = self._commit_making_room(partial(self._write_buffers, chunk))
                self._tag_ids.update(new_ids)
            except _Full as exc:
                self._hold_in_memory(str(exc))
                return
            self.write_error = None
            if self.disk_full:
                self.disk_full = False
                log.warning("store_writable_again", path=str(self._settings.path))
            del self._readings[: len(chunk)]
            self._events.clear()
            self._raised.clear()
            self._cleared.clear()
            self._acks.clear()
            self._pending_losses.clear()

    def _commit_making_room(self, write: Callable[[], T]) -> T:
        """Run `write` in a transaction; at the cap or on a full disk, thin and try again."""
        for _ in range(FULL_RETRIES):
            try:
                with self._transaction():
                    return write()
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                if not self._make_room():
                    raise _Full(str(exc)) from None
        raise _Full("still full after thinning")

    def _write_buffers(self, readings: list[tuple[str, str, int, Value, int]]) -> dict[str, int]:
        """Write `readings` and the other buffers (inside a transaction).

        Returns the tag ids it had to create.
        """
        new_ids: dict[str, int] = {}
        for tag, hz, *_ in readings:
            if tag not in self._tag_ids and tag not in new_ids:
                (new_ids[tag],) = self._db.execute(
                    "INSERT INTO tag (tag, hz) VALUES (?, ?) "
                    "ON CONFLICT (tag) DO UPDATE SET hz = excluded.hz RETURNING id",
                    (tag, hz),
                ).fetchone()
        ids = self._tag_ids | new_ids
        self._db.executemany(
            "INSERT INTO reading (tag_id, ts, v, q) VALUES (?, ?, ?, ?)",
            ((ids[tag], ts, v, q) for tag, _, ts, v, q in readings),
        )
        self._db.executemany("INSERT INTO event (topic, ts, item) VALUES (?, ?, ?)", self._events)
        self._db.executemany(
            "INSERT OR REPLACE INTO active_alarm (id, tag, kind, item) VALUES (?, ?, ?, ?)",
            self._raised,
        )
        self._db.executemany("DELETE FROM active_alarm WHERE id = ?", ((i,) for i in self._cleared))
        self._db.executemany("DELETE FROM message WHERE seq = ?", ((s,) for s in self._acks))
        for loss in self._pending_losses:
            ledger.record(self._db, loss)
        return new_ids

    def _make_room(self) -> bool:
        """One thinning pass; False when nothing could be freed (or even the delete failed)."""
        try:
            with self._transaction():
                loss = capacity.thin_oldest(self._db) or capacity.drop_oldest_event_or_message(
                    self._db
                )
        except sqlite3.OperationalError as exc:
            log.debug("store_thin_failed", error=str(exc))
            return False
        if loss is not None:
            self._thinned += loss.items
        with contextlib.suppress(sqlite3.OperationalError):
            # Move the WAL into the pages just freed, so it is reused rather than grown.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return loss is not None

    def _hold_in_memory(self, error: str) -> None:
        self.write_error = error
        if not self.disk_full:
            self.disk_full = True
            log.error("store_full", error=error, path=str(self._settings.path))
        excess = len(self._readings) - MEMORY_LIMIT
        if excess > 0:
            dropped = self._readings[:excess]
            del self._readings[:excess]
            self._pending_losses.append(
                Loss("disk full: readings not stored", excess, dropped[0][2], dropped[-1][2])
            )

    def maintain(self, now_ms: int) -> None:
        """Enforce retention and the size cap; shrink the file once nothing waits."""
        before = now_ms - int(self._settings.retention_s * 1000)
        try:
            budget = self._budget.fitted(self._settings.path)
            budget.apply(self._db)
            with self._transaction():
                capacity.drop_expired(self._db, before)
                while capacity.over_cap(self._db, budget):
                    loss = capacity.thin_oldest(self._db) or capacity.drop_oldest_event_or_message(
                        self._db
                    )
                    if loss is None:
                        break
                    self._thinned += loss.items
            if self._thinned:
                log.warning(
                    "store_thinned",
                    items=self._thinned,
                    limit_bytes=budget.db_pages * budget.page_size,
                    cause="store.max_size" if budget == self._budget else "free disk space",
                )
                self._thinned = 0
            backfill_waiting = self._has_rows("reading", f"id < {self._live_reading_id}")
            if not backfill_waiting and capacity.mostly_free(self._db):
                capacity.shrink(self._db)
        except sqlite3.OperationalError as exc:
            log.warning("store_maintenance_failed", error=str(exc))

    def _record(self, loss: Loss) -> None:
        with self._transaction():
            ledger.record(self._db, loss)

    def losses(self) -> tuple[list[Loss], ledger.Totals]:
        """The newest ledger entries and the totals since installation."""
        return ledger.entries(self._db), ledger.totals(self._db)

    def guard_published(self) -> None:
        """Call before publishing newly packed messages: raises the durable `seq` mark."""
        self._hwm.raise_to(self._packed_max)

    # -- reading out -------------------------------------------------------

    def mark_live(self) -> None:
        """The uplink is up from now: what waits already is back-fill (`hist: true`)."""
        self.flush()
        self._live_reading_id = self._next_id("reading")
        self._live_event_id = self._next_id("event")

    def unsent(self, skip: set[int], limit: int, alarms_first: bool = True) -> list[StoredMessage]:
        """Packed messages not in `skip` (those in flight), alarms then the oldest `seq` first."""
        skip = skip | set(self._acks)  # acknowledged, deleted at the next flush
        order = "topic != 'alarm', seq" if alarms_first else "seq"
        rows = self._db.execute(
            f"SELECT seq, topic, hist, oldest, items FROM message ORDER BY {order} LIMIT ?",
            (len(skip) + limit,),
        ).fetchall()
        unsent = [StoredMessage(s, t, bool(h), o, i) for s, t, h, o, i in rows if s not in skip]
        return unsent[:limit]

    def pack_next(
        self, now_ms: int, linger_ms: int, options: PackOptions | None = None
    ) -> StoredMessage | None:
        """Give the next message its `seq`, or None when nothing is due (or no room is left).

        Priority: alarm events (live or back-fill), then live readings once the
        oldest has lingered `linger_ms` or a message is full, then statistics,
        then back-fill readings; `options` narrows that down. Before
        publishing what this returns, call `guard_published()`.
        """
        self.flush()
        for _ in range(FULL_RETRIES):
            try:
                message = self._pack(now_ms, linger_ms, options or PackOptions())
            except sqlite3.OperationalError as exc:
                # At the cap: thin, then choose the items afresh, so no item can be
                # both packed and declared as thinned.
                if "full" not in str(exc):
                    raise
                if not self._make_room():
                    return None  # a full disk: nothing can be packed until room returns
                continue
            if message is not None:
                self._packed_max = max(self._packed_max, message.seq)
            return message
        return None

    def _pack(self, now_ms: int, linger_ms: int, options: PackOptions) -> StoredMessage | None:
        max_bytes = options.max_bytes or self._limits.max_bytes
        back_fill = f"id < {self._live_reading_id}"
        live = f"id >= {self._live_reading_id}"
        bulk = options.bulk
        steps: tuple[tuple[Callable[[], bool], Callable[[], StoredMessage]], ...] = (
            (
                lambda: not options.priority and self._has_rows("reading", back_fill),
                partial(self._pack_readings, back_fill, True, max_bytes),
            ),
            (
                lambda: self._has_rows("event", "topic = 'alarm'"),
                partial(self._pack_events, "alarm"),
            ),
            (
                lambda: bulk and self._live_due(now_ms, linger_ms),
                partial(self._pack_readings, live, False, max_bytes),
            ),
            (
                lambda: bulk and self._has_rows("event", "topic = 'stat'"),
                partial(self._pack_events, "stat"),
            ),
            (
                lambda: bulk and options.backfill and self._has_rows("reading", back_fill),
                partial(self._pack_readings, back_fill, True, max_bytes),
            ),
        )
        return next((pack() for due, pack in steps if due()), None)

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
        to_pack = -(-readings // self._limits.max_items) + (1 if events else 0)  # about
        waiting = max(packed - in_flight, 0) + to_pack
        return Backlog(waiting, min(oldest) if waiting and oldest else None)

    # -- internals ---------------------------------------------------------

    def _pack_events(self, topic: str) -> StoredMessage:
        """Events of one topic, back-fill first: a message never mixes back-fill and live."""
        of_topic = f"topic = '{topic}'"
        hist = self._has_rows("event", f"{of_topic} AND id < {self._live_event_id}")
        where = f"id < {self._live_event_id}" if hist else f"id >= {self._live_event_id}"
        rows = self._db.execute(
            f"SELECT id, ts, item FROM event WHERE {of_topic} AND {where} ORDER BY id LIMIT ?",
            (self._limits.max_items,),
        ).fetchall()
        items = _fit([item for _, _, item in rows], self._limits.max_bytes)
        taken = rows[: len(items)]
        return self._commit_message(
            "event",
            [row[0] for row in taken],
            topic=topic,
            hist=hist,
            oldest_ms=min(ts for _, ts, _ in taken),
            items=items,
        )

    def _pack_readings(self, where: str, hist: bool, max_bytes: int) -> StoredMessage:
        rows = self._db.execute(
            "SELECT reading.id, tag.tag, tag.hz, reading.ts, reading.v, reading.q "
            f"FROM reading JOIN tag ON tag.id = reading.tag_id WHERE reading.{where} "
            "ORDER BY reading.id LIMIT ?",
            (self._limits.max_items,),
        ).fetchall()
        items = _fit([_reading_item_json(*row[1:]) for row in rows], max_bytes)
        taken = rows[: len(items)]
        return self._commit_message(
            "reading",
            range(taken[0][0], taken[-1][0] + 1),
            topic="rt",
            hist=hist,
            oldest_ms=min(row[3] for row in taken),
            items=items,
        )

    def _commit_message(
        self,
        table: str,
        ids: range | list[int],
        *,
        topic: str,
        hist: bool,
        oldest_ms: int,
        items: list[str],
    ) -> StoredMessage:
        """Move the rows `ids` of `table` into a new message with the next `seq`."""
        items_json = "[" + ",".join(items) + "]"
        with self._transaction():
            (seq,) = self._db.execute(
                "UPDATE counter SET value = value + 1 WHERE name = 'next_seq' RETURNING value - 1"
            ).fetchone()
            if isinstance(ids, range):
                self._db.execute(
                    f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", (ids.start, ids.stop - 1)
                )
            else:
                self._db.executemany(f"DELETE FROM {table} WHERE id = ?", ((i,) for i in ids))
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

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Full(Exception):
    """The store could not make room for a write."""


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # SQLITE_FULL has already rolled it back
            self._db.execute("ROLLBACK")


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


def _item_json(item: dict[str, object]) -> str:
    """An alarm or statistics item as JSON; a number JSON cannot carry goes as null.

    The rules stage sends only carriable numbers (edge_agent/wire.py); this is
    the store's own guard, so a value that slipped through costs its field,
    never the event or a task.
    """
    try:
        return json.dumps(item, allow_nan=False)
    except (TypeError, ValueError):
        log.error("item_not_carried", item=repr(item))
        return json.dumps({key: _carriable(value) for key, value in item.items()})


def _carriable(value: object) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def _reading_item_json(tag: str, hz: str, ts: int, value: Value, flags: int) -> str:
    if flags & _BOOL_FLAG:
        value = bool(value)
    quality = Quality(flags & ~_BOOL_FLAG)
    return json.dumps(
        {"tag": tag, "hz": hz, "ts": ts, "v": value, "q": int(quality)}, allow_nan=False
    )


def _alarm_event(item: dict[str, Any]) -> AlarmEvent:
    """The event back from its item (`_alarm_item`)."""
    return AlarmEvent(
        id=item["id"],
        tag=item["tag"],
        hz=item["hz"],
        ts_ms=item["ts"],
        kind=AlarmKind(item["kind"]),
        state=AlarmState(item["state"]),
        value=item["v"],
        limit=item.get("limit"),
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
