"""What waits in memory for the store's next commit, within one memory bound.

The runtime adds readings, alarm and statistics events, the alarms raised and
cleared, acknowledgements and the newest sample time; a commit writes them in
one transaction. While commits fail (a full disk, an I/O error) everything
stays here, and `bound()` keeps it bounded whatever the cause: past
`MAX_READINGS` the oldest readings are dropped, past `MAX_EVENTS` the oldest
statistics and then the oldest alarm events; each drop becomes a ledger entry
written with the first commit that succeeds. Acknowledgements and alarm
states are bounded by what is in flight and what is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from edge_agent.model import Value
from edge_agent.store.ledger import Loss

MAX_READINGS: Final = 200_000
"""Most readings held in memory while commits fail; beyond it the oldest are dropped."""
MAX_EVENTS: Final = 20_000
"""Most alarm and statistics events held in memory while commits fail."""

ReadingRow = tuple[str, str, int, Value, int]
"""(tag, hz, ts, value as stored, quality flags)."""
EventRow = tuple[str, int, str]
"""(topic, ts, item JSON)."""


@dataclass
class WriteBuffer:
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

    def sampled(self, ts_ms: int) -> None:
        if self.resumed_ms is None:
            self.resumed_ms = ts_ms
        if self.sampled_ms is None or ts_ms > self.sampled_ms:
            self.sampled_ms = ts_ms

    def committed(self, readings: int) -> None:
        """The first `readings` readings and everything else were written."""
        del self.readings[:readings]
        self.events.clear()
        self.raised.clear()
        self.cleared.clear()
        self.acks.clear()
        self.losses.clear()
        self.sampled_ms = None

    def bound(self, cause: str) -> None:
        """Drop the oldest readings and events beyond the bounds, and declare them."""
        excess = len(self.readings) - MAX_READINGS
        if excess > 0:
            dropped = self.readings[:excess]
            del self.readings[:excess]
            times = [row[2] for row in dropped]
            self.losses.append(
                Loss(f"{cause}: readings not stored", excess, min(times), max(times))
            )
        excess = len(self.events) - MAX_EVENTS
        if excess > 0:
            # Statistics go first: an alarm event is what the platform must not miss.
            order = sorted(range(len(self.events)), key=lambda i: (self.events[i][0] == "alarm", i))
            drop = set(order[:excess])
            for topic, what in (("stat", "statistics"), ("alarm", "alarm events")):
                times = [self.events[i][1] for i in drop if self.events[i][0] == topic]
                if times:
                    self.losses.append(
                        Loss(f"{cause}: {what} not stored", len(times), min(times), max(times))
                    )
            self.events = [event for i, event in enumerate(self.events) if i not in drop]
