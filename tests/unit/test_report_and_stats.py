"""Report by exception and window statistics."""

from __future__ import annotations

from typing import Any

from edge_agent.config.tags import TagBase
from edge_agent.model import Quality, Sample, StatItem, Value
from edge_agent.rules import TagRules


def rules(every_s: float = 20, poll_s: float = 1, **fields: Any) -> TagRules:
    tag = TagBase(tag="T", hazard="HZ01", **fields)
    return TagRules(tag, every_s=every_s, poll_s=poll_s, stats_window_s=300)


def reported(tag_rules: TagRules, points: list[tuple[int, Value, Quality]]) -> list[int]:
    """The sample times whose reading is sent."""
    return [
        ts for ts, value, q in points if tag_rules.judge(Sample("T", ts, value, q))[0] is not None
    ]


GOOD = Quality.GOOD


def test_an_unchanged_value_reports_only_on_the_heartbeat_one_poll_early() -> None:
    points = [(s * 1000, 5.0, GOOD) for s in range(45)]
    assert reported(rules(), points) == [0, 19_000, 38_000]


def test_any_change_is_reported_without_a_deadband() -> None:
    points = [(0, 5.0, GOOD), (1000, 5.0, GOOD), (2000, 5.01, GOOD), (3000, True, GOOD)]
    assert reported(rules(), points) == [0, 2000, 3000]


def test_a_deadband_holds_back_small_moves_from_the_last_reported_value() -> None:
    points = [(0, 5.0, GOOD), (1000, 5.4, GOOD), (2000, 5.8, GOOD), (3000, 5.9, GOOD)]
    assert reported(rules(report={"deadband": 0.5}), points) == [0, 2000]


def test_a_percent_deadband_is_of_the_range_span() -> None:
    tag_rules = rules(report={"deadband_pct": 1}, range={"low": 0, "high": 200})
    points = [(0, 50.0, GOOD), (1000, 51.5, GOOD), (2000, 52.5, GOOD)]
    assert reported(tag_rules, points) == [0, 2000]


def test_a_change_of_quality_and_an_alarm_are_always_reported() -> None:
    tag_rules = rules(report={"deadband": 100}, limits={"H": 25})
    points = [
        (0, 5.0, GOOD),
        (1000, None, Quality.COMM),
        (2000, None, Quality.COMM),
        (3000, 5.0, GOOD),
        (4000, 30.0, GOOD),
    ]
    assert reported(tag_rules, points) == [0, 1000, 3000, 4000]


def test_statistics_cover_each_wall_clock_window_and_count_bad_samples() -> None:
    tag_rules = rules()
    base = 1_764_441_000_000  # a multiple of 300 s
    for ts, value, q in [
        (base - 1000, 1.0, GOOD),
        (base, 3.0, GOOD),
        (base + 1000, 5.0, Quality.UNCERTAIN),
        (base + 2000, None, Quality.SENSOR),
        (base + 300_000, 7.0, GOOD),
    ]:
        tag_rules.judge(Sample("T", ts, value, q))
    assert tag_rules.close_stats(base + 300_000) == [
        StatItem("T", "HZ01", base - 300_000, 300, 1.0, 1.0, 1.0, 1, 0),
        StatItem("T", "HZ01", base, 300, 3.0, 5.0, 4.0, 2, 1),
    ]
    assert tag_rules.close_stats(base + 300_000) == []


def test_a_window_without_a_value_has_null_statistics() -> None:
    tag_rules = rules()
    tag_rules.judge(Sample("T", 0, None, Quality.COMM))
    assert tag_rules.close_stats(300_000) == [StatItem("T", "HZ01", 0, 300, None, None, None, 0, 1)]


def test_a_sample_for_a_closed_window_is_left_out() -> None:
    tag_rules = rules()
    tag_rules.judge(Sample("T", 1000, 1.0, GOOD))
    assert len(tag_rules.close_stats(300_000)) == 1
    tag_rules.judge(Sample("T", 2000, 2.0, GOOD))
    assert tag_rules.close_stats(600_000) == []
