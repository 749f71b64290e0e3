"""Process limit alarms (HH, H, L, LL) of one tag, with hysteresis.

A high limit is raised when a good value reaches it (value >= limit) and
cleared when a good value falls below limit - deadband; a low limit mirrors
that. Each limit is its own alarm: a value that jumps from normal past HH
raises H and then HH, each with its own `id`, and they clear in turn.

Bad samples (q >= 2) and values that are not numbers never raise or clear a
limit alarm: an alarm active when its tag goes bad stays active until a good
value clears it, so a dead sensor cannot silence an alarm.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.config.tags import Limits
from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Sample

_HIGH = frozenset({AlarmKind.H, AlarmKind.HH})
# Raise in rising severity, clear in falling severity.
_ORDER = (AlarmKind.H, AlarmKind.HH, AlarmKind.L, AlarmKind.LL)


def new_alarm_id() -> str:
    return uuid.uuid4().hex


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
    """The limit alarm state of one tag."""

    def __init__(
        self, tag: str, hz: str, limits: Limits, new_id: Callable[[], str] = new_alarm_id
    ) -> None:
        self._tag = tag
        self._hz = hz
        self._deadband = limits.deadband
        by_kind = dict(limits.items())
        self._limits = [_Limit(k, by_kind[k]) for k in _ORDER if k in by_kind]
        self._new_id = new_id
        self._active: dict[AlarmKind, str] = {}

    @property
    def active(self) -> dict[AlarmKind, str]:
        """Active alarms of this tag: kind -> occurrence id."""
        return dict(self._active)

    def judge(self, sample: Sample) -> list[AlarmEvent]:
        value = sample.value
        if sample.quality.is_bad or isinstance(value, bool) or not isinstance(value, int | float):
            return []
        raised = [
            self._event(lim, AlarmState.RAISED, sample, self._new_id())
            for lim in self._limits
            if lim.kind not in self._active and lim.reached(value)
        ]
        cleared = [
            self._event(lim, AlarmState.CLEARED, sample, self._active[lim.kind])
            for lim in reversed(self._limits)
            if lim.kind in self._active and lim.recovered(value, self._deadband)
        ]
        for event in raised:
            self._active[event.kind] = event.id
        for event in cleared:
            del self._active[event.kind]
        return cleared + raised

    def _event(self, lim: _Limit, state: AlarmState, sample: Sample, alarm_id: str) -> AlarmEvent:
        return AlarmEvent(
            id=alarm_id,
            tag=self._tag,
            hz=self._hz,
            ts_ms=sample.ts_ms,
            kind=lim.kind,
            state=state,
            value=sample.value,
            limit=lim.value,
        )
