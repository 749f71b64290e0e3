"""What waits in memory for the store's next commit, within one memory bound.

The runtime adds readings, alarm and statistics events, the alarms raised and
cleared, acknowledgements, declared losses and the newest sample time, on the
event loop, without waiting for anything. A commit takes everything buffered
as one `Batch` to the store's thread (at most one batch is there at a time);
what it could not write (a full disk, an I/O error) comes back in front of
what was added meanwhile. `bound()` keeps the whole, the batch away included,
within one bound whatever the cause: past `MAX_READINGS` the oldest readings
are dropped, past `MAX_EVENTS` the oldest statistics and then the oldest alarm
events; each drop becomes a ledger entry written with the first commit that
succeeds. Acknowledgements and alarm states are bounded by what is in flight
and what is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import isfinite
from typing import Final

from edge_agent.model import AlarmEvent, AlarmState, Reading, StatItem, Value
from edge_agent.store import items
from edge_agent.store.ledger import Loss

MAX_READINGS: Final = 200_000
"""Most readings held in memory while commits fail; beyond it the oldest are dropped."""
MAX_EVENTS: Final = 20_000
"""Most alarm and statistics events held in memory while commits fail."""

ReadingRow = tuple[str, str, int, Value, int]
"""(tag, hz, ts, value as stored, quality and flags: items.py)."""
EventRow = tuple[str, int, str]
"""(topic, ts, item JSON)."""


@dataclass
class Batch:
    """Everything one commit writes."""

    readings: list[ReadingRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    raised: list[tuple[str, str, str, str]] = field(default_factory=list)
    """active_alarm rows to add: (id, tag, kind, item)."""
    cleared: list[str] = field(default_factory=list)
    """active_alarm ids to drop."""
    acks: list[int] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    sampled_ms: int | None = None
    """The newest sample time on a trusted clock, to write as the store's mark."""
    resumed_ms: int | None = None
    """The first such sample since the agent started: it ends the stretch the stop left."""

    def __len__(self) -> int:
        return (
            len(self.readings)
            + len(self.events)
            + len(self.raised)
            + len(self.cleared)
            + len(self.acks)
            + len(self.losses)
            + (self.sampled_ms is not None)
        )

    def then(self, later: Batch) -> Batch:
        """This batch followed by `later` (a batch given back, and what came meanwhile)."""
        return Batch(
            self.readings + later.readings,
            self.events + later.events,
            self.raised + later.raised,
            self.cleared + later.cleared,
            self.acks + later.acks,
            self.losses + later.losses,
            max(filter(None, (self.sampled_ms, later.sampled_ms)), default=None),
            self.resumed_ms if self.resumed_ms is not None else later.resumed_ms,
        )


class WriteBuffer:
    def __init__(self) -> None:
        self._batch = Batch()
        self.away = 0
        """Items of the batch on the store's thread, not yet committed."""
        self._resumed = False

    def __len__(self) -> int:
        return len(self._batch) + self.away

    @property
    def acks(self) -> list[int]:
        return self._batch.acks

    @property
    def only_acks(self) -> bool:
        """Whether all that waits is acknowledgements (or nothing)."""
        return len(self._batch) == len(self._batch.acks)

    @property
    def readings(self) -> list[ReadingRow]:
        return self._batch.readings

    @property
    def events(self) -> list[EventRow]:
        return self._batch.events

    @property
    def oldest_reading_ms(self) -> int | None:
        """Sample time of the first reading buffered (readings are buffered as sampled)."""
        readings = self._batch.readings
        return readings[0][2] if readings else None

    def add_reading(self, reading: Reading, alarmed: bool = False) -> None:
        """`alarmed`: the reading changed an alarm (thinning keeps it)."""
        tag, hz, ts, value, quality = reading
        if value.__class__ is float and not alarmed and isfinite(value):
            row: ReadingRow = (tag, hz, ts, value, int(quality))  # items.stored, without a call
        else:
            value, flags = items.stored(reading, alarmed)
            row = (tag, hz, ts, value, flags)
        self._batch.readings.append(row)

    def add_alarm(self, event: AlarmEvent) -> None:
        item = items.alarm_item(event)
        self._batch.events.append(("alarm", event.ts_ms, item))
        if event.state is AlarmState.RAISED:
            self._batch.raised.append((event.id, event.tag, str(event.kind), item))
        else:
            self._batch.cleared.append(event.id)

    def add_stat(self, stat: StatItem) -> None:
        self._batch.events.append(("stat", stat.start_ms, items.stat_item(stat)))

    def ack(self, seq: int) -> None:
        self._batch.acks.append(seq)

    def record(self, loss: Loss) -> None:
        self._batch.losses.append(loss)

    def sampled(self, ts_ms: int) -> None:
        batch = self._batch
        if not self._resumed:
            self._resumed = True
            batch.resumed_ms = ts_ms
        if batch.sampled_ms is None or ts_ms > batch.sampled_ms:
            batch.sampled_ms = ts_ms

    def take(self) -> Batch:
        """Everything buffered, for one commit; the buffer starts afresh."""
        batch, self._batch = self._batch, Batch()
        self.away = len(batch)
        return batch

    def give_back(self, unwritten: Batch, cause: str) -> None:
        """What a commit could not write goes in front of what came meanwhile, within the
        bound; what the bound drops is declared (`cause`: why it could not be written)."""
        self.away = 0
        self._batch = unwritten.then(self._batch)
        self._bound(cause)

    def committed(self) -> None:
        self.away = 0

    def _bound(self, cause: str) -> None:
        batch = self._batch
        excess = len(batch.readings) - MAX_READINGS
        if excess > 0:
            times = [row[2] for row in batch.readings[:excess]]
            del batch.readings[:excess]
            batch.losses.append(
                Loss(f"{cause}: readings not stored", excess, min(times), max(times))
            )
        excess = len(batch.events) - MAX_EVENTS
        if excess > 0:
            # Statistics go first: an alarm event is what the platform must not miss.
            events = batch.events
            order = sorted(range(len(events)), key=lambda i: (events[i][0] == "alarm", i))
            drop = set(order[:excess])
            for topic, what in (("stat", "statistics"), ("alarm", "alarm events")):
                times = [events[i][1] for i in drop if events[i][0] == topic]
                if times:
                    batch.losses.append(
                        Loss(f"{cause}: {what} not stored", len(times), min(times), max(times))
                    )
            batch.events = [event for i, event in enumerate(events) if i not in drop]
