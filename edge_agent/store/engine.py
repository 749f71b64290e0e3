"""The store's engine: its SQLite connection and everything done with it, synchronously.

It runs on the store's own thread (actor.py) and nowhere else, so no SQLite call
and no fsync happens on the event loop. The facade (store.py) hands it work.

Invariants
----------
1. Nothing leaves the store before its PUBACK. Readings and events wait as rows
   until they are packed; a packed message waits as a row until acknowledged.
2. `seq` is given when a message is packed, in the same transaction that moves
   its items out of the waiting tables. A message is committed, and the durable
   high-water mark (hwm.py) raised above it with an fdatasync, before `take`
   returns it for its first publish; so every copy of a `seq` carries the same
   items and `hist`, and no `seq` is ever reused, across crashes and power loss.
   Every `seq` this store ever gave counts as possibly published: the mark is
   raised above them before the first message of a run, resends included.
3. Back-fill leaves oldest first (outbox.py).
4. Waiting readings are never loaded whole into memory; the counts of what
   waits are kept in the transactions that change them (`counter`), so nothing
   the agent asks often grows with the back-log.
5. No call raises for what SQLite or the disk does. A commit that fails (a
   full disk, an I/O error) gives back what it could not write; a store that
   turns out damaged is set aside and a fresh one takes over (`_recover`),
   declaring what the old one held. Reads that fail answer with nothing to send.
6. Every stretch in which the agent did not sample is declared: each commit
   writes the newest sample time (on a trusted clock) as a mark, so after any
   stop the ledger gets a stretch from that mark to the first sample after the
   restart (open until then). A commit that a power loss rolls back takes its
   mark with it: the stretch starts where what survived ends.

Row layout (schema in database.py)
----------------------------------
- `tag(id, tag, hz)`: a small integer per tag, so a reading row stays short.
- `reading(id, tag_id, ts, v, q)`: waiting readings; `v` keeps its SQLite type
  (REAL, INTEGER, TEXT or NULL), `q` the quality and flags (items.py). Row ids
  are AUTOINCREMENT: they never go back, since the live/back-fill boundary is one.
- `event(id, topic, ts, item)`: waiting `alarm` and `stat` items as JSON text.
- `message(seq, topic, hist, oldest, items)`: packed messages awaiting PUBACK.
- `counter(name, value)`: `next_seq`; `clean`; `last_sample`; the counts
  `readings`, `events`, `messages`; `thin_level`; the ledger totals, this store's
  and those carried from stores set aside.
- `loss(...)`: the loss ledger (ledger.py).
- `active_alarm(id, tag, kind, item)`: every alarm raised and not yet cleared.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Final, Literal

import structlog

from edge_agent.errors import StoreError
from edge_agent.logs import Repeats
from edge_agent.model import AlarmEvent
from edge_agent.store import items, ledger
from edge_agent.store.buffer import Batch, ReadingRow
from edge_agent.store.capacity import Budget, Dropped, Thinning
from edge_agent.store.database import (
    LastStop,
    Opened,
    SetAside,
    StoreLock,
    in_transaction,
    is_corruption,
    mark_clean,
    open_database,
    open_writable,
    read_held,
    set_aside_files,
)
from edge_agent.store.hwm import HighWaterMark
from edge_agent.store.ledger import Loss, Totals
from edge_agent.store.maintenance import Damaged, IntegrityWalk, Maintenance
from edge_agent.store.outbox import Admission, Boundary, Outbox, StoredMessage
from edge_agent.store.tail import Row, Stale

log = structlog.get_logger(component="store")

FLUSH_CHUNK: Final = 10_000
"""Most readings written in one transaction."""
FULL_RETRIES: Final = 8
"""Thinning steps a commit may make to fit its batch at the cap."""

Synchronous = Literal["normal", "full"]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """How the store is kept; mirrors the `store` config section."""

    path: Path
    max_bytes: int = 2 * 1024**3
    retention_s: float = 30 * 86400
    synchronous: Synchronous = "normal"


@dataclass(frozen=True, slots=True)
class Figures:
    """What waits and how the store is, after the last piece of work: read by the event loop
    without asking the store's thread."""

    readings: int = 0
    events: int = 0
    messages: int = 0
    backfill_readings: int = 0
    backfill_events: int = 0
    oldest_ms: int | None = None
    """Sample time of the oldest thing waiting, or None."""
    backfill_oldest_ms: int | None = None
    """Sample time of the oldest thing waiting from before the uplink connected."""
    live_oldest_ms: int | None = None
    """Sample time of the oldest live reading committed and not packed, or None."""
    losses: Totals = field(default_factory=lambda: Totals(0, 0))
    write_error: str | None = None
    disk_full: bool = False
    next_seq: int = 1
    seq_mark: int = 0


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit left: None when all was written, else the rest and why."""

    unwritten: Batch | None = None
    cause: str = ""


_INSERT_SIZES: Final = (256, 32, 4, 1)
_INSERT_READINGS: Final = {
    size: "INSERT INTO reading (tag_id, ts, v, q) VALUES " + ",".join(["(?, ?, ?, ?)"] * size)
    for size in _INSERT_SIZES
}


def insert_readings(db: sqlite3.Connection, rows: list[Row]) -> int:
    """Insert reading rows, up to 256 per statement: a third of what `executemany` costs per
    row (one statement each), which was the largest part of a commit. A few fixed sizes, so
    the connection's statement cache keeps them all. Returns the first row's id: the rows
    get ids one after another (AUTOINCREMENT, and the store's thread is the one writer)."""
    start = last_id = 0
    for size in _INSERT_SIZES:
        sql = _INSERT_READINGS[size]
        while len(rows) - start >= size:
            cursor = db.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            last_id = cursor.lastrowid or 0
            start += size
    return last_id - len(rows) + 1


@dataclass(frozen=True, slots=True)
class _Written:
    """What one commit's transaction wrote: the tags it added, and its reading rows with
    the id of the first."""

    new_tags: dict[str, tuple[int, str]]
    rows: list[Row]
    first_id: int


class _Full(Exception):
    """The store could not make room for a write."""


class Engine:
    def __init__(
        self,
        opened: Opened,
        *,
        settings: StoreSettings,
        limits: tuple[int, int],
        hwm: HighWaterMark,
        lock: StoreLock,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._hwm = hwm
        self._lock = lock
        page_size = opened.db.execute("PRAGMA page_size").fetchone()[0]
        self._budget = Budget.of(settings.max_bytes, page_size)
        self._write_failures = Repeats(log, "store_write", path=str(settings.path))
        self._read_failures = Repeats(log, "store_read", path=str(settings.path))
        self.write_error: str | None = None
        self._disk_full = False
        self._thinned = 0
        self.closed = False
        self._attach(opened)

    @classmethod
    def open(cls, settings: StoreSettings, limits: tuple[int, int]) -> Engine:
        """Lock, open (setting a damaged file aside), declare the stretch the last stop left,
        and resume `seq` above the high-water mark. Raises StoreError."""
        path = settings.path
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path)
        try:
            opened = open_database(path, settings.synchronous)
            hwm = HighWaterMark(path.with_name(path.name + ".seq"))
            return cls(opened, settings=settings, limits=limits, hwm=hwm, lock=lock)
        except (sqlite3.Error, OSError) as exc:
            lock.release()
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        except StoreError:
            lock.release()
            raise

    def _attach(self, opened: Opened) -> None:
        """Take `opened` as the store's connection (at opening, and after a recovery)."""
        db = self._db = opened.db
        db.execute("PRAGMA temp_store=MEMORY")
        self._walk = IntegrityWalk(self._settings.path)
        self._budget.fitted(self._settings.path).apply(db, checkpoints=False)
        self._prefixes: dict[int, str] = {}
        self._tag_ids: dict[str, int] = {}
        for tag_id, tag, hz in db.execute("SELECT id, tag, hz FROM tag"):
            self._tag_ids[tag] = tag_id
            self._prefixes[tag_id] = items.tag_prefix(tag, hz)
        counts = self._read_counts()  # what waits already is below the boundary: back-fill
        boundary = Boundary(
            self._next_id("reading"), self._next_id("event"), counts["readings"], counts["events"]
        )
        self._outbox = Outbox(db, boundary, self._limits, self._prefixes.__getitem__)
        thinning = Thinning(level=self._counter("thin_level"))
        retention_ms = int(self._settings.retention_s * 1000)
        self._maintenance = Maintenance(
            db, self._settings.path, self._budget, retention_ms, boundary, thinning
        )
        in_transaction(db, lambda: self._declare_opening(opened))
        self._packed_max = self._counter("next_seq") - 1
        self._stretch_open = self._has_open_stretch()
        self._counts = self._read_counts()
        self._totals = ledger.totals(db)

    # -- opening -----------------------------------------------------------------

    def _declare_opening(self, opened: Opened) -> None:
        """The ledger of a store set aside and what it held, the stretch the last stop left
        (open until the first sample), and `seq` above the mark."""
        if opened.set_aside is not None:
            self._declare_set_aside(opened.set_aside)
        self._open_stretch(opened.last_stop, set_aside=opened.set_aside is not None)
        self._resume_above_high_water_mark(declare=opened.set_aside is None)

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
        """Checkpoint and mark the store clean; then release the lock."""
        self.closed = True
        self._walk.close()
        try:
            mark_clean(self._db)
        except sqlite3.Error as exc:
            log.error("store_close_failed", error=str(exc))
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._hwm.close()
        self._lock.release()

    # -- writing -----------------------------------------------------------------

    def commit(self, batch: Batch) -> Committed:
        """Write `batch` in transactions of at most FLUSH_CHUNK readings.

        At the cap the oldest back-log is thinned to make room; a commit that
        still fails gives back what it could not write. A damaged store is set
        aside and the batch goes into a fresh one.
        """
        recovered = False
        while len(batch):
            chunk, rest = batch.readings[:FLUSH_CHUNK], batch.readings[FLUSH_CHUNK:]
            try:
                self._commit_making_room(batch, chunk)
            except _Full as exc:
                return self._cannot_write(batch, "disk full", str(exc))
            except sqlite3.Error as exc:
                if is_corruption(exc) and not recovered:
                    self._recover(exc)
                    recovered = True
                    continue
                return self._cannot_write(
                    batch, "store cannot write", f"{type(exc).__name__}: {exc}"
                )
            batch = Batch(readings=rest)
            self._written()
        return Committed()

    def _cannot_write(self, batch: Batch, cause: str, error: str) -> Committed:
        if self.write_error != error:
            self._write_failures.failed(error)  # store_write_failed, then a summary every 5 min
        self.write_error, self._disk_full = error, cause == "disk full"
        return Committed(batch, cause)

    def _written(self) -> None:
        if self.write_error is not None:
            self._write_failures.recovered()  # store_write_recovered
            self.write_error, self._disk_full = None, False

    def _commit_making_room(self, batch: Batch, readings: list[ReadingRow]) -> None:
        """Write the batch with `readings` in one transaction; at the cap, thin and retry."""
        for _ in range(FULL_RETRIES):
            try:
                written = in_transaction(self._db, lambda: self._write(batch, readings))
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                if not self._make_room():
                    raise _Full(str(exc)) from None
                continue
            # Only now, committed, do the caches learn the new tags and rows.
            for tag, (tag_id, hz) in written.new_tags.items():
                self._tag_ids[tag] = tag_id
                self._prefixes[tag_id] = items.tag_prefix(tag, hz)
            self._outbox.tail.committed(written.first_id, written.rows)
            if self._stretch_open and batch.resumed_ms is not None:
                self._stretch_open = False
            self._counts = self._read_counts()
            if batch.losses:
                self._totals = ledger.totals(self._db)
            return
        raise _Full("still full after thinning")

    def _write(self, batch: Batch, readings: list[ReadingRow]) -> _Written:
        """Write the batch with `readings` (in a transaction)."""
        db = self._db
        new_tags: dict[str, tuple[int, str]] = {}
        try:  # every tag known: the common case, in one pass
            rows = [(self._tag_ids[tag], ts, v, q) for tag, _, ts, v, q in readings]
        except KeyError:
            new_tags = self._insert_tags(readings)
            ids = self._tag_ids | {tag: tag_id for tag, (tag_id, _) in new_tags.items()}
            rows = [(ids[tag], ts, v, q) for tag, _, ts, v, q in readings]
        first_id = insert_readings(db, rows)
        db.executemany("INSERT INTO event (topic, ts, item) VALUES (?, ?, ?)", batch.events)
        db.executemany(
            "INSERT OR REPLACE INTO active_alarm (id, tag, kind, item) VALUES (?, ?, ?, ?)",
            batch.raised,
        )
        db.executemany("DELETE FROM active_alarm WHERE id = ?", ((i,) for i in batch.cleared))
        acked = self._outbox.ack(batch.acks)
        db.executemany(
            "UPDATE counter SET value = value + ? WHERE name = ?",
            [(len(readings), "readings"), (len(batch.events), "events"), (-acked, "messages")],
        )
        for loss in batch.losses:
            ledger.record(db, loss)
        if batch.sampled_ms is not None:
            db.execute(
                "UPDATE counter SET value = max(value, ?) WHERE name = 'last_sample'",
                (batch.sampled_ms,),
            )
        if self._stretch_open and batch.resumed_ms is not None:
            ledger.close_open(db, batch.resumed_ms)
        return _Written(new_tags, rows, first_id)

    def _insert_tags(self, readings: list[ReadingRow]) -> dict[str, tuple[int, str]]:
        """Add the tags of `readings` the store does not know yet: tag -> (id, hazard)."""
        new_tags: dict[str, tuple[int, str]] = {}
        for tag, hz, *_ in readings:
            if tag not in self._tag_ids and tag not in new_tags:
                (tag_id,) = self._db.execute(
                    "INSERT INTO tag (tag, hz) VALUES (?, ?) "
                    "ON CONFLICT (tag) DO UPDATE SET hz = excluded.hz RETURNING id",
                    (tag, hz),
                ).fetchone()
                new_tags[tag] = (tag_id, hz)
        return new_tags

    def _make_room(self) -> bool:
        """One thinning step; False when nothing could be freed (or even the delete failed)."""
        try:
            dropped = self._maintenance.make_room()
        except sqlite3.OperationalError as exc:
            log.debug("store_thin_failed", error=str(exc))
            return False
        if dropped is not None:
            self._note_dropped(dropped)
        if self._maintenance.checkpoints:  # never before the file is checked (maintenance.py)
            with contextlib.suppress(sqlite3.OperationalError):
                # Move the WAL into the pages just freed, so it is reused rather than grown.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return dropped is not None

    def _recover(self, exc: sqlite3.Error | Damaged) -> None:
        """The store is damaged: set it aside, declare what it held, go on in a fresh one.

        While the integrity walk still holds its read-only connection, closing the
        damaged store does not fold its WAL into it: the file set aside is as found.
        """
        path = self._settings.path
        held = read_held(self._db)
        last_stop = LastStop(clean=False, last_sample_ms=self._mark_or_none())
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        aside = set_aside_files(path, str(exc), held)
        self._walk.close()
        self._attach(Opened(open_writable(path, self._settings.synchronous), last_stop, aside))

    # -- reading out -------------------------------------------------------------

    def mark_live(self) -> None:
        """The uplink is up from now: what waits already is back-fill (`hist: true`)."""
        try:
            boundary = self._outbox.boundary
            boundary.reading, boundary.event = self._next_id("reading"), self._next_id("event")
            self._outbox.tail.restart()
            boundary.backfill_readings = self._counts["readings"]
            boundary.backfill_events = self._counts["events"]
        except sqlite3.Error as exc:
            self._read_failed("mark_live", exc)

    def take(
        self, admission: Admission, skip: set[int], now_ms: int, linger_ms: int
    ) -> list[StoredMessage]:
        """What the uplink may publish now: unacknowledged messages again first, then newly
        packed ones, as `admission` allows; the `seq` mark is raised above them first."""
        outbox = self._outbox
        taken: list[StoredMessage] = []
        try:
            for message in outbox.unsent(skip, admission.slots, admission.priority):
                if not admission.admit(message, packed=False):
                    break  # resends keep their order; new alarms may still be packed
                taken.append(message)
            taken += self._pack(admission, now_ms, linger_ms)
        except sqlite3.Error as exc:
            self._read_failed("pack", exc)
        if taken:
            self._hwm.raise_to(max(self._packed_max, *(m.seq for m in taken)))
        return taken

    def _pack(self, admission: Admission, now_ms: int, linger_ms: int) -> list[StoredMessage]:
        """New messages, each in its own transaction, while the admission has room."""
        packed: list[StoredMessage] = []
        while admission.slots > 0:
            message = self._pack_one(admission, now_ms, linger_ms)
            if message is None:
                break
            admission.admit(message, packed=True)
            self._packed_max = max(self._packed_max, message.seq)
            packed.append(message)
        if packed:
            self._counts = self._read_counts()
        return packed

    def _pack_one(self, admission: Admission, now_ms: int, linger_ms: int) -> StoredMessage | None:
        """At the cap, thin and choose the items afresh, so that no item can be both packed
        and declared as thinned; None when nothing is due, or no room is left."""
        for _ in range(FULL_RETRIES):
            try:
                found = in_transaction(
                    self._db, lambda: self._outbox.pack_next(admission, now_ms, linger_ms)
                )
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                if self._make_room():
                    continue
                return None  # a full disk: nothing can be packed until room returns
            except Stale as exc:  # thinning or retention took live rows: read them back
                log.debug("store_tail_dropped", reason=str(exc))
                self._outbox.tail.drop()
                continue
            if found is None:
                return None
            self._outbox.settle(found)
            return found.message
        return None

    def maintain(self, now_ms: int) -> bool:
        """One bounded step of housekeeping; True when more is waiting."""
        try:
            more, dropped = self._maintenance.step(now_ms, self._walk)
        except Damaged as exc:
            self._recover(exc)
            return True
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, sqlite3.Error) and is_corruption(exc):
                self._recover(exc)
                return True
            log.warning("store_maintenance_failed", error=str(exc))
            return False
        if dropped is not None:
            self._note_dropped(dropped)
            self._counts = self._read_counts()
        if not more and self._thinned:
            log.warning(
                "store_thinned", items=self._thinned, level=self._maintenance.thinning.level
            )
            self._thinned = 0
        return more

    def _note_dropped(self, dropped: Dropped) -> None:
        if dropped.loss.reason.startswith("store full"):
            self._thinned += dropped.loss.items
        self._totals = ledger.totals(self._db)

    def figures(self) -> Figures:
        """What waits, and how the store is (a few indexed reads)."""
        counts, boundary = self._counts, self._outbox.boundary
        try:
            oldest, backfill_oldest, live_oldest = self._oldest(boundary)
        except sqlite3.Error as exc:
            self._read_failed("figures", exc)
            oldest = backfill_oldest = live_oldest = None
        return Figures(
            readings=counts["readings"],
            events=counts["events"],
            messages=counts["messages"],
            backfill_readings=boundary.backfill_readings,
            backfill_events=boundary.backfill_events,
            oldest_ms=oldest,
            backfill_oldest_ms=backfill_oldest,
            live_oldest_ms=live_oldest,
            losses=self._totals,
            write_error=self.write_error,
            disk_full=self._disk_full,
            next_seq=counts["next_seq"],
            seq_mark=self._hwm.value,
        )

    def _oldest(self, boundary: Boundary) -> tuple[int | None, int | None, int | None]:
        """The oldest sample time waiting, the oldest of what waits below the boundary
        (packed messages count in both), and that of the oldest live reading not packed:
        three indexed reads, a fourth while back-fill readings wait."""
        db = self._db
        (packed,) = db.execute("SELECT min(oldest) FROM message").fetchone()
        reading = db.execute("SELECT id, ts FROM reading ORDER BY id LIMIT 1").fetchone()
        event = db.execute("SELECT id, ts FROM event ORDER BY id LIMIT 1").fetchone()
        rows = ((reading, boundary.reading), (event, boundary.event))
        waiting = [row[1] for row, _ in rows if row is not None]
        below = [row[1] for row, live_from in rows if row is not None and row[0] < live_from]
        if packed is not None:
            waiting.append(packed)
            below.append(packed)
        live = reading
        if reading is not None and reading[0] < boundary.reading:
            live = db.execute(
                "SELECT id, ts FROM reading WHERE id >= ? ORDER BY id LIMIT 1", (boundary.reading,)
            ).fetchone()
        return min(waiting, default=None), min(below, default=None), live and live[1]

    def losses(self) -> tuple[list[Loss], Totals]:
        """The newest ledger entries and the totals since installation."""
        try:
            return ledger.entries(self._db), ledger.totals(self._db)
        except sqlite3.Error as exc:
            self._read_failed("losses", exc)
            return [], Totals(0, 0)

    def active_alarms(self) -> list[AlarmEvent]:
        """The `raised` events of the alarms active when the agent last stopped."""
        try:
            rows = self._db.execute("SELECT item FROM active_alarm ORDER BY rowid").fetchall()
        except sqlite3.Error as exc:
            self._read_failed("active_alarms", exc)
            return []
        return [items.alarm_event(item) for (item,) in rows]

    def repack(self, seqs: list[int], max_bytes: int) -> None:
        """Messages too large for the broker's packet size, each split under new `seq`s in
        one transaction with the declaration of its old `seq` (outbox.repack)."""

        def split() -> None:
            for seq in seqs:
                for loss in self._outbox.repack(seq, max_bytes):
                    ledger.record(self._db, loss)
                    log.warning("message_repacked", **loss.as_json())

        try:
            in_transaction(self._db, split)
            self._counts = self._read_counts()
        except sqlite3.Error as exc:
            self._read_failed("repack", exc)  # still too large: tried again at the next offer

    def set_limits(self, limits: tuple[int, int]) -> None:
        """`uplink.batch` changed (a reload): messages packed from now on follow it."""
        self._limits = limits
        self._outbox.max_items, self._outbox.max_bytes = limits

    def _read_failed(self, what: str, exc: sqlite3.Error) -> None:
        """A read (packing, counting) failed: set a damaged store aside, else log the change."""
        if is_corruption(exc):
            self._recover(exc)
        else:
            self._read_failures.failed(f"{what}: {type(exc).__name__}: {exc}")

    # -- small reads -------------------------------------------------------------

    def _read_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, value FROM counter").fetchall())

    def _counter(self, name: str) -> int:
        (value,) = self._db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
        return int(value)

    def _mark_or_none(self) -> int | None:
        """The sample mark of a store that may be damaged: None when unreadable or 0."""
        try:
            return self._counter("last_sample") or None
        except (sqlite3.Error, TypeError):
            return None

    def _has_open_stretch(self) -> bool:
        sql = "SELECT 1 FROM loss WHERE first IS NOT NULL AND last IS NULL LIMIT 1"
        return self._db.execute(sql).fetchone() is not None

    def _next_id(self, table: str) -> int:
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchone()
        return (int(row[0]) if row else 0) + 1
