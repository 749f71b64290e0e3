"""STUCK and ROC: alarms on how a good value moves, not on where it is.

STUCK is for points that must move (a gas detector's live zero, a flow): it
is raised when good values stayed within `epsilon` of one another for
`after`, and cleared by the first good value that moves beyond `epsilon`. A
bad sample restarts the count: only an unbroken run of good values can show
a frozen sensor.

ROC is raised when the good values within the last `window` spread by more
than `limit` (max - min), and cleared once the spread within the window is
back at or under the limit. The window's min and max are kept in monotonic
queues, so each sample costs O(1) however long the window.

Both judge numeric values of quality 0 or 1 only; a bad sample never clears
them (it says nothing about the process).
"""

from __future__ import annotations

from collections import deque

from edge_agent.config.tags import RateOfChange, Stuck
from edge_agent.model import AlarmEvent, AlarmKind
from edge_agent.rules.alarms import AlarmBook


class StuckJudge:
    def __init__(self, book: AlarmBook, config: Stuck) -> None:
        self._book = book
        self._after_ms = config.after * 1000
        self._epsilon = config.epsilon
        self._anchor: tuple[int, float] | None = None  # (since, value) of the unmoving run

    def judge(self, ts: int, value: float) -> list[AlarmEvent]:
        if self._anchor is None or abs(value - self._anchor[1]) > self._epsilon:
            self._anchor = (ts, value)
            return self._book.clear(AlarmKind.STUCK, ts, value)
        if ts - self._anchor[0] >= self._after_ms:
            return self._book.raise_(AlarmKind.STUCK, ts, value)
        return []

    def interrupt(self) -> None:
        """A bad sample: the run of good values is broken."""
        self._anchor = None


class RocJudge:
    def __init__(self, book: AlarmBook, config: RateOfChange) -> None:
        self._book = book
        self._limit = config.limit
        self._window_ms = config.window * 1000
        self._lows: deque[tuple[int, float]] = deque()  # values rise from left to right
        self._highs: deque[tuple[int, float]] = deque()  # values fall from left to right

    def judge(self, ts: int, value: float) -> list[AlarmEvent]:
        while self._lows and self._lows[-1][1] >= value:
            self._lows.pop()
        self._lows.append((ts, value))
        while self._highs and self._highs[-1][1] <= value:
            self._highs.pop()
        self._highs.append((ts, value))
        oldest = ts - self._window_ms
        for queue in (self._lows, self._highs):
            while queue[0][0] < oldest:
                queue.popleft()
        if self._highs[0][1] - self._lows[0][1] > self._limit:
            return self._book.raise_(AlarmKind.ROC, ts, value, self._limit)
        return self._book.clear(AlarmKind.ROC, ts, value)
