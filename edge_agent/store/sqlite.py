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

5. No call raises for what SQLite or the disk does. A write that fails (a
   full disk, an I/O error) keeps what it would have written in memory,
   within one bound (buffer.py), declaring what the bound drops; a store
   that turns out damaged while running is set aside and a fresh one takes
   over (`_recover`), declaring what the old one held. Reads that fail
   answer with nothing to send (and the last figures known).
6. Every stretch in which the agent did not sample is declared: each commit
   also writes the newest sample time (on a trusted clock) as a mark, so
   after any stop, clean or not, the ledger gets a stretch from that mark to
   the first sample after the restart (open until then).

What a crash or a power loss costs: see docs/store.md (the durability
table). In short: a kill -9 loses at most the readings of the last
`commit_interval`; with synchronous=normal a power loss may also roll back
the last commits, and the `seq` high-water mark (hwm.py) keeps numbering
above anything that may have been published. A rolled-back commit rolls
the sample mark back with it, so the declared stretch starts where what
survived ends.

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
- `counter(name, value)`: `next_seq`; `clean` (1 after a clean close);
  `last_sample` (the newest sample time committed, ms; 0 when none);
  `carried_entries`, `carried_items` (ledger totals of stores set aside).
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
from edge_agent.logs import Repeats
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
from edge_agent.store.buffer import ReadingRow, WriteBuffer
from edge_agent.store.database import (
    LastStop,
    Opened,
    SetAside,
    StoreLock,
    Synchronous,
    is_corruption,
    mark_clean,
    open_database,
    open_writable,
    read_held,
    set_aside_files,
)
from edge_agent.store.hwm import HighWaterMark
from edge_agent.store.ledger import Loss

log = structlog.get_logger(component="store")

T = TypeVar("T")

