"""The FAULT alarm of one tag: raised while its sensor reports a fault (q=3).

A sample with q=3 (NE43 fault band, a device-reported fault value, a value
beyond the instrument range's tolerance) raises FAULT; the next sample with a
usable value (q=0 or q=1) clears it. A sample with no communication (q=2) or
a configuration problem (q=4) says nothing about the sensor, so it neither
raises nor clears. The events carry `v: null` and no `limit`, as the spec asks.
"""

from __future__ import annotations

from edge_agent.model import AlarmEvent, AlarmKind, Quality, Sample
from edge_agent.rules.alarms import AlarmBook


def judge_fault(book: AlarmBook, sample: Sample) -> list[AlarmEvent]:
    if sample.quality is Quality.SENSOR:
        return book.raise_(AlarmKind.FAULT, sample.ts_ms, None)
    if sample.quality <= Quality.UNCERTAIN:
        return book.clear(AlarmKind.FAULT, sample.ts_ms, None)
    return []
