"""Limit alarms: raise at the limit, clear past the deadband, one id per occurrence."""

from __future__ import annotations

import itertools

from edge_agent.config.tags import Limits
from edge_agent.model import AlarmKind, AlarmState, Quality, Sample
from edge_agent.rules import LimitJudge, TagRules

LIMITS = Limits(HH=50, H=25, L=19.5, LL=18, deadband=2)


def judge_values(values: list[float | None], limits: Limits = LIMITS) -> list[tuple[str, str, str]]:
    ids = (f"id{n}" for n in itertools.count())
    judge = LimitJudge("GT201", "HZ01", limits, new_id=lambda: next(ids))
    events = []
    for ts, value in enumerate(values):
        quality = Quality.GOOD if value is not None else Quality.COMM
        events += judge.judge(Sample("GT201", ts, value, quality))
    return [(str(e.kind), str(e.state), e.id) for e in events]


def test_high_limit_is_raised_when_the_value_reaches_it() -> None:
    assert judge_values([20, 24.9, 25]) == [("H", "raised", "id0")]


def test_high_limit_clears_only_below_limit_minus_deadband() -> None:
    assert judge_values([26, 24, 23.0, 22.9]) == [("H", "raised", "id0"), ("H", "cleared", "id0")]


def test_a_jump_past_hh_raises_h_then_hh_and_they_clear_in_turn() -> None:
    assert judge_values([20, 60, 40, 10 + 10]) == [
        ("H", "raised", "id0"),
        ("HH", "raised", "id1"),
        ("HH", "cleared", "id1"),
        ("H", "cleared", "id0"),
    ]


def test_low_limits_mirror_the_high_ones() -> None:
    assert judge_values([20, 19.5, 17, 19, 20.1, 21.6]) == [
        ("L", "raised", "id0"),
        ("LL", "raised", "id1"),
        ("LL", "cleared", "id1"),
        ("L", "cleared", "id0"),
    ]


def test_a_bad_sample_neither_raises_nor_clears() -> None:
    assert judge_values([30, None, 22]) == [("H", "raised", "id0"), ("H", "cleared", "id0")]
    assert judge_values([None, None]) == []


def test_each_occurrence_gets_a_new_id() -> None:
    events = judge_values([30, 22, 30, 22])
    assert [e[2] for e in events] == ["id0", "id0", "id1", "id1"]


def test_tag_rules_turn_non_finite_values_into_bad_config_quality() -> None:
    rules = TagRules("T1", "HZ01", LIMITS)
    reading, events = rules.judge(Sample("T1", 1, float("nan"), Quality.GOOD))
    assert (reading.value, reading.quality, events) == (None, Quality.CONFIG, [])


def test_tag_rules_carry_the_hazard_code_and_alarm_fields() -> None:
    rules = TagRules("T1", "HZ01", LIMITS)
    reading, events = rules.judge(Sample("T1", 7, 27.5, Quality.GOOD))
    assert reading.hz == "HZ01"
    (event,) = events
    assert (event.kind, event.state, event.value, event.limit, event.ts_ms) == (
        AlarmKind.H,
        AlarmState.RAISED,
        27.5,
        25,
        7,
    )


def fault_events(qualities: list[Quality]) -> list[tuple[str, str, object, object]]:
    rules = TagRules("GT201", "HZ01")
    events = []
    for ts, quality in enumerate(qualities):
        value = None if quality.is_bad else 10.0
        events += rules.judge(Sample("GT201", ts, value, quality))[1]
    return [(str(e.kind), str(e.state), e.value, e.limit) for e in events]


def test_a_sensor_fault_raises_fault_and_a_usable_value_clears_it() -> None:
    q = Quality
    assert fault_events([q.GOOD, q.SENSOR, q.SENSOR, q.UNCERTAIN]) == [
        ("FAULT", "raised", None, None),
        ("FAULT", "cleared", None, None),
    ]


def test_no_communication_neither_raises_nor_clears_fault() -> None:
    q = Quality
    assert fault_events([q.COMM, q.CONFIG]) == []
    assert fault_events([q.SENSOR, q.COMM, q.CONFIG, q.GOOD]) == [
        ("FAULT", "raised", None, None),
        ("FAULT", "cleared", None, None),
    ]
