"""Limit alarms: raise at the limit, clear past the deadband, one id per occurrence."""

from __future__ import annotations

import itertools

from edge_agent.config.tags import Limits, TagBase
from edge_agent.model import AlarmKind, AlarmState, Quality, Sample
from edge_agent.rules import TagRules

LIMITS = Limits(HH=50, H=25, L=19.5, LL=18, deadband=2)


def tag_rules(limits: Limits | None = LIMITS, tag: str = "GT201") -> TagRules:
    ids = (f"id{n}" for n in itertools.count())
    config = TagBase(tag=tag, hazard="HZ01", limits=limits)
    return TagRules(config, every_s=60, poll_s=1, new_id=lambda: next(ids))


def judge_values(values: list[float | None], limits: Limits = LIMITS) -> list[tuple[str, str, str]]:
    rules = tag_rules(limits)
    events = []
    for ts, value in enumerate(values):
        quality = Quality.GOOD if value is not None else Quality.COMM
        events += rules.judge(Sample("GT201", ts, value, quality))[1]
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
    rules = tag_rules(tag="T1")
    reading, events = rules.judge(Sample("T1", 1, float("nan"), Quality.GOOD))
    assert reading is not None
    assert (reading.value, reading.quality, events) == (None, Quality.CONFIG, [])


def test_tag_rules_carry_the_hazard_code_and_alarm_fields() -> None:
    rules = tag_rules(tag="T1")
    reading, events = rules.judge(Sample("T1", 7, 27.5, Quality.GOOD))
    assert reading is not None
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
    rules = tag_rules(None)
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


def judge_timed(
    points: list[tuple[int, float | None]], limits: Limits
) -> list[tuple[int, str, str]]:
    """(ms, value) -> (ms, kind, state) of each event."""
    rules = tag_rules(limits)
    events = []
    for ts, value in points:
        quality = Quality.GOOD if value is not None else Quality.COMM
        events += rules.judge(Sample("GT201", ts, value, quality))[1]
    return [(e.ts_ms, str(e.kind), str(e.state)) for e in events]


def test_an_on_delay_raises_only_after_the_limit_held_that_long() -> None:
    limits = Limits(H=25, on_delay="2s")
    spike = [(0, 30), (1000, 20), (2000, 30), (3000, 30), (4000, 30)]
    assert judge_timed(spike, limits) == [(4000, "H", "raised")]


def test_an_off_delay_clears_only_after_the_value_stayed_recovered() -> None:
    limits = Limits(H=25, off_delay="2s")
    points = [(0, 30), (1000, 20), (2000, 30), (3000, 20), (4000, 20), (5000, 20)]
    assert judge_timed(points, limits) == [(0, "H", "raised"), (5000, "H", "cleared")]


def test_a_bad_sample_does_not_restart_an_on_delay() -> None:
    limits = Limits(H=25, on_delay="2s")
    points = [(0, 30), (1000, None), (2000, 30)]
    assert judge_timed(points, limits) == [(2000, "H", "raised")]


def test_gas_levels_are_the_uplinks_h_and_hh() -> None:
    limits = Limits.model_validate({"level1": 25, "level2": 50})
    assert (limits.H, limits.HH) == (25, 50)
    assert judge_values([10, 30, 55], limits) == [
        ("H", "raised", "id0"),
        ("HH", "raised", "id1"),
    ]


def test_a_restored_alarm_is_not_raised_again_and_clears_with_its_old_id() -> None:
    first = tag_rules()
    (raised,) = first.judge(Sample("GT201", 1, 30.0, Quality.GOOD))[1]
    after_restart = tag_rules()
    assert after_restart.restore(raised)
    assert after_restart.judge(Sample("GT201", 2, 31.0, Quality.GOOD))[1] == []
    (cleared,) = after_restart.judge(Sample("GT201", 3, 21.0, Quality.GOOD))[1]
    assert (cleared.id, cleared.state, cleared.limit) == (raised.id, AlarmState.CLEARED, 25)


def test_an_alarm_whose_limit_is_gone_is_not_restored() -> None:
    (raised,) = tag_rules().judge(Sample("GT201", 1, 30.0, Quality.GOOD))[1]
    assert not tag_rules(Limits(HH=50)).restore(raised)
