"""Process limit alarms (HH, H, L, LL) of one tag, with hysteresis and delays.

A high limit is reached when a good value is at or above it, and recovered
when a good value is below limit - deadband; a low limit mirrors that. With an
`on_delay`, the limit must be reached by every good value for that long
before the alarm is raised; with an `off_delay`, recovered for that long
before it clears. Delays are judged at sample times, so they resolve to the
poll interval.

Each limit is its own alarm: a value that jumps from normal past HH raises H
and then HH, each with its own `id`, and they clear in turn (HH first). The
platform then sees the first-level alarm even when the second came at once.

Bad samples (q >= 2) and values that are not numbers never raise or clear a
limit alarm, and do not restart a delay: an alarm active when its tag goes
bad stays active until a good value clears it, so a dead sensor cannot
silence an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config.tags import Limits
from edge_agent.model import AlarmEvent, AlarmKind
from edge_agent.rules.alarms import AlarmBook

_HIGH = frozenset({AlarmKind.H, AlarmKind.HH})
# Raise in rising severity, clear in falling severity.
_ORDER = (AlarmKind.H, AlarmKind.HH, AlarmKind.L, AlarmKind.LL)


@dataclass(frozen=True, slots=True)
class _Limit:
    kind: AlarmKind
    value: float

    def reached(self, x: float) -> bool:
        return x >= self.value if self.kind in _HIGH else x <= self.value

    def recovered(self, x: float, deadband: float) -> bool:
        if self.kind in _HIGH:
            return x < self.value - deadband
        return x > self.value + deadband


class LimitJudge:
    """The limit alarms of one tag, kept in its alarm book."""

    def __init__(self, book: AlarmBook, limits: Limits) -> None:
        self._book = book
        self._deadband = limits.deadband
        self._on_delay_ms = limits.on_delay * 1000
        self._off_delay_ms = limits.off_delay * 1000
        by_kind = dict(limits.items())
        self._limits = [_Limit(k, by_kind[k]) for k in _ORDER if k in by_kind]
        # Since when each limit has been reached (inactive) or recovered (active).
        self._since: dict[AlarmKind, int] = {}

    @property
    def kinds(self) -> frozenset[AlarmKind]:
        return frozenset(lim.kind for lim in self._limits)

    def judge(self, ts: int, value: float) -> list[AlarmEvent]:
        """Judge a good or uncertain numeric sample: its time and value."""
        cleared: list[AlarmEvent] = []
        raised: list[AlarmEvent] = []
        for lim in reversed(self._limits):
            if self._book.is_active(lim.kind) and self._held(
                lim.kind, lim.recovered(value, self._deadband), ts, self._off_delay_ms
            ):
                cleared += self._book.clear(lim.kind, ts, value)
        for lim in self._limits:
            if not self._book.is_active(lim.kind) and self._held(
                lim.kind, lim.reached(value), ts, self._on_delay_ms
            ):
                raised += self._book.raise_(lim.kind, ts, value, lim.value)
        return cleared + raised

    def _held(self, kind: AlarmKind, condition: bool, ts: int, delay_ms: float) -> bool:
        """Whether `condition` has held at every sample for `delay_ms` (then forget it)."""
        if not condition:
            self._since.pop(kind, None)
            return False
        if ts - self._since.setdefault(kind, ts) >= delay_ms:
            del self._since[kind]
            return True
        return False
