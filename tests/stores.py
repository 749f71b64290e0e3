"""The store's engine driven synchronously, as the store's thread drives it, for the tests.

`SyncStore` speaks the store's vocabulary (add, flush, pack, ack, maintain, close)
without the event loop: its calls are the engine's, one at a time, exactly what
the actor runs; `pack_next` packs one new message as one top-up of a window
that admits everything would. What the facade adds (the thread, the figures
handed back) is tested on its own in tests/unit/test_store_facade.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.model import AlarmEvent, Reading, StatItem
from edge_agent.store import Kind, Loss, StoredMessage, StoreSettings
from edge_agent.store.buffer import WriteBuffer
from edge_agent.store.engine import Engine
from edge_agent.store.store import Backlog, backlog_of

FOREVER_MS = 10**13


@dataclass
class OneMessage:
    """An admission for one new message of the kinds allowed; it offers no resend."""

    priority: bool = True
    kinds: frozenset[str] = frozenset({"alarm", "live", "stat", "backfill"})
    max_bytes: int = 1 << 30
    ceiling_bytes: int = 1 << 30
    slots: int = 1
    packed: list[StoredMessage] = field(default_factory=list)

    def allows(self, kind: Kind) -> bool:
        return self.slots > 0 and kind in self.kinds

    def admit(self, message: StoredMessage, *, packed: bool) -> bool:
        if not packed:
            return False
        self.slots -= 1
        self.packed.append(message)
        return True


class SyncStore:
    def __init__(self, engine: Engine, limits: tuple[int, int]) -> None:
        self.engine = engine
        self._limits = limits
        self._buffer = WriteBuffer()

    @classmethod
    def open(
        cls, path: Path, max_items: int = 500, message_bytes: int = 64 * 1024, **settings: Any
    ) -> SyncStore:
        """`settings`: StoreSettings' (max_bytes is the store's cap)."""
        limits = (max_items, message_bytes)
        return cls(Engine.open(StoreSettings(path, **settings), limits), limits)

    # writing
    def add_reading(self, reading: Reading, alarmed: bool = False) -> None:
        self._buffer.add_reading(reading, alarmed)

    def add_alarm(self, event: AlarmEvent) -> None:
        self._buffer.add_alarm(event)

    def add_stat(self, stat: StatItem) -> None:
        self._buffer.add_stat(stat)

    def ack(self, seq: int) -> None:
        self._buffer.ack(seq)

    def sampled(self, ts_ms: int) -> None:
        self._buffer.sampled(ts_ms)

    def record_loss(self, loss: Loss) -> None:
        self._buffer.record(loss)

    def flush(self) -> None:
        if not len(self._buffer):
            return
        committed = self.engine.commit(self._buffer.take())
        if committed.unwritten is None:
            self._buffer.committed()
        else:
            self._buffer.give_back(committed.unwritten, committed.cause)

    # reading out
    def mark_live(self) -> None:
        self.flush()
        self.engine.mark_live()

    def pack_next(
        self,
        now_ms: int = FOREVER_MS,
        linger_ms: int = 0,
        *,
        priority: bool = True,
        kinds: frozenset[str] = OneMessage.kinds,
        max_bytes: int = 1 << 30,
    ) -> StoredMessage | None:
        self.flush()
        admission = OneMessage(priority, kinds, max_bytes)
        taken = self.engine.take(admission, set(self._buffer.acks), now_ms, linger_ms)
        return taken[0] if taken else None

    def pack_all(self, now_ms: int = FOREVER_MS) -> list[StoredMessage]:
        packed = []
        while (message := self.pack_next(now_ms)) is not None:
            packed.append(message)
        return packed

    def unsent(self, skip: set[int], limit: int, alarms_first: bool = True) -> list[StoredMessage]:
        return self.engine._outbox.unsent(skip | set(self._buffer.acks), limit, alarms_first)

    def backlog(self, in_flight: int, *, connected: bool = True) -> Backlog:
        return backlog_of(
            self.engine.figures(), self._buffer, self._limits[0], in_flight, connected
        )

    def maintain(self, now_ms: int) -> None:
        """Housekeeping until nothing more is due."""
        self.flush()
        while self.engine.maintain(now_ms):
            pass

    def losses(self) -> tuple[list[Loss], Any]:
        self.flush()
        return self.engine.losses()

    def active_alarms(self) -> list[AlarmEvent]:
        return self.engine.active_alarms()

    @property
    def write_error(self) -> str | None:
        return self.engine.write_error

    @property
    def disk_full(self) -> bool:
        return self.engine.figures().disk_full

    @property
    def unflushed(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        self.flush()
        self.engine.close()

    def crash(self) -> None:
        """What the kernel does for a killed process: the lock and the files let go, nothing
        checkpointed. (The connection is closed: do copy the files first to keep the WAL.)"""
        self.engine._lock.release()
