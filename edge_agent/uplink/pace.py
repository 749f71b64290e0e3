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

The drain rate is the payload acknowledged over the last second of a busy
link; it restarts with each burst (nothing in flight before it), so a link
that was idle is not judged by the last burst's speed.
"""

from __future__ import annotations

from collections import deque
from typing import Final

QUEUE_TARGET_S: Final = 0.5
"""Longest an alarm should wait for the bytes queued ahead of it."""
MESSAGE_TARGET_S: Final = 0.25
"""Longest one readings message should take through the link."""
MIN_INFLIGHT_BYTES: Final = 16 * 1024
MIN_MESSAGE_BYTES: Final = 4 * 1024
_WINDOW_S: Final = 1.0


class LinkPace:
    def __init__(self) -> None:
        self._acks: deque[tuple[float, int]] = deque()
        self._busy_since: float | None = None

    def sending(self, now: float, in_flight: int) -> None:
        """A message is about to be published with `in_flight` already unacknowledged."""
        if in_flight == 0 and self._busy_since is None:
            self._busy_since = now
            self._acks.clear()

    def acked(self, now: float, size: int, in_flight: int) -> None:
        """`size` payload bytes were acknowledged; `in_flight` messages remain."""
        self._acks.append((now, size))
        if in_flight == 0:
            self._busy_since = None

    def rate(self, now: float) -> float:
        """Payload bytes per second the link has drained lately (0 before any measure)."""
        while self._acks and self._acks[0][0] < now - _WINDOW_S:
            self._acks.popleft()
        if not self._acks:
            return 0.0
        since = self._busy_since if self._busy_since is not None else self._acks[0][0]
        span = min(max(now - since, 0.001), _WINDOW_S)
        return sum(size for _, size in self._acks) / span

    def inflight_budget(self, now: float) -> int:
        """Most unacknowledged payload bytes (besides alarms) to allow now."""
        return max(MIN_INFLIGHT_BYTES, int(self.rate(now) * QUEUE_TARGET_S))

    def message_budget(self, now: float, max_bytes: int) -> int:
        """Largest readings message to pack now, at most `max_bytes`."""
        return min(max_bytes, max(MIN_MESSAGE_BYTES, int(self.rate(now) * MESSAGE_TARGET_S)))