_BOOL_FLAG: Final = 0x10
_NO_LIMIT: Final = 2**63 - 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
FLUSH_CHUNK: Final = 10_000
"""Most readings written in one transaction."""
FULL_RETRIES: Final = 8
"""Thinning passes a flush may make to fit its buffers at the cap."""


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
        self._settings = settings
        self._limits = limits
        self._hwm = hwm
        self._lock = lock
        self._budget = budget
        self._buffer = WriteBuffer()
        self._thinned = 0  # readings thinned since the last log line
        self._write_failures = Repeats(log, "store_write", path=str(settings.path))
        self._read_failures = Repeats(log, "store_read", path=str(settings.path))
        self._last_backlog = Backlog(0, None)
        self._last_losses: tuple[list[Loss], ledger.Totals] = ([], ledger.Totals(0, 0))
        self.disk_full = False
        self.write_error: str | None = None
        """Why the last commit failed (a full disk, an I/O error), or None when it succeeded."""
        self._attach(db)

    def _attach(self, db: sqlite3.Connection) -> None:
        """Take `db` as the store's connection (at opening, and after a recovery)."""
        self._db = db
        self._budget.fitted(self._settings.path).apply(db)
        # Buffered by tag name: tag ids are given inside the flush transaction, so a
        # full disk can fail only the flush, never the poll that adds a reading.
        self._tag_ids: dict[str, int] = {
            tag: tag_id for tag_id, tag in db.execute("SELECT id, tag FROM tag")
        }
        # Rows below these ids waited while the uplink was down: they are back-fill.
        self._live_reading_id = self._next_id("reading")
        self._live_event_id = self._next_id("event")
        # Every seq this store ever gave may have been published (a kill -9 can fall
        # between packing and guard_published): the mark is raised above them all
        # before the first message of this run goes out, resends included.
        self._packed_max = self._counter("next_seq") - 1
        self._stretch_open = self._has_rows("loss", "first IS NOT NULL AND last IS NULL")

    @classmethod
    def open(cls, settings: StoreSettings, limits: BatchLimits) -> Store:
        """Lock, open (setting a damaged file aside), declare the stretch the last stop left,
        and resume `seq` above the high-water mark."""
        path = settings.path
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path)
        try:
            opened = open_database(path, settings.synchronous)
            hwm = HighWaterMark(path.with_name(path.name + ".seq"))
            page_size = opened.db.execute("PRAGMA page_size").fetchone()[0]
            budget = capacity.Budget.of(settings.max_bytes, page_size)
            store = cls(
                opened.db, settings=settings, limits=limits, hwm=hwm, lock=lock, budget=budget
            )
            store._declare_opening(opened)
        except (sqlite3.Error, OSError) as exc:
            lock.release()
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        except StoreError:
            lock.release()
            raise
        return store

    def _declare_opening(self, opened: Opened) -> None:
        """In one transaction: the ledger of a store set aside and what it held, the stretch
        the last stop left (open until the first sample), and `seq` above the mark."""
        with self._transaction():
            if opened.set_aside is not None:
                self._declare_set_aside(opened.set_aside)
            self._open_stretch(opened.last_stop, set_aside=opened.set_aside is not None)
            self._resume_above_high_water_mark(declare=opened.set_aside is None)
        self._stretch_open = self._has_rows("loss", "first IS NOT NULL AND last IS NULL")

    def _declare_set_aside(self, aside: SetAside) -> None:
        held = aside.held
        ledger.carry_over(self._db, held.ledger, held.totals)
        reason = f"store set aside ({aside.reason}), kept as {aside.kept_as.name}"
        if held.readable:
            unread = "" if held.complete else " (what could not be read is not counted)"
            loss = Loss(
                f"{reason}: what it held and had not delivered is lost{unread}",
                held.items,
                held.first_ms,
                held.last_ms,
                held.seq,
            )
        else:
            mark = self._hwm.value
            loss = Loss(
                f"{reason}: its contents could not be read; any seq up to the mark may be lost",
                seq=(1, mark) if mark else None,
            )
        ledger.record(self._db, loss)

    def _open_stretch(self, last_stop: LastStop | None, *, set_aside: bool) -> None:
        if last_stop is None or last_stop.last_sample_ms is None:
            return  # a new store, or nothing was ever sampled on a trusted clock
        if set_aside:
            why = "store set aside"
        elif last_stop.clean:
            why = "agent stopped"
        else:
            why = "unclean stop (crash, kill or power loss)"
        ledger.record(self._db, Loss(f"not sampling: {why}", first_ms=last_stop.last_sample_ms))

    def _resume_above_high_water_mark(self, declare: bool) -> None:
        """After a rollback (power loss, a restored store) never reuse a published seq."""
        next_seq = self._counter("next_seq")
        if next_seq > self._hwm.value:
            return
        self._db.execute(
            "UPDATE counter SET value = ? WHERE name = 'next_seq'", (self._hwm.value + 1,)
        )
        if declare:
            skipped = Loss(
                "seq skipped: the store was behind numbers that may have been published "
                "(power loss, or a store restored from a copy)",
                seq=(next_seq, self._hwm.value),
            )
            ledger.record(self._db, skipped)
        log.warning("seq_skipped", first=next_seq, last=self._hwm.value)

    def close(self) -> None:
        """Flush, checkpoint and mark the store clean; then release the lock."""
        self.flush()
        try:
            mark_clean(self._db)
        except sqlite3.Error as exc:
            log.error("store_close_failed", error=str(exc))
        with contextlib.suppress(sqlite3.Error):
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
        self._buffer.readings.append((reading.tag, reading.hz, reading.ts_ms, value, flags))

    def add_alarm(self, event: AlarmEvent) -> None:
        """Buffer an alarm event; the caller flushes at once (alarms never wait)."""
        item = _item_json(_alarm_item(event))
        self._buffer.events.append(("alarm", event.ts_ms, item))
        if event.state is AlarmState.RAISED:
            self._buffer.raised.append((event.id, event.tag, str(event.kind), item))
        else:
            self._buffer.cleared.append(event.id)

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
        self._buffer.events.append(("stat", stat.start_ms, _item_json(item)))

    def sampled(self, ts_ms: int) -> None:
        """Samples were taken up to `ts_ms` on a synchronised clock: the mark a stop is
        declared from, written with the next commit."""
        self._buffer.sampled(ts_ms)

    def record_loss(self, loss: Loss) -> None:
        """Declare a loss found outside the store (skipped polls); written with the next commit."""
        self._buffer.losses.append(loss)

    def active_alarms(self) -> list[AlarmEvent]:
        """The `raised` events of the alarms active when the agent last stopped."""
        try:
            rows = self._db.execute("SELECT item FROM active_alarm ORDER BY rowid").fetchall()
        except sqlite3.Error as exc:
            self._read_failed("active_alarms", exc)
            return []
        return [_alarm_event(json.loads(item)) for (item,) in rows]

    def ack(self, seq: int) -> None:
        """The message `seq` was delivered; it is dropped at the next `flush()`."""
        self._buffer.acks.append(seq)

    @property
    def unflushed(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        """Commit everything buffered, in transactions of at most FLUSH_CHUNK readings.

        Never raises. At the cap the oldest back-log is thinned to make room;
        if a commit still fails (a full disk, an I/O error), the buffers stay
        in memory within their bound (buffer.py) and the next flush tries
        again: polling and alarms go on meanwhile. A damaged store is set
        aside and the buffers go into a fresh one.
        """
        recovered = False
        while self.unflushed:
            chunk = self._buffer.readings[:FLUSH_CHUNK]
            try:
                new_ids = self._commit_making_room(partial(self._write_buffers, chunk))
            except _Full as exc:
                self._cannot_write("disk full", str(exc))
                return
            except sqlite3.Error as exc:
                if is_corruption(exc) and not recovered:
                    self._recover(exc)
                    recovered = True
                    continue
                self._cannot_write("store cannot write", f"{type(exc).__name__}: {exc}")
                return
            self._tag_ids.update(new_ids)
            if self._buffer.resumed_ms is not None:
                self._stretch_open = False
            self._buffer.committed(len(chunk))
            self._written()

    def _written(self) -> None:
        if self.write_error is None:
            return
        self._write_failures.recovered()  # store_write_recovered
        self.write_error = None
        self.disk_full = False

    def _cannot_write(self, cause: str, error: str) -> None:
        """Keep the buffers, within their bound; say so once per change of reason
        (store_write_failed, a summary every 5 minutes, store_write_recovered)."""
        self.write_error = error
        self.disk_full = cause == "disk full"
        self._write_failures.failed(error)
        self._buffer.bound(cause)

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

    def _write_buffers(self, readings: list[ReadingRow]) -> dict[str, int]:
        """Write `readings` and the other buffers (inside a transaction).

        Returns the tag ids it had to create.
        """
        buffer = self._buffer
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
        self._db.executemany("INSERT INTO event (topic, ts, item) VALUES (?, ?, ?)", buffer.events)
        self._db.executemany(
            "INSERT OR REPLACE INTO active_alarm (id, tag, kind, item) VALUES (?, ?, ?, ?)",
            buffer.raised,
        )
        self._db.executemany(
            "DELETE FROM active_alarm WHERE id = ?", ((i,) for i in buffer.cleared)
        )
        self._db.executemany("DELETE FROM message WHERE seq = ?", ((s,) for s in buffer.acks))
        for loss in buffer.losses:
            ledger.record(self._db, loss)
        if buffer.sampled_ms is not None:
            self._db.execute(
                "UPDATE counter SET value = max(value, ?) WHERE name = 'last_sample'",
                (buffer.sampled_ms,),
            )
        if self._stretch_open and buffer.resumed_ms is not None:
            ledger.close_open(self._db, buffer.resumed_ms)
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

    def _recover(self, exc: sqlite3.Error) -> None:
        """The store is damaged: set it aside, declare what it held, and go on in a fresh one.

        What is buffered in memory stays and goes into the fresh store. The
        files set aside were last written by this connection, which closing
        checkpoints; the read-only check at start-up keeps them untouched.
        """
        path = self._settings.path
        held = read_held(self._db)
        last_stop = LastStop(clean=False, last_sample_ms=self._counter_or_none("last_sample"))
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        aside = set_aside_files(path, str(exc), held)
        opened = Opened(open_writable(path, self._settings.synchronous), last_stop, aside)
        self._attach(opened.db)
        self._declare_opening(opened)

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
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, sqlite3.Error) and is_corruption(exc):
                self._recover(exc)
            else:
                log.warning("store_maintenance_failed", error=str(exc))

    def losses(self) -> tuple[list[Loss], ledger.Totals]:
        """The newest ledger entries and the totals since installation, declarations still
        buffered included (the last known on a failing read)."""
        self.flush()
        try:
            self._last_losses = ledger.entries(self._db), ledger.totals(self._db)
        except sqlite3.Error as exc:
            self._read_failed("losses", exc)
        return self._last_losses

    def guard_published(self) -> None:
        """Call before publishing newly packed messages: raises the durable `seq` mark."""
        self._hwm.raise_to(self._packed_max)

    def _read_failed(self, what: str, exc: sqlite3.Error) -> None:
        """A read (packing, counting) failed: set a damaged store aside, else log the change."""
        if is_corruption(exc):
            self._recover(exc)
        else:
            self._read_failures.failed(f"{what}: {type(exc).__name__}: {exc}")

    # -- reading out -------------------------------------------------------

    def mark_live(self) -> None:
        """The uplink is up from now: what waits already is back-fill (`hist: true`)."""
        self.flush()
        try:
            self._live_reading_id = self._next_id("reading")
            self._live_event_id = self._next_id("event")
        except sqlite3.Error as exc:
            self._read_failed("mark_live", exc)

    def unsent(self, skip: set[int], limit: int, alarms_first: bool = True) -> list[StoredMessage]:
        """Packed messages not in `skip` (those in flight), alarms then the oldest `seq` first."""
        skip = skip | set(self._buffer.acks)  # acknowledged, deleted at the next flush
        order = "topic != 'alarm', seq" if alarms_first else "seq"
        try:
            rows = self._db.execute(
                f"SELECT seq, topic, hist, oldest, items FROM message ORDER BY {order} LIMIT ?",
                (len(skip) + limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            self._read_failed("unsent", exc)
            return []
        unsent = [StoredMessage(s, t, bool(h), o, i) for s, t, h, o, i in rows if s not in skip]
        return unsent[:limit]

    def pack_next(
        self, now_ms: int, linger_ms: int, options: PackOptions | None = None
    ) -> StoredMessage | None:
        """Give the next message its `seq`, or None when nothing is due (or no room is left,
        or the store cannot be read).

        Priority: alarm events (live or back-fill), then live readings once the
        oldest has lingered `linger_ms` or a message is full, then statistics,
        then back-fill readings; `options` narrows that down. Before
        publishing what this returns, call `guard_published()`.
        """
        self.flush()
        for _ in range(FULL_RETRIES):
            try:
                message = self._pack(now_ms, linger_ms, options or PackOptions())
            except sqlite3.Error as exc:
                # At the cap: thin, then choose the items afresh, so no item can be
                # both packed and declared as thinned.
                if "full" in str(exc) and self._make_room():
                    continue
                if "full" not in str(exc):
                    self._read_failed("pack", exc)
                return None  # a full disk: nothing can be packed until room returns
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

    def backlog(self, in_flight: int, *, connected: bool = True) -> Backlog:
        """What waits, for `state.backlog` and `oldest` (and /metrics, status).

        While the uplink is connected: packed messages not in flight, plus what
        waited from before the connection (back-fill); live readings on their
        way are not a back-log. While it is down, nothing moves: everything in
        the store counts, and what a failing disk holds in memory too. On a
        failing read, the last figures known.
        """
        try:
            self._last_backlog = self._count_backlog(in_flight, connected)
        except sqlite3.Error as exc:
            self._read_failed("backlog", exc)
        return self._last_backlog

    def _count_backlog(self, in_flight: int, connected: bool) -> Backlog:
        readings_below = self._live_reading_id if connected else _NO_LIMIT
        events_below = self._live_event_id if connected else _NO_LIMIT
        (packed,) = self._db.execute("SELECT count(*) FROM message").fetchone()
        (readings,) = self._db.execute(
            "SELECT count(*) FROM reading WHERE id < ?", (readings_below,)
        ).fetchone()
        (events,) = self._db.execute(
            "SELECT count(*) FROM event WHERE id < ?", (events_below,)
        ).fetchone()
        oldest = [
            row[0]
            for row in (
                self._db.execute("SELECT min(oldest) FROM message").fetchone(),
                self._db.execute(
                    "SELECT ts FROM reading WHERE id < ? ORDER BY id LIMIT 1", (readings_below,)
                ).fetchone(),
                self._db.execute(
                    "SELECT min(ts) FROM event WHERE id < ?", (events_below,)
                ).fetchone(),
            )
            if row is not None and row[0] is not None
        ]
        if not connected:
            buffer = self._buffer
            readings += len(buffer.readings)
            events += len(buffer.events)
            oldest += [row[2] for row in buffer.readings[:1]] + [row[1] for row in buffer.events]
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

    def _counter(self, name: str) -> int:
        (value,) = self._db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
        return int(value)

    def _counter_or_none(self, name: str) -> int | None:
        """A counter of a store that may be damaged: None when unreadable or 0."""
        try:
            return self._counter(name) or None
        except (sqlite3.Error, TypeError):
            return None

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
