"""Everything the rules stage does to the samples of one tag.

In order: a number becomes what the wire carries (edge_agent/wire.py: the
shortest float32 decimal, the decimals of its scaling), so every rule judges
exactly the value the platform sees, and a value the wire cannot carry (NaN,
an infinity) becomes q=4; a value outside the instrument range is q=1 within
the range's tolerance and a sensor fault (q=3, no value) beyond it; then
FAULT, the limits, STUCK and ROC are judged, the window statistics fed, and
report by exception decides whether the reading is sent. What leaves is in
its wire form: a 64-bit integer tag's values and limits as decimal strings.
A tag with no configured type becomes a 64-bit integer tag with the first
64-bit integer its device sends (`model.BigInteger`), from that sample on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edge_agent.config.tags import Range, TagBase
from edge_agent.model import (
    AlarmEvent,
    AlarmKind,
    BigInteger,
    Quality,
    Reading,
    Sample,
    StatItem,
)
from edge_agent.rules.alarms import AlarmBook, new_alarm_id
from edge_agent.rules.fault import judge_fault
from edge_agent.rules.limits import LimitJudge
from edge_agent.rules.motion import RocJudge, StuckJudge
from edge_agent.rules.report import ReportFilter
from edge_agent.rules.stats import WindowStats
from edge_agent.wire import NotCarried, NumberFormat

_ALWAYS = frozenset({AlarmKind.FAULT, AlarmKind.COMM})
_KINDS: dict[frozenset[AlarmKind], frozenset[AlarmKind]] = {}
"""The few distinct `kinds` sets: 216 bytes each, per tag of 10,000 otherwise."""
_GOOD = Quality.GOOD


class TagRules:
    """The rules of one tag and their state: sample in, reading (if reported) and events out."""

    def __init__(
        self,
        tag: TagBase,
        *,
        every_s: float,
        poll_s: float,
        stats_window_s: int | None = None,
        new_id: Callable[[], str] = new_alarm_id,
    ) -> None:
        self.tag = tag.tag
        self.hz = tag.hazard
        self.alarms = AlarmBook(tag.tag, tag.hazard, new_id)
        self._format = tag.number_format
        self._number = self._format.number
        self._big = self._format.big_integer
        self._range = tag.range
        limits = tag.limits
        self._limits = LimitJudge(self.alarms, limits) if limits and limits.items() else None
        self._stuck = StuckJudge(self.alarms, tag.stuck) if tag.stuck else None
        self._roc = RocJudge(self.alarms, tag.roc) if tag.roc else None
        self._report = ReportFilter(tag.report_deadband, every_s, poll_s)
        self._stats = (
            WindowStats(tag.tag, tag.hazard, stats_window_s, self._format)
            if stats_window_s
            else None
        )
        kinds = (
            _ALWAYS
            | (self._limits.kinds if self._limits else frozenset())
            | ({AlarmKind.STUCK} if self._stuck else set())
            | ({AlarmKind.ROC} if self._roc else set())
        )
        self.kinds = _KINDS.setdefault(kinds, kinds)
        """The alarm kinds this tag can raise: one set shared by every tag that has it."""

    def judge(self, sample: Sample) -> tuple[Reading | None, list[AlarmEvent]]:
        tag, ts, value, quality = sample
        kind = value.__class__
        if quality is not _GOOD or (kind is not float and kind is not int) or self._big:
            return self._judge(sample)
        # The common case, judged without building a new sample: a good plain number
        # (bool is not `int` here), on a tag that is not a 64-bit integer.
        try:
            number = self._number(value)  # type: ignore[arg-type]  # a float or int: its class
        except NotCarried:
            return self._judge(sample)
        span = self._range
        if (span is not None and not span.low <= number <= span.high) or self.alarms.is_active(
            AlarmKind.FAULT
        ):
            return self._judge(sample)
        events: list[AlarmEvent] = []
        if self._limits:
            events = self._limits.judge(ts, number)
        if self._stuck:
            events += self._stuck.judge(ts, number)
        if self._roc:
            events += self._roc.judge(ts, number)
        if self._stats:
            self._stats.add_value(ts, number)
        if self._report.due(ts, number, quality, bool(events)):
            return _new_reading(Reading, (tag, self.hz, ts, number, quality)), events
        return None, events

    @property
    def number_format(self) -> NumberFormat:
        """How the tag's numbers are written: its configured type's, or the one learned."""
        return self._format

    def _judge(self, sample: Sample) -> tuple[Reading | None, list[AlarmEvent]]:
        """Any sample: bad, uncertain, out of range, not a number, or a 64-bit integer."""
        if self._format.type is None and isinstance(sample.value, BigInteger):
            self._write_as(self._format.learned_from(sample.value))
        sample = _plausible(_carried(sample, self._format), self._range)
        _, ts, value, quality = sample
        events = (
            judge_fault(self.alarms, sample)
            if quality is Quality.SENSOR or self.alarms.is_active(AlarmKind.FAULT)
            else []
        )
        if quality >= Quality.COMM:
            if self._stuck:
                self._stuck.interrupt()
            if self._stats:
                self._stats.add_bad(ts)
        elif value.__class__ is float or (isinstance(value, int) and not isinstance(value, bool)):
            assert isinstance(value, int | float)
            if self._limits:
                events += self._limits.judge(ts, value)
            if self._stuck:
                events += self._stuck.judge(ts, value)
            if self._roc:
                events += self._roc.judge(ts, value)
            if self._stats:
                self._stats.add_value(ts, value)
        if self._big and events:
            events = [_wired(event, self._format) for event in events]
        if self._report.due(ts, value, quality, bool(events)):
            wired = self._format.wire(value) if self._big else value
            return Reading(self.tag, self.hz, ts, wired, quality), events
        return None, events

    def _write_as(self, number_format: NumberFormat) -> None:
        """Write the tag's values, limits and statistics by `number_format` from now on."""
        self._format = number_format
        self._number = number_format.number
        self._big = number_format.big_integer
        if self._stats:
            self._stats.write_as(number_format)

    def close_stats(self, before_ms: int) -> list[StatItem]:
        """The statistics of the windows that ended by `before_ms`."""
        return self._stats.close(before_ms) if self._stats else []

    def restore(self, raised: AlarmEvent) -> bool:
        """Take back an alarm active at the last stop; False if this tag can no longer raise it."""
        if raised.kind not in self.kinds:
            return False
        self.alarms.restore(raised)
        return True


