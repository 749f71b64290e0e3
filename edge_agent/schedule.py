"""Fixed-rate deadlines on the monotonic clock: the one schedule of every poll loop.

The Poller keeps a device's poll interval with one; each driver keeps the
slower poll groups of its device (tags with their own `poll`) with one per
group. A deadline that work finishes past is skipped, never made up in a
burst: a loop that fell behind comes back on its grid, and the skipped
deadlines are counted so that they can be declared and logged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Deadline:
    """The coming deadline of work done every `interval` seconds.

    `next` is None until the first `passed()`: a schedule made before its loop
    runs starts on the loop's first pass.
    """

    interval: float
    next: float | None = None

    def due(self, now: float, slack: float = 0.0) -> bool:
        """The deadline has come, or comes within `slack` seconds."""
        return self.next is None or now >= self.next - slack

    def wait_s(self, now: float) -> float:
        """Seconds from `now` to the coming deadline (0 when it has come)."""
        return 0.0 if self.next is None else max(self.next - now, 0.0)

    def passed(self, now: float) -> int:
        """The work of the coming deadline is done at `now`: move to the next deadline
        after `now`, and say how many deadlines in between were skipped."""
        self.next = (now if self.next is None else self.next) + self.interval
        if self.next >= now:
            return 0
        missed = int((now - self.next) // self.interval) + 1
        self.next += missed * self.interval
        return missed
