"""The store's housekeeping, in bounded steps: the integrity walk, retention, the cap, shrinking.

Runs on the store's thread (engine.py), one step per call, each bounded in
rows or pages (capacity.py), so that an alarm's commit never waits behind more
than one step: the actor (actor.py) runs a commit or a packing ahead of the
next step. `step()` says whether more work is waiting, so the caller comes
back at once or at the next period.

The integrity walk reads every table's tree once after each start, a slice of
`WALK_SLICE` rows per step, on a read-only connection (database.py: the file
is checked without being written). Until it is through, the WAL is not folded
into the file, so a store it finds damaged is set aside as it was found; but
the cap comes first: once the WAL outgrows `HELD_WAL_MAX` (a drain and
thinning write fast while a 2 GiB file is walked), checkpoints resume before
the walk is through, and the log says so (`store_checkpoints_resumed`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import structlog

from edge_agent.store import capacity
from edge_agent.store.capacity import Budget, Dropped, Thinning
from edge_agent.store.database import TABLES, drop_found_wal, in_transaction
from edge_agent.store.outbox import Boundary

log = structlog.get_logger(component="store")

WALK_SLICE: Final = 100_000
"""Rows of one table counted per step of the integrity walk (about 8 ms on the reference
machine: an alarm's commit waits for at most one)."""
HELD_WAL_MAX: Final = 64 * 1024**2
"""Most bytes of WAL held back from the file while the walk runs, beyond the WAL found at
the start (less on a small cap)."""


class Damaged(Exception):
    """The integrity walk met a damaged page; the store is to be set aside."""


class IntegrityWalk:
    """Counts every table slice by slice on a read-only connection, once."""

    def __init__(self, path: Path) -> None:
        self.reader: sqlite3.Connection | None = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False
        )
        self._tables = list(TABLES)
        self._next_id = 0

    @property
    def done(self) -> bool:
        return self.reader is None

    def step(self) -> None:
        """Walk one slice; raises Damaged when a page of it is broken."""
        reader = self.reader
        assert reader is not None
        table = self._tables[0]
        try:
            (high,) = reader.execute(f"SELECT max(rowid) FROM {table}").fetchone()
            if high is None or self._next_id > high:
                self._next_table()
                return
            reader.execute(
                f"SELECT count(*) FROM {table} WHERE rowid BETWEEN ? AND ?",
                (self._next_id, self._next_id + WALK_SLICE - 1),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise Damaged(f"{table}: {exc}") from None
        self._next_id += WALK_SLICE

    def _next_table(self) -> None:
        self._tables.pop(0)
        self._next_id = 0
        if not self._tables:
            self.close()

    def close(self) -> None:
        """Stop walking (done, or the store is closing)."""
        reader, self.reader = self.reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()


@dataclass
class Maintenance:
    db: sqlite3.Connection
    path: Path
    budget: Budget
    retention_ms: int
    boundary: Boundary
    thinning: Thinning
    shrinking: bool = False
    """A shrink under way goes on until no free page is left."""
    checkpoints: bool = False
    """Whether the WAL may be folded into the file: once the walk is through, or once the
    WAL held back outgrew its bound."""
    wal_found: int = field(init=False, default=0)
    """The WAL's size at the start (after a crash, up to the cap's WAL budget)."""

    def __post_init__(self) -> None:
        self.wal_found = self._held_wal_bytes()

    def step(self, now_ms: int, walk: IntegrityWalk) -> tuple[bool, Dropped | None]:
        """One bounded step of whatever is due, the integrity walk first, then retention,
        the cap, shrinking: (more is waiting, what a drop cost). Raises Damaged."""
        if not walk.done:
            walk.step()
            if walk.done:
                self._resume_checkpoints()  # the file is sound
                drop_found_wal(self.path)
            elif not self.checkpoints and self._held_wal_bytes() > self._held_wal_max():
                self._resume_checkpoints()
                log.warning(
                    "store_checkpoints_resumed",
                    reason="the WAL outgrew its bound before the integrity walk was through",
                    consequence="a damage found later is set aside after the WAL is folded in",
                )
            return True, None
        budget = self.budget.fitted(self.path)
        budget.apply(self.db)
        dropped = self._expire(now_ms - self.retention_ms)
        if dropped is not None:
            return True, dropped
        if in_transaction(self.db, lambda: capacity.over_cap(self.db, budget)):
            dropped = self.make_room()
            return dropped is not None, dropped
        self.thinning.after_id = 0  # under the cap: a later pass starts at the oldest again
        if self.boundary.backfill_readings == 0 and (
            self.shrinking or capacity.mostly_free(self.db)
        ):
            self.shrinking = capacity.shrink_step(self.db)
            return self.shrinking, None
        return False, None

    def _resume_checkpoints(self) -> None:
        """Let checkpoints fold the WAL into the file from now on, and fold what was held
        back here, in this step, rather than in the next commit (an alarm's, perhaps)."""
        self.budget.apply(self.db)
        self.checkpoints = True
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _held_wal_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0

    def _held_wal_max(self) -> int:
        """The WAL found, plus 10 % of the cap (at least four times the WAL's own budget,
        at most HELD_WAL_MAX)."""
        budget = self.budget
        share = budget.page_size * (budget.db_pages + budget.wal_pages) // 10
        allowance = max(share, 4 * budget.wal_pages * budget.page_size)
        return self.wal_found + min(HELD_WAL_MAX, allowance)

    def _expire(self, before_ms: int) -> Dropped | None:
        boundary = self.boundary
        for table, below in (("reading", boundary.reading), ("event", boundary.event)):
            dropped = in_transaction(
                self.db, partial(capacity.expire_step, self.db, table, before_ms, below)
            )
            if dropped is not None:
                return self._counted(dropped)
        return None

    def make_room(self) -> Dropped | None:
        """One thinning step (or the last resort past it), in its own transaction."""
        dropped = in_transaction(
            self.db, lambda: capacity.thin_step(self.db, self.thinning, self.boundary.reading)
        )
        return None if dropped is None else self._counted(dropped)

    def _counted(self, dropped: Dropped) -> Dropped:
        """Back-fill rows among those dropped no longer wait to be sent."""
        boundary = self.boundary
        if dropped.table == "reading":
            boundary.backfill_readings = max(boundary.backfill_readings - dropped.below, 0)
        elif dropped.table == "event":
            boundary.backfill_events = max(boundary.backfill_events - dropped.below, 0)
        return dropped
