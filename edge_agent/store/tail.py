"""The newest live readings committed and not yet packed, kept in memory too, so packing
them does not read back from SQLite what the store's thread has just written.

Every reading is still committed as a row (engine.py) and leaves only as part of a
packed message, deleted in the transaction that packs it: this is a copy, and
only a copy. Reading the rows back was the largest part of packing a live
message (the `SELECT`, and a tuple per row); the copy holds the very tuples the
commit inserted, and their row ids.

The copy holds a run of live rows with consecutive ids, the newest ones:
- it takes each committed chunk of readings, whose ids follow on from what it
  holds (AUTOINCREMENT ids, one writer); a chunk that does not follow on
  starts the copy again from that chunk;
- past MAX_ROWS (an uplink that takes less than is sampled, or none in an
  outage) it lets go of its oldest rows;
- either way older live rows may then lie before the copy (`behind`): they are
  packed first, read back from SQL, until none is left before the copy;
- thinning and retention may delete live rows behind its back: the outbox
  checks, in the transaction that packs, that no live row lies before the copy
  and that the delete of the copied id range removed every one of them
  (`Stale` otherwise: rolled back, the copy dropped, and started again by the
  next commit).
So a back-log costs the SQL reads of its oldest part only, and once it is
packed the copy serves again, without waiting for a moment with nothing live.
"""

from __future__ import annotations

from typing import Final

from edge_agent.model import Value

MAX_ROWS: Final = 50_000
"""Most rows copied (about 9 MB, held while that many wait, an outage's included); past
it the oldest are let go and read back from SQL."""

Row = tuple[int, int, Value, int]
"""(tag id, ts, value as stored, quality and flags), as inserted into `reading`."""


class Stale(Exception):
    """The copy no longer matches the live rows (something deleted some of them)."""


class LiveTail:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        """Live rows with consecutive ids, oldest first."""
        self.first_id = 0
        """Row id of `rows[0]`; the others follow on, one by one."""
        self.behind = False
        """Live rows may lie before the copy: they are packed from SQL first."""

    def restart(self) -> None:
        """Nothing is live: the copy holds every live row (none)."""
        self.rows, self.behind = [], False

    def drop(self) -> None:
        """The copy no longer matches the rows: it starts again with the next commit."""
        self.rows, self.behind = [], True

    def caught_up(self) -> None:
        """No live row lies before the copy any more."""
        self.behind = False

    def committed(self, first_id: int, rows: list[Row]) -> None:
        """`rows` were committed with ids from `first_id` on."""
        if not rows:
            return
        if self.rows and first_id != self.first_id + len(self.rows):
            self.rows, self.behind = [], True  # the rows in between are in SQL only
        if not self.rows:
            self.first_id = first_id
        self.rows += rows
        excess = len(self.rows) - MAX_ROWS
        if excess > 0:
            del self.rows[:excess]
            self.first_id += excess
            self.behind = True

    def taken(self, count: int) -> None:
        """The first `count` rows were packed (and that packing committed)."""
        del self.rows[:count]
        self.first_id += count
