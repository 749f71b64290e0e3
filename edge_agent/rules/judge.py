"""Everything the rules stage does to the samples of one tag."""

from __future__ import annotations

import math

from edge_agent.config.tags import Limits
from edge_agent.model import AlarmEvent, Quality, Reading, Sample
from edge_agent.rules.fault import FaultJudge
from edge_agent.rules.limits import LimitJudge


class TagRules:
    """The rules of one tag and their state: sample in, reading and alarm events out."""

    def __init__(self, tag: str, hz: str, limits: Limits | None = None) -> None:
        self.tag = tag
        self.hz = hz
        self._limits = LimitJudge(tag, hz, limits) if limits and limits.items() else None
        self._fault = FaultJudge(tag, hz)

    def judge(self, sample: Sample) -> tuple[Reading, list[AlarmEvent]]:
        sample = _reject_non_finite(sample)
        events = self._fault.judge(sample)
        if self._limits:
            events += self._limits.judge(sample)
        return Reading(self.tag, self.hz, sample.ts_ms, sample.value, sample.quality), events


def _reject_non_finite(sample: Sample) -> Sample:
    """NaN and infinities are not values: the platform gets null with q=4 (decoding failed)."""
    value = sample.value
    if isinstance(value, float) and not math.isfinite(value):
        return Sample.bad(sample.tag, sample.ts_ms, Quality.CONFIG)
    return sample
