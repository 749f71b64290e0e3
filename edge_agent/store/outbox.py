"""The outbox: what waits becomes messages with their `seq`, and leaves only when acknowledged.

Runs on the store's thread (engine.py). Packing order, within what the
uplink's window admits for one top-up (`Admission`, decided by the uplink):
messages packed before and not yet acknowledged are offered again first
(alarms, then the oldest `seq`); then new ones: alarm events (back-fill
first), live readings once the oldest has lingered or a message is full,
statistics, then back-fill readings. With priority off (a switch for tests)
back-fill readings go first and resends go in `seq` order.

A message is committed with its `seq` in the same transaction that moves its
items out of the waiting tables and updates the counts of what waits; every
copy of a `seq` carries the same items and `hist`. Back-fill and live items are
never mixed in one message: rows below the live boundary (the next row ids when
the uplink connected) are back-fill. Live readings are packed from the copy the
store's thread keeps of the newest of them (tail.py); those older than the copy,
and all of them while it is not trusted, are read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from edge_agent.model import Value
from edge_agent.store import items
from edge_agent.store.ledger import Loss
from edge_agent.store.tail import LiveTail, Row, Stale

Kind = Literal["alarm", "live", "stat", "backfill"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A packed message: everything of the envelope but `sent` and the identity."""

    seq: int
    topic: str
    hist: bool
    oldest_ms: int
    items_json: str


class Admission(Protocol):
    """What one top-up of the uplink's in-flight window may still take (uplink/window.py)."""

    @property
    def priority(self) -> bool:
        """Alarms first, and readings bounded by bytes; else first in, first out."""
        ...

    @property
    def slots(self) -> int:
        """Messages that may still be taken."""
        ...

    @property
    def max_bytes(self) -> int:
        """Largest readings message to pack now."""
        ...

    @property
    def ceiling_bytes(self) -> int:
        """Largest message of any kind the broker takes now (its Maximum Packet Size, less
        the packet around the payload)."""
        ...

    def allows(self, kind: Kind) -> bool:
        """Whether a new message of this kind may be packed now."""
        ...

    def admit(self, message: StoredMessage, *, packed: bool) -> bool:
        """Count `message` in; False (and not counted) when an offered resend does not fit.
        A message just `packed` for this admission is always counted."""
        ...


@dataclass(frozen=True, slots=True)
class Packed:
    """One message just packed, and what it took: `items` rows of `table`, the first ones
    of the live tail when `tail`."""

    message: StoredMessage
    table: Literal["reading", "event"]
    items: int
    tail: bool = False


@dataclass
class Boundary:
    """Row ids from which rows are live (set when the uplink connects); below them, what
    waited is back-fill. The counts of what waits below them are kept as rows go."""

    reading: int
    event: int
    backfill_readings: int = 0
    backfill_events: int = 0


