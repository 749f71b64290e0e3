"""The in-flight window of one connection: what is out, and what one top-up may add. Pure.

Every QoS 1 publish counts against the window (the broker's Receive Maximum
caps it): messages from the store and the retained `state` and `meta` alike.
A top-up (`TopUp`, the store's `Admission`) decides what may be added:

- With alarm priority (the default), one slot is kept for an alarm; readings
  and statistics also stay within a byte budget, what the link drains in half
  a second (pace.py), so an alarm never queues long behind bytes already
  handed to paho; back-fill holds at most half the window, so live readings
  and alarms always find a slot; and none while `backfill_rate` is spent.
- Without priority (a switch for tests) messages go first in, first out.

Resends are offered in order and stop at the first that does not fit; a
message packed for a top-up always counts.

An acknowledgement frees room, but asking the store for more is worth it only
when the last top-up ran out of room before the store ran out of what was due
(`wants_top_up`): otherwise the store's thread and the event loop would each
wake once per PUBACK to learn that nothing new is due. On a 2-core gateway
such a wake costs about as much as judging 20 values (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.store import Kind, StoredMessage
from edge_agent.uplink.pace import LinkPace
from edge_agent.uplink.ratelimit import ByteRate


@dataclass
class _Out:
    message: StoredMessage | None
    """None for a retained `state` or `meta`."""
    size: int
    """Item bytes: what the pace is measured and bounded in."""
    at: float
    """When it was handed to paho (monotonic)."""


class Window:
    def __init__(
        self,
        size: int,
        *,
        priority: bool,
        max_bytes: int,
        backfill_rate: ByteRate | None = None,
    ) -> None:
        self.size = max(size, 1)
        self.priority = priority
        self._max_bytes = max_bytes
        self._backfill_rate = backfill_rate
        self.pace = LinkPace()
        self._out: dict[int, _Out] = {}
        self._last_top_up: TopUp | None = None

    # -- bookkeeping -----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Publishes awaiting their PUBACK, retained ones included."""
        return len(self._out)

    @property
    def retained(self) -> set[int]:
        """The mids of retained publishes (`state`, `meta`) in flight."""
        return {mid for mid, out in self._out.items() if out.message is None}

    @property
    def seqs(self) -> set[int]:
        return {out.message.seq for out in self._out.values() if out.message is not None}

    @property
    def backfill(self) -> int:
        return sum(1 for out in self._out.values() if out.message is not None and out.message.hist)

    @property
    def bulk_bytes(self) -> int:
        """Item bytes of the readings and statistics in flight."""
        return sum(
            out.size
            for out in self._out.values()
            if out.message is not None and out.message.topic != "alarm"
        )

    def sent(self, mid: int, message: StoredMessage | None, payload: int, now: float) -> None:
        """A publish went out as `mid`; `message` None for a retained one (`state`, `meta`:
        not the pace's, which measures the stored messages' PUBACKs)."""
        if message is not None:
            self.pace.sending(now, len(self.seqs))
        size = len(message.items_json) if message is not None else 0
        self._out[mid] = _Out(message, size, now)
        if message is not None and message.hist and self._backfill_rate is not None:
            self._backfill_rate.spend(payload)

    @property
    def wants_top_up(self) -> bool:
        """Whether room freed now may be filled at once: the last top-up ran out of room,
        so the store may hold more that is due. Otherwise what becomes due is told by a
        commit or an alarm, not by an acknowledgement."""
        last = self._last_top_up
        return last is None or last.spent

    def message_of(self, mid: int) -> StoredMessage | None:
        """The stored message in flight as `mid`; None for a retained one or an unknown mid."""
        out = self._out.get(mid)
        return None if out is None else out.message

    def sent_at(self, mid: int) -> float | None:
        """When `mid` was published (monotonic); None for a mid not in flight."""
        out = self._out.get(mid)
        return None if out is None else out.at

    def acked(self, mid: int, now: float) -> tuple[bool, StoredMessage | None]:
        """A PUBACK: (was it one of ours, the stored message it carried if any)."""
        out = self._out.pop(mid, None)
        if out is None:
            return False, None
        if out.message is not None:
            self.pace.acked(now, out.size, len(self.seqs))
        return True, out.message

    # -- a top-up ----------------------------------------------------------------

    def top_up(self, now: float) -> TopUp:
        """What may be added now; hand it to the store's `take`."""
        free = self.size - len(self._out)
        spare_for_alarms = 1 if self.priority and self.size > 1 else 0
        if self._backfill_rate is not None and not self._backfill_rate.allows():
            backfill = 0
        elif self.priority:
            backfill = max(self.size // 2, 1) - self.backfill
        else:
            backfill = free
        self._last_top_up = top_up = TopUp(
            priority=self.priority,
            slots=free,
            bulk_slots=free - spare_for_alarms,
            backfill_slots=backfill,
            bulk_bytes=self.pace.inflight_budget(now) - self.bulk_bytes if self.priority else None,
            max_bytes=(
                self.pace.message_budget(now, self._max_bytes) if self.priority else self._max_bytes
            ),
            ceiling_bytes=self._max_bytes,
        )
        return top_up


@dataclass
class TopUp:
    """One top-up's budget (the store's `Admission`); the store thread spends it."""

    priority: bool
    slots: int
    bulk_slots: int
    backfill_slots: int
    bulk_bytes: int | None
    """Item bytes readings and statistics may still add; None: no bound (no priority)."""
    max_bytes: int
    ceiling_bytes: int
    """Largest message of any kind: `batch.max_bytes`, or less where the broker's Maximum
    Packet Size says so."""

    def allows(self, kind: Kind) -> bool:
        if kind == "alarm":
            return self.slots > 0
        if kind == "backfill":
            return self._bulk_allowed and self.backfill_slots > 0
        return self._bulk_allowed

    @property
    def spent(self) -> bool:
        """Whether it ran out of slots, bytes or back-fill slots (as the store took from it):
        alarms may take the last slots without touching the others."""
        return self.slots <= 0 or not self._bulk_allowed or self.backfill_slots <= 0

    @property
    def _bulk_allowed(self) -> bool:
        return self.bulk_slots > 0 and (self.bulk_bytes is None or self.bulk_bytes > 0)

    def admit(self, message: StoredMessage, *, packed: bool) -> bool:
        alarm = message.topic == "alarm"
        fits = self.slots > 0 and (
            alarm or (self._bulk_allowed and (self.backfill_slots > 0 or not message.hist))
        )
        if not (fits or packed):
            return False
        self.slots -= 1
        if not alarm:
            self.bulk_slots -= 1
            if self.bulk_bytes is not None:
                self.bulk_bytes -= len(message.items_json)
        self.backfill_slots -= message.hist
        return True
