"""Report by exception: which readings of a tag are sent to the platform.

A reading is reported when
- it is the tag's first, or its quality differs from the last one reported;
- its value moved more than the deadband from the last value reported (with
  no deadband: any change; strings and booleans: any change);
- it changed an alarm of the tag (the platform's curve then shows the value
  that raised or cleared it);
- or the tag's heartbeat is due: the last report is `every` minus one poll
  interval old, so the next report never comes later than `every` even when
  a poll is a little late.
Everything else is judged (alarms, statistics) but not sent.
"""

from __future__ import annotations

from edge_agent.model import Quality, Value


class ReportFilter:
    def __init__(self, deadband: float, every_s: float, poll_s: float) -> None:
        self._deadband = deadband
        self._heartbeat_ms = max(every_s - poll_s, 0.0) * 1000
        self._last: tuple[int, Value, Quality] | None = None

    def due(self, ts: int, value: Value, quality: Quality, alarmed: bool) -> bool:
        """Whether this reading is reported; if so it becomes the last one reported."""
        last = self._last
        if (
            last is None
            or alarmed
            or quality is not last[2]
            or ts - last[0] >= self._heartbeat_ms
            or (
                # Two floats (the common case) compared here, anything else by _moved.
                (abs(value - last[1]) > self._deadband if self._deadband else value != last[1])
                if value.__class__ is float and last[1].__class__ is float
                else _moved(last[1], value, self._deadband)
            )
        ):
            self._last = (ts, value, quality)
            return True
        return False


def _moved(before: Value, now: Value, deadband: float) -> bool:
    numbers = (int, float)
    if (
        isinstance(before, numbers)
        and isinstance(now, numbers)
        and not isinstance(before, bool)
        and not isinstance(now, bool)
    ):
        return abs(now - before) > deadband if deadband else now != before
    return now != before or type(now) is not type(before)