class Outbox:
    def __init__(
        self,
        db: sqlite3.Connection,
        boundary: Boundary,
        limits: tuple[int, int],
        prefix: Callable[[int], str],
    ) -> None:
        self._db = db
        self.boundary = boundary
        self.max_items, self.max_bytes = limits
        """Most items, and most bytes, of one message (`uplink.batch`; a reload may change
        them)."""
        self._prefix = prefix
        """Tag id -> the start of its items (engine.py keeps them)."""
        self.tail = LiveTail()
        """The live rows, also in memory (tail.py); none are live when an outbox opens."""

    def unsent(self, skip: set[int], limit: int, alarms_first: bool) -> list[StoredMessage]:
        """Packed messages not in `skip`, alarms then the oldest `seq` first."""
        order = "topic != 'alarm', seq" if alarms_first else "seq"
        rows = self._db.execute(
            f"SELECT seq, topic, hist, oldest, items FROM message ORDER BY {order} LIMIT ?",
            (len(skip) + limit,),
        ).fetchall()
        unsent = [StoredMessage(s, t, bool(h), o, i) for s, t, h, o, i in rows if s not in skip]
        return unsent[:limit]

    def pack_next(self, admission: Admission, now_ms: int, linger_ms: int) -> Packed | None:
        """Pack the next message the admission allows, in the order of the module docstring;
        None when nothing is due. Call inside a transaction, and `settle` what it packed
        once that transaction is committed."""
        back_fill = f"id < {self.boundary.reading}"
        steps: list[tuple[Kind, Callable[[], bool], Callable[[], Packed]]] = [
            ("alarm", lambda: self._has_events("alarm"), self._pack_events("alarm", admission)),
            ("live", lambda: self._live_due(now_ms, linger_ms), lambda: self._pack_live(admission)),
            ("stat", lambda: self._has_events("stat"), self._pack_events("stat", admission)),
            ("backfill", lambda: self._has_rows(back_fill), self._pack_backfill(admission)),
        ]
        if not admission.priority:
            steps.insert(0, steps.pop())
        for kind, due, pack in steps:
            if admission.allows(kind) and due():
                return pack()
        return None

    def settle(self, packed: Packed) -> None:
        """A packing was committed: its back-fill no longer waits. Counted only now, so that
        a transaction rolled back (a full disk) leaves the counts as they were."""
        if packed.tail:
            self.tail.taken(packed.items)
        if packed.message.hist:
            if packed.table == "reading":
                self.boundary.backfill_readings -= packed.items
            else:
                self.boundary.backfill_events -= packed.items

    def repack(self, seq: int, max_bytes: int) -> list[Loss]:
        """Split message `seq` into messages of at most `max_bytes` under new `seq`s, and
        return what to declare: a `seq`'s items never change, so the old number is
        skipped; an item too large for any message of `max_bytes` is lost. Nothing when
        `seq` is gone (acknowledged meanwhile). Call inside a transaction."""
        row = self._db.execute(
            "SELECT topic, hist, items FROM message WHERE seq = ?", (seq,)
        ).fetchone()
        if row is None:
            return []
        topic, hist, items_json = row
        self._db.execute("DELETE FROM message WHERE seq = ?", (seq,))
        self._count("messages", -1)
        texts = items.split(items_json)
        kept = [text for text in texts if items.fits_alone(text, max_bytes)]
        new_seqs: list[int] = []
        while kept:
            taken = items.fit(kept, max_bytes)
            chunk, kept = kept[:taken], kept[taken:]
            oldest = min(items.item_ts(text) for text in chunk)
            new_seqs.append(self._message(topic, bool(hist), oldest, chunk).seq)
        again = f"sent again as seq {new_seqs[0]}-{new_seqs[-1]}" if new_seqs else "none sent"
        declared = [
            Loss(f"seq re-packed smaller for the broker's packet size ({again})", seq=(seq, seq))
        ]
        lost = [items.item_ts(text) for text in texts if not items.fits_alone(text, max_bytes)]
        if lost:
            reason = f"{topic} item larger than the broker's maximum packet size"
            declared.append(Loss(reason, items=len(lost), first_ms=min(lost), last_ms=max(lost)))
        return declared

    def ack(self, seqs: list[int]) -> int:
        """Delete acknowledged messages; returns how many were still there."""
        before = self._db.total_changes
        self._db.executemany("DELETE FROM message WHERE seq = ?", ((s,) for s in seqs))
        return self._db.total_changes - before

    # -- packing ---------------------------------------------------------------

    def _pack_live(self, admission: Admission) -> Packed:
        tail = self.tail
        if not tail.behind:
            return self._pack_tail(admission)
        before_tail = f" AND id < {tail.first_id}" if tail.rows else ""
        return self._pack_readings(f"id >= {self.boundary.reading}{before_tail}", False, admission)

    def _pack_backfill(self, admission: Admission) -> Callable[[], Packed]:
        return lambda: self._pack_readings(f"id < {self.boundary.reading}", True, admission)

    def _pack_readings(self, where: str, hist: bool, admission: Admission) -> Packed:
        """Readings read back from SQL: back-fill, and live ones older than the tail's copy."""
        rows = self._db.execute(
            f"SELECT id, tag_id, ts, v, q FROM reading WHERE {where} ORDER BY id LIMIT ?",
            (self.max_items,),
        ).fetchall()
        prefix = self._prefix

        def render(chunk: Sequence[tuple[int, int, int, Value, int]]) -> list[str]:
            return [items.reading_item(prefix(tag), ts, v, q) for _, tag, ts, v, q in chunk]

        texts = items.fitting(rows, render, self._budget(admission))
        taken = len(texts)
        first, last = rows[0][0], rows[taken - 1][0]
        self._db.execute("DELETE FROM reading WHERE id BETWEEN ? AND ?", (first, last))
        return self._readings_packed(hist, texts, [row[2] for row in rows[:taken]])

    def _pack_tail(self, admission: Admission) -> Packed:
        """Live readings from the tail's copy; raises Stale (rolled back, then packed from
        SQL) when a live row lies before the copy or one it holds is gone."""
        first = self.tail.first_id
        if self._has_rows(f"id >= {self.boundary.reading} AND id < {first}"):
            raise Stale(f"live readings before row {first}")
        rows: list[Row] = self.tail.rows[: self.max_items]
        prefix = self._prefix

        def render(chunk: Sequence[Row]) -> list[str]:
            return [items.reading_item(prefix(tag), ts, v, q) for tag, ts, v, q in chunk]

        texts = items.fitting(rows, render, self._budget(admission))
        taken = len(texts)
        before = self._db.total_changes
        self._db.execute("DELETE FROM reading WHERE id BETWEEN ? AND ?", (first, first + taken - 1))
        if self._db.total_changes - before != taken:
            raise Stale(f"live readings of rows {first}-{first + taken - 1} gone")
        times = [row[1] for row in rows[:taken]]
        return self._readings_packed(False, texts, times, from_tail=True)

    def _budget(self, admission: Admission) -> int:
        """Largest readings message to pack for this admission."""
        return min(admission.max_bytes, admission.ceiling_bytes, self.max_bytes)

    def _readings_packed(
        self, hist: bool, texts: list[str], times: list[int], *, from_tail: bool = False
    ) -> Packed:
        """The message of readings just deleted from `reading`: their `texts` and `times`."""
        self._count("readings", -len(texts))
        message = self._message("rt", hist, min(times), texts)
        return Packed(message, "reading", len(texts), from_tail)

    def _pack_events(self, topic: str, admission: Admission) -> Callable[[], Packed]:
        return lambda: self._pack_topic(topic, min(self.max_bytes, admission.ceiling_bytes))

    def _pack_topic(self, topic: str, max_bytes: int) -> Packed:
        """Events of one topic, back-fill first: a message never mixes back-fill and live."""
        below = self.boundary.event
        hist = self._has_events(topic, f"AND id < {below}")
        where = f"id < {below}" if hist else f"id >= {below}"
        rows = self._db.execute(
            f"SELECT id, ts, item FROM event WHERE topic = ? AND {where} ORDER BY id LIMIT ?",
            (topic, self.max_items),
        ).fetchall()
        texts = [item for _, _, item in rows]
        taken = items.fit(texts, max_bytes)
        rows = rows[:taken]
        self._db.executemany("DELETE FROM event WHERE id = ?", ((row[0],) for row in rows))
        self._count("events", -taken)
        message = self._message(topic, hist, min(ts for _, ts, _ in rows), texts[:taken])
        return Packed(message, "event", taken)

    def _message(self, topic: str, hist: bool, oldest_ms: int, texts: list[str]) -> StoredMessage:
        items_json = "[" + ",".join(texts) + "]"
        (seq,) = self._db.execute(
            "UPDATE counter SET value = value + 1 WHERE name = 'next_seq' RETURNING value - 1"
        ).fetchone()
        self._db.execute(
            "INSERT INTO message (seq, topic, hist, oldest, items) VALUES (?, ?, ?, ?, ?)",
            (seq, topic, int(hist), oldest_ms, items_json),
        )
        self._count("messages", 1)
        return StoredMessage(seq, topic, hist, oldest_ms, items_json)

    def _count(self, name: str, change: int) -> None:
        self._db.execute("UPDATE counter SET value = value + ? WHERE name = ?", (change, name))

    def _live_due(self, now_ms: int, linger_ms: int) -> bool:
        """The oldest live reading has lingered, or a message of them is full."""
        tail = self.tail
        if tail.behind:
            first = self._db.execute(
                "SELECT id, ts FROM reading WHERE id >= ? ORDER BY id LIMIT 1",
                (self.boundary.reading,),
            ).fetchone()
            if first is None:
                tail.restart()  # nothing live waits: the copy holds it all again
                return False
            if not tail.rows or first[0] < tail.first_id:
                return first[1] <= now_ms - linger_ms or self._live_rows_fill_a_message()
            tail.caught_up()  # what lay before the copy is packed: it serves again
        rows = tail.rows
        return bool(rows) and (rows[0][1] <= now_ms - linger_ms or len(rows) >= self.max_items)

    def _live_rows_fill_a_message(self) -> bool:
        full = self._db.execute(
            "SELECT 1 FROM reading WHERE id >= ? ORDER BY id LIMIT 1 OFFSET ?",
            (self.boundary.reading, self.max_items - 1),
        ).fetchone()
        return full is not None

    def _has_events(self, topic: str, where: str = "") -> bool:
        sql = f"SELECT 1 FROM event WHERE topic = ? {where} LIMIT 1"
        return self._db.execute(sql, (topic,)).fetchone() is not None

    def _has_rows(self, where: str) -> bool:
        return (
            self._db.execute(f"SELECT 1 FROM reading WHERE {where} LIMIT 1").fetchone() is not None
        )
