"""The live readings committed and not yet packed, kept in memory too, so packing them
does not read back from SQLite what the store's thread has just written.

Every reading is still committed as a row (engine.py) and leaves only as part of a
packed message, deleted in the transaction that packs it: this is a copy, and
only a copy. Reading the rows back was the largest part of packing a live
message (the `SELECT`, and a tuple per row); the copy holds the very tuples the
commit inserted, and their row ids.

The copy is trusted only while it is known to hold every live row, in order:
- it starts empty when nothing is live (opening, `mark_live`) and takes each
  committed chunk of readings, whose ids follow on from what it holds
  (AUTOINCREMENT ids, one writer); a chunk that does not follow on, or more
  than MAX_ROWS (an uplink that does not take, in an outage), drops it;
- thinning and retention may delete live rows behind its back: the outbox
  checks, in the transaction that packs, that no live row lies before the copy
  and that the delete of the copied id range removed every one of them
  (`Stale` otherwise: rolled back, the copy dropped, packed from SQL);
- once dropped, packing reads SQL until it finds nothing live waiting, which is
  where the copy starts again, empty.
"""

from __future__ import annotations

from typing import Final

from edge_agent.model import Value

MAX_ROWS: Final = 50_000
"""Most rows copied; past it (an uplink that does not take) the copy is dropped."""

Row = tuple[int, int, Value, int]
"""(tag id, ts, value as stored, quality and flags), as inserted into `reading`."""


class Stale(Exception):
    """The copy no longer matches the live rows (something deleted some of them)."""


class LiveTail:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        """Every live row, oldest first, while `valid`."""
        self.first_id = 0
        """Row id of `rows[0]`; the others follow on, one by one."""
        self.valid = True

    def restart(self) -> None:
        """Nothing is live: the copy holds every live row again (none)."""
        self.rows, self.valid = [], True

    def drop(self) -> None:
        """The copy can no longer be trusted: packing reads SQL until `restart`."""
        self.rows, self.valid = [], False

    def committed(self, first_id: int, rows: list[Row]) -> None:
        """`rows` were committed with ids from `first_id` on."""
        if not self.valid or not rows:
            return
        if not self.rows:
            self.first_id = first_id
        elif first_id != self.first_id + len(self.rows):
            self.drop()
            return
        if len(self.rows) + len(rows) > MAX_ROWS:
            self.drop()
            return
        self.rows += rows

    def taken(self, count: int) -> None:
        """The first `count` rows were packed (and that packing committed)."""
        del self.rows[:count]
        self.first_id += count
