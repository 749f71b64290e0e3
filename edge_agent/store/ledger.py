"""The loss ledger: everything the gateway could not keep or did not sample, and why.

It lives in the store's `loss` table, so it survives restarts, and it is kept
since installation: a store that is set aside hands its entries and totals on
to the fresh one. The platform gets the newest entries and the totals in
`state.losses` (see docs/store.md).

An entry covers readings (`items`, when they could be counted, sampled from
`first` to `last`), a stretch of time in which nothing was sampled (`first`
and `last`, no count), and/or a `seq` range. A stretch whose end is not known
yet (a stop, until the first sample after the restart on a synchronised
clock) is open: `last` is NULL until `close_open` sets it.

A new entry that continues the newest entry of its reason (among the newest
`STATE_ENTRIES`, starting within `COALESCE_MS` of its end) is merged into it,
never into one of another reason: a recurring loss (a device that keeps
missing its poll deadlines, while others do too) stays one entry that grows,
and the newest-100 view the platform gets still reaches back over an outage.

The totals since installation are counters (`loss_entries`, `loss_items`, and
the `carried_` ones of stores set aside) kept in the transactions that write
the entries: reading them costs the same however long the ledger grew.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

STATE_ENTRIES: Final = 100
"""How many of the newest entries `state.losses` carries."""
COALESCE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Loss:
    """One ledger entry: `items` sampled from `first_ms` to `last_ms`, and/or a `seq` range.

    `items` is 0 where nothing was counted; `last_ms` None with a `first_ms` is open.
    """

    reason: str
    items: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    seq: tuple[int, int] | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"reason": self.reason}
        if self.items:
            entry["items"] = self.items
        if self.first_ms is not None:
            entry["first"] = self.first_ms
        if self.last_ms is not None:
            entry["last"] = self.last_ms
        if self.seq is not None:
            entry["seq"] = list(self.seq)
        return entry


def record(db: sqlite3.Connection, loss: Loss) -> None:
    """Add an entry, or grow the newest one of its reason that it continues; the caller's
    transaction makes it durable with the change that caused it."""
    first, last = loss.first_ms, loss.last_ms
    if (
        loss.seq is None
        and first is not None
        and last is not None
        and _grow_newest(db, loss.reason, loss.items, first, last)
    ):
        return
    _insert(db, loss)


def _insert(db: sqlite3.Connection, loss: Loss) -> None:
    seq_first, seq_last = loss.seq if loss.seq else (None, None)
    db.execute(
        "INSERT INTO loss (at, reason, items, first, last, seq_first, seq_last) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (_now_ms(), loss.reason, loss.items, loss.first_ms, loss.last_ms, seq_first, seq_last),
    )
    _count(db, entries=1, items=loss.items)


def _count(db: sqlite3.Connection, *, entries: int, items: int) -> None:
    db.executemany(
        "UPDATE counter SET value = value + ? WHERE name = ?",
        [(entries, "loss_entries"), (items, "loss_items")],
    )


def _grow_newest(db: sqlite3.Connection, reason: str, items: int, first: int, last: int) -> bool:
    """Merge into the newest entry of this reason (among the newest STATE_ENTRIES) if it is
    a closed stretch that this one continues or overlaps (within COALESCE_MS); False if
    there is none."""
    newest = db.execute(
        "SELECT id, first, last FROM (SELECT id, reason, first, last, seq_first FROM loss "
        "ORDER BY id DESC LIMIT ?) WHERE reason = ? AND seq_first IS NULL "
        "ORDER BY id DESC LIMIT 1",
        (STATE_ENTRIES, reason),
    ).fetchone()
    if newest is None:
        return False
    entry_id, newest_first, newest_last = newest
    if newest_first is None or newest_last is None:
        return False
    if first > newest_last + COALESCE_MS or last < newest_first - COALESCE_MS:
        return False
    db.execute(
        "UPDATE loss SET items = items + ?, first = min(first, ?), last = max(last, ?), at = ? "
        "WHERE id = ?",
        (items, first, last, _now_ms(), entry_id),
    )
    _count(db, entries=0, items=items)
    return True


def close_open(db: sqlite3.Connection, last_ms: int) -> int:
    """End every open stretch at `last_ms` (the first trusted sample after it); returns how many."""
    cursor = db.execute(
        "UPDATE loss SET last = max(?, first) WHERE first IS NOT NULL AND last IS NULL",
        (last_ms,),
    )
    return cursor.rowcount


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
    """Since installation: this store's entries and those of the stores set aside before it."""
    names = ("loss_entries", "loss_items", "carried_entries", "carried_items")
    counted = dict(db.execute(f"SELECT name, value FROM counter WHERE name IN {names}").fetchall())
    if "loss_entries" not in counted:  # a store of an older schema, read as it is set aside
        count, items = db.execute("SELECT count(*), coalesce(sum(items), 0) FROM loss").fetchone()
        counted |= {"loss_entries": count, "loss_items": items}
    return Totals(
        int(counted["loss_entries"]) + counted.get("carried_entries", 0),
        int(counted["loss_items"]) + counted.get("carried_items", 0),
    )


def carry_over(db: sqlite3.Connection, kept: list[Loss], kept_totals: Totals) -> None:
    """Start a fresh store's ledger with the newest entries of the one set aside; the totals
    of the entries not copied are carried in counters (in the caller's transaction)."""
    for loss in kept:
        _insert(db, loss)
    db.execute(
        "UPDATE counter SET value = value + ? WHERE name = 'carried_entries'",
        (max(kept_totals.entries - len(kept), 0),),
    )
    db.execute(
        "UPDATE counter SET value = value + ? WHERE name = 'carried_items'",
        (max(kept_totals.items - sum(loss.items for loss in kept), 0),),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
