"""The FAULT alarm of one tag: raised while its sensor reports a fault (q=3).

A sample with q=3 (NE43 fault band, a device-reported fault value) raises
FAULT; the next sample with a usable value (q=0 or q=1) clears it. A sample
with no communication (q=2) or a configuration problem (q=4) says nothing
about the sensor, so it neither raises nor clears. The event carries `v: null`
and no `limit`, as the spec asks for FAULT.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Quality, Sample
from edge_agent.rules.limits import new_alarm_id


class FaultJudge:
    def __init__(self, tag: str, hz: str, new_id: Callable[[], str] = new_alarm_id) -> None:
        self._tag = tag
        self._hz = hz
        self._new_id = new_id
        self.active_id: str | None = None

    def judge(self, sample: Sample) -> list[AlarmEvent]:
        if sample.quality is Quality.SENSOR and self.active_id is None:
            self.active_id = self._new_id()
            return [self._event(sample, AlarmState.RAISED, self.active_id)]
        if sample.quality <= Quality.UNCERTAIN and self.active_id is not None:
            alarm_id, self.active_id = self.active_id, None
            return [self._event(sample, AlarmState.CLEARED, alarm_id)]
        return []

    def _event(self, sample: Sample, state: AlarmState, alarm_id: str) -> AlarmEvent:
        return AlarmEvent(
            alarm_id, self._tag, self._hz, sample.ts_ms, AlarmKind.FAULT, state, None, None
        )
