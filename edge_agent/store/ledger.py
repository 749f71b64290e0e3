"""The loss ledger: every reading or message the gateway could not keep, and why.

It lives in the store's `loss` table, so it survives restarts; a store that
is set aside starts its new ledger with the entry that says so. The platform
gets the newest entries and the totals in `state.losses` (see docs/store.md).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

STATE_ENTRIES = 100
"""How many of the newest entries `state.losses` carries."""


@dataclass(frozen=True, slots=True)
class Loss:
    """One ledger entry: `items` sampled from `first_ms` to `last_ms`, and/or a `seq` range."""

    reason: str
    items: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    seq: tuple[int, int] | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"reason": self.reason}
        if self.items:
            entry.update(items=self.items, first=self.first_ms, last=self.last_ms)
        if self.seq is not None:
            entry["seq"] = list(self.seq)
        return entry


def record(db: sqlite3.Connection, loss: Loss) -> None:
    """Add an entry; the caller's transaction makes it durable with the change that caused it."""
    seq_first, seq_last = loss.seq if loss.seq else (None, None)
    db.execute(
        "INSERT INTO loss (at, reason, items, first, last, seq_first, seq_last) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            time.time_ns() // 1_000_000,
            loss.reason,
            loss.items,
            loss.first_ms,
            loss.last_ms,
            seq_first,
            seq_last,
        ),
    )


def entries(db: sqlite3.Connection, newest: int = STATE_ENTRIES) -> list[Loss]:
    rows = db.execute(
        "SELECT reason, items, first, last, seq_first, seq_last FROM loss ORDER BY id DESC LIMIT ?",
        (newest,),
    ).fetchall()
    return [
        Loss(reason, items, first, last, (sf, sl) if sf is not None else None)
        for reason, items, first, last, sf, sl in reversed(rows)
    ]


@dataclass(frozen=True, slots=True)
class Totals:
    entries: int
    items: int


def totals(db: sqlite3.Connection) -> Totals:
    count, items = db.execute("SELECT count(*), coalesce(sum(items), 0) FROM loss").fetchone()
    return Totals(int(count), int(items))
