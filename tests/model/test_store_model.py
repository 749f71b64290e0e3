"""The store against a plain model, under random adds, commits, packing, acks, housekeeping,
crashes and power losses.

Checked all along: a `seq` never comes back with other items, and a message whose
acknowledgement was committed never comes back (short of a power loss, which may roll
the acknowledgement back: then it comes again, with the same `seq` and items). Checked at
the end, after everything was drained: every reading that was ever added was delivered, or
lies within a loss the store declared (thinned, a stretch without samples after a crash,
...), or is still held in memory because the disk is full. The one exception: readings
lost before the store ever committed a sample mark (the first commit interval of a new
store), of which no stretch can be declared.

A crash is a copy of the store's files taken while it is open (closing a connection, even
by garbage collection, checkpoints the WAL and hides the crash); a power loss is that copy
with the WAL cut at a frame boundary, which rolls the last commits back (never inside the
frames a checkpoint already copied into the file: SQLite syncs those before it copies).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from stores import SyncStore

from edge_agent.model import Quality, Reading
from edge_agent.store import Kind, StoredMessage

T0 = 1_764_441_000_000
CAP = 96 * 1024


class Everything:
    """An admission for `slots` messages of any kind, resends included."""

    priority = True
    max_bytes = ceiling_bytes = 1 << 30

    def __init__(self, slots: int) -> None:
        self.slots = slots

    def allows(self, kind: Kind) -> bool:
        return self.slots > 0

    def admit(self, message: StoredMessage, *, packed: bool) -> bool:
        if self.slots <= 0 and not packed:
            return False
        self.slots -= 1
        return True


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.generation = 0
        self.store = self._open(self._path())
        self.next_ts = T0
        self.added: set[tuple[str, int]] = set()
        self.seen: dict[int, str] = {}
        self.out: set[int] = set()
        self.acks: set[int] = set()
        self.acked_for_good: set[int] = set()
        self.delivered: set[tuple[str, int]] = set()

    def _path(self) -> Path:
        folder = self.root / f"g{self.generation}"
        folder.mkdir(exist_ok=True)
        return folder / "store.db"

    def _open(self, path: Path) -> SyncStore:
        return SyncStore.open(path, max_items=20, max_bytes=CAP)

    @rule(count=st.integers(1, 80))
    def add(self, count: int) -> None:
        for n in range(count):
            tag, ts = f"T{n % 3}", self.next_ts
            self.next_ts += 250
            self.store.sampled(ts)
            self.store.add_reading(Reading(tag, "HZ01", ts, float(n % 11), Quality.GOOD))
            self.added.add((tag, ts))

    @rule()
    def commit(self) -> None:
        self.store.flush()
        if self.store.unflushed == 0:
            self.acked_for_good |= self.acks
            self.acks.clear()

    @rule(slots=st.integers(1, 6))
    def take(self, slots: int) -> None:
        self.store.engine.mark_live()
        self.store.flush()
        for message in self.store.engine.take(Everything(slots), set(), self.next_ts, 0):
            assert message.seq not in self.acked_for_good, "an acknowledged message came back"
            assert self.seen.setdefault(message.seq, message.items_json) == message.items_json
            self.out.add(message.seq)

    @precondition(lambda self: bool(self.out))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.out)))
        self.out.discard(seq)
        self.store.ack(seq)
        self.acks.add(seq)
        self.delivered |= _readings(self.seen[seq])

    @rule()
    def housekeeping(self) -> None:
        self.store.maintain(self.next_ts)

    @rule()
    def crash(self) -> None:
        self._restart(cut=None)

    @rule(keep=st.floats(0.0, 1.0))
    def power_loss(self, keep: float) -> None:
        self._restart(cut=keep)

    def _restart(self, cut: float | None) -> None:
        """The files as a kill -9 (and, with `cut`, a power loss) leaves them; the agent
        starts again on them. What was in flight is offered again."""
        old = self.store
        self.generation += 1
        path = self._path()
        for suffix in ("", "-wal", ".seq"):
            source = old.engine._settings.path.with_name("store.db" + suffix)
            if source.exists():
                shutil.copy(source, path.with_name(path.name + suffix))
        synced = _checkpointed_frames(old.engine._settings.path.with_name("store.db-shm"))
        old.crash()
        if cut is not None:
            _cut_wal(path.with_name("store.db-wal"), cut, synced)
            self.acked_for_good.clear()  # a rolled-back acknowledgement may bring it back
        self.acks.clear()
        self.out.clear()
        self.store = self._open(path)
        if not self.store.engine._counter("last_sample"):
            self.added &= self.delivered  # lost before any mark: nothing to declare them by

    def teardown(self) -> None:
        store = self.store
        store.sampled(self.next_ts)  # a first sample after the last restart
        store.flush()
        store.engine.mark_live()
        while taken := [*store.engine.take(Everything(50), set(), self.next_ts, 0)]:
            for message in taken:
                assert self.seen.setdefault(message.seq, message.items_json) == message.items_json
                self.delivered |= _readings(message.items_json)
                store.ack(message.seq)
            store.flush()
        held = {(tag, ts) for tag, _, ts, _, _ in store._buffer.readings}  # a full disk
        spans = [
            (first, last if last is not None else 1 << 62)
            for first, last in store.engine._db.execute(
                "SELECT first, last FROM loss WHERE first IS NOT NULL"
            )
        ]
        store.close()
        shutil.rmtree(self.root, ignore_errors=True)
        for tag, ts in self.added - self.delivered - held:
            assert any(first <= ts <= last for first, last in spans), (
                f"{tag}@{ts} neither delivered nor declared lost: {spans}"
            )


def _readings(items_json: str) -> set[tuple[str, int]]:
    return {(item["tag"], item["ts"]) for item in json.loads(items_json)}


def _checkpointed_frames(shm: Path) -> int:
    """Frames of the WAL already checkpointed (`nBackfill` in the WAL index, after its two
    48-byte header copies): SQLite syncs the WAL before a checkpoint, so a power loss cannot
    take them."""
    if not shm.exists() or shm.stat().st_size < 100:
        return 0
    (backfilled,) = struct.unpack("=I", shm.read_bytes()[96:100])
    return int(backfilled)


def _cut_wal(wal: Path, keep: float, synced: int) -> None:
    """Cut the WAL at a frame boundary, never inside the `synced` frames."""
    if not wal.exists() or wal.stat().st_size <= 32:
        return
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    frames = (len(data) - 32) // (24 + page_size)
    kept = max(int(frames * keep), min(synced, frames))
    wal.write_bytes(data[: 32 + kept * (24 + page_size)])
    wal.with_name(wal.name.replace("-wal", "-shm")).unlink(missing_ok=True)


TestStoreAgainstItsModel = StoreMachine.TestCase
TestStoreAgainstItsModel.settings = settings(
    max_examples=int(os.environ.get("EDGE_AGENT_TEST_MODEL_EXAMPLES", "40")),
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
