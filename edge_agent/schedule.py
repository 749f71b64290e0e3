"""Fixed-rate deadlines on the monotonic clock: the one schedule of every poll loop.

The Poller keeps a device's poll interval with one; each driver keeps the
slower poll groups of its device (tags with their own `poll`) with one per
group. Work starts for a deadline within its interval (from the deadline to
the next one), late if need be; a deadline whose whole interval went by
before its work could start is skipped, never made up in a burst: a loop
that fell behind comes back on its grid, and the skipped deadlines are
counted so that they can be declared and logged.
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

    def grid_wait_s(self, now: float) -> float:
        """Seconds from `now` to the first deadline after it, the coming one or a later one:
        the wait of a loop that will not start late work."""
        if self.next is None or now < self.next:
            return self.wait_s(now)
        return self.interval - (now - self.next) % self.interval

    def passed(self, now: float) -> int:
        """The work of a deadline starts at `now`: the latest deadline not after `now` (the
        coming one when it has come; the first deadline when none was set). Move to the
        deadline after it, and say how many before it were skipped: those whose whole
        interval went by before `now`."""
        self.next = (now if self.next is None else self.next) + self.interval
        if self.next >= now:
            return 0
        missed = int((now - self.next) // self.interval) + 1
        self.next += missed * self.interval
        return missed
