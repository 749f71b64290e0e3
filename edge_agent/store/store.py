"""The store as the event loop sees it: add without waiting, await what needs the disk.

What the rules produce is added to the write buffer (buffer.py) at once and
never waits; committing, packing, counting and housekeeping are jobs for the
store's thread (actor.py, engine.py), awaited. Only one batch is away at a
time: what a commit could not write comes back into the buffer, within its one
memory bound. Figures of what waits come back with every job, so `backlog()`
and `figures` answer at once, whatever the back-log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.model import AlarmEvent, StatItem
from edge_agent.store import tail
from edge_agent.store.actor import Actor, Urgency
from edge_agent.store.buffer import WriteBuffer
from edge_agent.store.engine import Committed, Engine, Figures, StoreSettings
from edge_agent.store.ledger import Loss, Totals
from edge_agent.store.outbox import Admission, StoredMessage


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits, for `state`: `backlog` (messages) and `oldest` (sample time)."""

    messages: int
    oldest_ms: int | None


def backlog_of(
    figures: Figures, buffer: WriteBuffer, max_items: int, in_flight: int, connected: bool
) -> Backlog:
    """`Store.backlog` from the store's figures and what its buffer holds."""
    f = figures
    if connected:
        readings, events, oldest = f.backfill_readings, f.backfill_events, f.backfill_oldest_ms
    else:
        readings, events = f.readings + len(buffer.readings), f.events + len(buffer.events)
        held = [row[1] for row in buffer.events[:1]]
        oldest = min(filter(None, (f.oldest_ms, buffer.oldest_reading_ms, *held)), default=None)
    waiting = max(f.messages - in_flight, 0) + -(-readings // max_items) + (events > 0)
    return Backlog(waiting, oldest if waiting else None)


class Store:
    def __init__(
        self,
        settings: StoreSettings,
        limits: tuple[int, int],
        on_buffered: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._buffer = WriteBuffer()
        self.add_reading = self._buffer.add_reading
        """Buffer a reading, never waiting; `alarmed`: it changed an alarm (thinning keeps
        it). The buffer's own method, not a call through this facade: it runs per value."""
        self._actor = Actor("store", self._take_figures)
        self._committing = asyncio.Lock()
        self._on_buffered = on_buffered
        self._waiting_since: float | None = None
        """When the first of what waits for a commit was buffered, since the buffer was last
        handed to the store's thread; None: nothing waits but acknowledgements."""
        self.figures = Figures()
        """What waits, and how the store is, as of the last job on its thread."""

    async def open(self) -> None:
        """Open the store on its thread; raises StoreError (locked, newer, unusable)."""
        settings, limits = self._settings, self._limits
        await self._actor.start(lambda: Engine.open(settings, limits))

    async def close(self) -> None:
        """Commit what is buffered, mark the store clean, release it."""
        await self.flush()
        await self._actor.stop(Engine.close)

    # -- adding: never waits -------------------------------------------------------

    def add_alarm(self, event: AlarmEvent) -> None:
        self._buffer.add_alarm(event)
        self.buffered()

    def add_stat(self, stat: StatItem) -> None:
        self._buffer.add_stat(stat)
        self.buffered()

    def buffered(self) -> None:
        """Something was buffered: it is due for a commit from then on (`commit_due_in`), and
        the first of it since the last commit says so (`on_buffered`). `add_reading` does
        not call this, as it runs per value: whoever adds readings calls it once after."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
            self._on_buffered()

    def ack(self, seq: int) -> None:
        """The message `seq` was delivered; it is deleted with the next commit."""
        self._buffer.ack(seq)

    def sampled(self, ts_ms: int) -> None:
        """Samples were taken up to `ts_ms` on a synchronised clock (the mark a stop is
        declared from)."""
        self._buffer.sampled(ts_ms)
        self.buffered()

    def record_loss(self, loss: Loss) -> None:
        """Declare a loss found outside the store (skipped polls)."""
        self._buffer.record(loss)
        self.buffered()

    # -- telling: never waits ------------------------------------------------------

    @property
    def unflushed(self) -> int:
        """Items in memory, the batch on the store's thread included."""
        return len(self._buffer)

    @property
    def write_error(self) -> str | None:
        return self.figures.write_error

    def backlog(self, in_flight: int, *, connected: bool = True) -> Backlog:
        """What waits, for `state.backlog` and `oldest` (and /metrics, status).

        While the uplink is connected: packed messages not in flight, plus what
        waited from before the connection (back-fill); live readings on their
        way are not a back-log. While it is down, nothing moves: everything in
        the store counts, and what a failing disk holds in memory too.
        """
        return backlog_of(self.figures, self._buffer, self._limits[0], in_flight, connected)

    def holds_only(self, in_flight: int) -> bool:
        """Whether the store holds nothing but the `in_flight` messages: no reading, event
        or other message waits, as of the last job (what the buffer holds is committed
        later, and the uplink is told then: `Uplink.stored`)."""
        f = self.figures
        return f.readings == 0 and f.events == 0 and f.messages <= in_flight

    def live_lag_s(self, now_ms: int) -> float:
        """How long ago the oldest live reading not yet packed was sampled: the oldest
        committed (as of the last job), else the oldest buffered; 0 when none waits.
        However high the rate, a store and an uplink that keep up hold this within a
        `commit_interval` and a `linger`; a back-log shows as it growing."""
        oldest = self.figures.live_oldest_ms
        if oldest is None:
            oldest = self._buffer.oldest_reading_ms
        return 0.0 if oldest is None else max(now_ms - oldest, 0) / 1000

    def live_keeps_up(self, now_ms: int, max_lag_s: float) -> bool:
        """Whether live readings leave as they come: the oldest not yet packed was sampled
        within `max_lag_s` (`live_lag_s`), and those committed fit in the memory copy that
        packing takes them from (tail.py): past it, the oldest are read back from SQLite at
        about twice the CPU per reading."""
        f = self.figures
        if f.readings - f.backfill_readings > tail.MAX_ROWS:
            return False
        return self.live_lag_s(now_ms) <= max_lag_s

    def commit_due_in(self, interval_s: float) -> float | None:
        """Seconds until the first of what waits in the buffer has waited `interval_s` (0:
        now); None when nothing waits but acknowledgements. A take hands the buffer over
        too, so what it committed is not due again, and nothing is due while nothing
        waits: a commit costs the store's thread and the event loop a wake each, and on
        a fixed beat most of them found nothing to do."""
        if self._waiting_since is None:
            return None
        return max(self._waiting_since + interval_s - time.monotonic(), 0.0)

    # -- work on the store's thread ------------------------------------------------

    async def flush(self, urgent: bool = False, *, acks_alone: bool = True) -> bool:
        """Commit everything buffered; back once it is on disk (or given back to the buffer,
        when the disk refused it). True when it handed something to the store's thread,
        whether or not the disk took it. `urgent`: ahead of everything queued (alarms).

        `acks_alone=False` leaves a buffer of nothing but acknowledgements for the next
        commit: deleting a delivered message can wait (a crash meanwhile sends it again,
        under its own `seq`), and a commit costs the store's thread and the event loop a
        wake each."""
        async with self._committing:
            self._waiting_since = None
            if not len(self._buffer) or (not acks_alone and self._buffer.only_acks):
                return False
            batch = self._buffer.take()
            urgency = Urgency.URGENT if urgent else Urgency.NORMAL
            self._settle(await self._actor.call(urgency, lambda engine: engine.commit(batch)))
            return True

    async def take(
        self, admission: Admission, skip: set[int], now_ms: int, linger_ms: int
    ) -> list[StoredMessage]:
        """What the uplink may publish now (engine.take), everything buffered committed first,
        in one job; messages acknowledged but not yet deleted are never offered."""
        async with self._committing:
            self._waiting_since = None
            batch = self._buffer.take()
            skip = skip | set(batch.acks)  # acknowledged, even if the commit fails

            def commit_and_take(engine: Engine) -> tuple[Committed, list[StoredMessage]]:
                committed = engine.commit(batch) if len(batch) else Committed()
                return committed, engine.take(admission, skip, now_ms, linger_ms)

            committed, taken = await self._actor.call(Urgency.NORMAL, commit_and_take)
            self._settle(committed)
        return taken

    def _settle(self, committed: Committed) -> None:
        if committed.unwritten is None:
            self._buffer.committed()
        else:
            self._buffer.give_back(committed.unwritten, committed.cause)
            self.buffered()  # to be tried again

    async def mark_live(self) -> None:
        """The uplink is up from now: what waits already is back-fill (`hist: true`)."""
        await self.flush()
        await self._actor.call(Urgency.NORMAL, Engine.mark_live)

    async def losses(self) -> tuple[list[Loss], Totals]:
        """The newest ledger entries and the totals since installation, declarations still
        buffered included."""
        await self.flush()
        return await self._actor.call(Urgency.NORMAL, Engine.losses)

    async def active_alarms(self) -> list[AlarmEvent]:
        """The `raised` events of the alarms active when the agent last stopped."""
        return await self._actor.call(Urgency.NORMAL, Engine.active_alarms)

    async def maintain(self, now_ms: int) -> bool:
        """One bounded housekeeping step; True when more is waiting."""
        return await self._actor.call(Urgency.IDLE, lambda engine: engine.maintain(now_ms))

    async def repack(self, seqs: list[int], max_bytes: int) -> None:
        """Messages the broker's packet size cannot carry: split under new `seq`s, the old
        ones declared skipped, an item too large alone declared lost (engine.repack)."""
        await self._actor.call(Urgency.NORMAL, lambda engine: engine.repack(seqs, max_bytes))

    async def set_limits(self, limits: tuple[int, int]) -> None:
        """`uplink.batch` changed (a reload): messages packed from now on follow it."""
        self._limits = limits
        await self._actor.call(Urgency.NORMAL, lambda engine: engine.set_limits(limits))

    def _take_figures(self, figures: Figures) -> None:
        self.figures = figures
