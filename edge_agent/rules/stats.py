"""Window statistics of one tag: min, max, avg, n and bad per wall-clock window.

Windows are aligned to the Unix epoch (a 300 s window starts at :00, :05,
...), and a sample belongs to the window its own timestamp falls in.
- `n` counts the samples with a numeric value of quality 0 or 1 (good or
  uncertain); min, max and avg are taken over those, and are None when n is 0.
- `bad` counts the samples with quality 2 or more (no value).
- Booleans and strings have no statistics: a tag that never had a number in a
  window reports only its `bad` count, if it has one.
Numbers are written by the tag's NumberFormat (edge_agent/wire.py): the values
come in as the wire carries them, so min and max are exact; the average is
rounded like the values and kept within min and max as written; a 64-bit
integer tag sums exactly and sends all three as decimal strings.
A window is emitted once, when it is closed; a sample that arrives for a
window already closed is left out of the statistics (its reading is still
sent), so no window is reported twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.model import StatItem
from edge_agent.wire import PLAIN, NumberFormat


@dataclass(slots=True)
class _Window:
    low: float | int = float("inf")
    high: float | int = float("-inf")
    total: float | int = 0  # stays an int, exact, while every value is one
    n: int = 0
    bad: int = 0


class WindowStats:
    def __init__(
        self, tag: str, hz: str, window_s: int, number_format: NumberFormat = PLAIN
    ) -> None:
        self._tag = tag
        self._format = number_format
        self._hz = hz
        self._window_s = window_s
        self._window_ms = window_s * 1000
        self._open: dict[int, _Window] = {}
        self._current: tuple[int, int, _Window] | None = None
        """(start, end, window) of the last sample's window."""
        self._closed_before = 0

    def write_as(self, number_format: NumberFormat) -> None:
        """Write min, max and avg by `number_format` from now on (a type learned late)."""
        self._format = number_format

    def add_value(self, ts: int, value: float | int) -> None:
        current = self._current
        if current is not None and current[0] <= ts < current[1]:
            window: _Window | None = current[2]  # the common case, without a call
        else:
            window = self._window(ts)
        if window is not None:
            window.n += 1
            window.total += value
            # Compared inline: the builtins min and max cost a call each, per value.
            if value < window.low:  # noqa: PLR1730  # see above
                window.low = value
            if value > window.high:  # noqa: PLR1730  # see above
                window.high = value

    def add_bad(self, ts: int) -> None:
        window = self._window(ts)
        if window is not None:
            window.bad += 1

    def close(self, before_ms: int) -> list[StatItem]:
        """Emit the windows that end at or before `before_ms`, oldest first."""
        ended = sorted(s for s in self._open if s + self._window_ms <= before_ms)
        self._closed_before = max(self._closed_before, before_ms - before_ms % self._window_ms)
        self._current = None
        return [self._item(start, self._open.pop(start)) for start in ended]

    def _window(self, ts: int) -> _Window | None:
        current = self._current
        if current is not None and current[0] <= ts < current[1]:
            return current[2]  # the common case: the same window as the last sample
        start = ts - ts % self._window_ms
        if start < self._closed_before:
            return None
        window = self._open.get(start)
        if window is None:
            window = self._open[start] = _Window()
        self._current = (start, start + self._window_ms, window)
        return window

    def _item(self, start: int, w: _Window) -> StatItem:
        if w.n == 0:
            return StatItem(self._tag, self._hz, start, self._window_s, None, None, None, 0, w.bad)
        fmt = self._format
        avg = fmt.average(w.total, w.n, w.low, w.high)
        low, high = fmt.wire_number(w.low), fmt.wire_number(w.high)
        return StatItem(self._tag, self._hz, start, self._window_s, low, high, avg, w.n, w.bad)