def _carried(sample: Sample, number_format: NumberFormat) -> Sample:
    """The sample with its number as the wire carries it; NaN and infinities are not
    values: the platform gets null with q=4 (decoding failed)."""
    tag, ts, value, quality = sample
    if value.__class__ is not float and (not isinstance(value, int) or isinstance(value, bool)):
        return sample
    try:
        return _new_sample(Sample, (tag, ts, number_format.number(value), quality))
    except NotCarried:
        return Sample.bad(tag, ts, Quality.CONFIG)


_new_sample = _new_reading = tuple.__new__
"""Sample's and Reading's own constructor without its Python frame (both are NamedTuples)."""


def _wired(event: AlarmEvent, number_format: NumberFormat) -> AlarmEvent:
    """An event of a 64-bit integer tag with its value and limit as decimal strings."""
    limit = None if event.limit is None else number_format.limit(event.limit)
    return dataclasses.replace(event, value=number_format.wire(event.value), limit=limit)


def _plausible(sample: Sample, span: Range | None) -> Sample:
    """Outside the range: q=1 within its tolerance, a sensor fault (q=3) beyond it."""
    value = sample.value
    if (
        span is None
        or sample.quality.is_bad
        or not isinstance(value, int | float)
        or isinstance(value, bool)
        or span.low <= value <= span.high
    ):
        return sample
    slack = span.span * span.tolerance / 100
    if span.low - slack <= value <= span.high + slack:
        return sample._replace(quality=Quality.UNCERTAIN)
    return Sample.bad(sample.tag, sample.ts_ms, Quality.SENSOR)
