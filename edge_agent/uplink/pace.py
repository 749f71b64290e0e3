"""How much may sit between the agent and the broker, so an alarm never waits long behind it.

A PUBACK can only overtake nothing: once a message is handed to paho, its
bytes queue in paho, in the socket and on the link, and an alarm published
after it waits until they are through. So, while alarms have priority, the
uplink bounds (a) the payload bytes published and not yet acknowledged to
what the link drains in `QUEUE_TARGET_S`, and (b) the size of each new
readings message to what it drains in `MESSAGE_TARGET_S`, measured from the
acknowledgements themselves. On loopback or a LAN the bounds grow within
milliseconds to more than the message window holds, so they cost nothing;
on a 32 KiB/s link they keep an alarm's wait under a second.

The drain rate is the payload acknowledged per second of a busy link: over
the last second of the burst under way, topped up with the bursts before it
(nothing in flight between them) while they are younger than `MEMORY_S`. Time
with nothing in flight is not the link's: counting it would judge a link
polled every second by a tenth of its speed. Remembering the last bursts is
what lets a burst start at the link's speed: a poll's readings leave in full
messages, in one packing, rather than in small ones sized for a link not yet
measured while the rest of them linger.

A link may slow down between bursts (a cellular link). So until the first
PUBACK of a burst, the bytes in flight are bounded by twice what the last
burst carried too (twice, so that bursts may grow, as in TCP's slow start);
from then on the rate is the lower of the burst's own and the remembered one.
"""

from __future__ import annotations

from collections import deque
from typing import Final, NamedTuple

QUEUE_TARGET_S: Final = 0.5
"""Longest an alarm should wait for the bytes queued ahead of it."""
MESSAGE_TARGET_S: Final = 0.25
"""Longest one readings message should take through the link."""
MIN_INFLIGHT_BYTES: Final = 16 * 1024
MIN_MESSAGE_BYTES: Final = 4 * 1024
_WINDOW_S: Final = 1.0
"""Busy time the rate is measured over."""
MEMORY_S: Final = 10.0
"""How long a finished burst's speed stands for the link's: after a longer idle time the
link is measured afresh, from the floor (it may have become slower meanwhile)."""
_BURSTS: Final = 32
"""Most finished bursts remembered."""


class _Burst(NamedTuple):
    ended: float
    busy_s: float
    size: int


class LinkPace:
    def __init__(self) -> None:
        self._acks: deque[tuple[float, int]] = deque()
        """Acknowledgements of the burst under way, within the last `_WINDOW_S`."""
        self._busy_since: float | None = None
        self._past: deque[_Burst] = deque(maxlen=_BURSTS)

    def sending(self, now: float, in_flight: int) -> None:
        """A message is about to be published with `in_flight` already unacknowledged."""
        if in_flight == 0 and self._busy_since is None:
            self._busy_since = now
            self._acks.clear()

    def acked(self, now: float, size: int, in_flight: int) -> None:
        """`size` payload bytes were acknowledged; `in_flight` messages remain."""
        self._acks.append((now, size))
        if in_flight == 0 and self._busy_since is not None:
            self._past.append(_Burst(now, *self._burst_under_way(now)))
            self._busy_since = None
            self._acks.clear()

    def rate(self, now: float) -> float:
        """Payload bytes per second the link has drained lately (0 before any measure)."""
        own_s, own = self._burst_under_way(now)
        busy_s, size = own_s, own
        for burst in reversed(self._past):
            if busy_s >= _WINDOW_S or burst.ended < now - MEMORY_S:
                break
            busy_s, size = busy_s + burst.busy_s, size + burst.size
        remembered = size / busy_s if busy_s else 0.0
        return min(own / own_s, remembered) if own else remembered

    def _burst_under_way(self, now: float) -> tuple[float, int]:
        """Busy seconds and bytes acknowledged of the burst under way, over at most the last
        `_WINDOW_S` of it (a long drain follows a link that changes speed)."""
        if self._busy_since is None:
            return 0.0, 0
        while self._acks and self._acks[0][0] < now - _WINDOW_S:
            self._acks.popleft()
        busy_s = min(max(now - self._busy_since, 0.001), _WINDOW_S)
        return busy_s, sum(size for _, size in self._acks)

    def inflight_budget(self, now: float) -> int:
        """Most unacknowledged payload bytes (besides alarms) to allow now."""
        budget = max(MIN_INFLIGHT_BYTES, int(self.rate(now) * QUEUE_TARGET_S))
        if not self._acks and self._past:  # not heard from in this burst: see the docstring
            budget = min(budget, max(MIN_INFLIGHT_BYTES, 2 * self._past[-1].size))
        return budget

    def message_budget(self, now: float, max_bytes: int) -> int:
        """Largest readings message to pack now, at most `max_bytes`."""
        return min(max_bytes, max(MIN_MESSAGE_BYTES, int(self.rate(now) * MESSAGE_TARGET_S)))
