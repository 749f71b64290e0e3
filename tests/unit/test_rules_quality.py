"""The instrument range and its tolerance, STUCK, ROC and COMM."""

from __future__ import annotations

from typing import Any

from edge_agent.config.tags import TagBase
from edge_agent.model import AlarmKind, LinkState, Quality, Sample
from edge_agent.rules import AlarmBook, CommJudge, TagRules


def rules(**fields: Any) -> TagRules:
    return TagRules(TagBase(tag="T", hazard="HZ01", **fields), every_s=60, poll_s=1)


def run(tag_rules: TagRules, points: list[tuple[int, float | None]]) -> list[tuple[int, str, str]]:
    events = []
    for ts, value in points:
        quality = Quality.GOOD if value is not None else Quality.COMM
        events += tag_rules.judge(Sample("T", ts, value, quality))[1]
    return [(e.ts_ms, str(e.kind), str(e.state)) for e in events]


RANGE = {"low": 0, "high": 100, "tolerance": 5}


def test_a_value_just_outside_the_range_is_kept_as_uncertain() -> None:
    reading, events = rules(range=RANGE).judge(Sample("T", 1, 104.0, Quality.GOOD))
    assert reading is not None
    assert (reading.value, reading.quality, events) == (104.0, Quality.UNCERTAIN, [])


def test_beyond_the_tolerance_is_a_sensor_fault_with_no_value() -> None:
    tag_rules = rules(range=RANGE)
    reading, events = tag_rules.judge(Sample("T", 1, -5.5, Quality.GOOD))
    assert reading is not None
    assert (reading.value, reading.quality) == (None, Quality.SENSOR)
    assert [(e.kind, e.value) for e in events] == [(AlarmKind.FAULT, None)]
    assert run(tag_rules, [(2, 50.0)]) == [(2, "FAULT", "cleared")]


def test_an_uncertain_value_still_feeds_the_limits() -> None:
    tag_rules = rules(range=RANGE, limits={"H": 100})
    assert run(tag_rules, [(1, 103.0)]) == [(1, "H", "raised")]


def test_stuck_is_raised_after_the_value_stayed_within_epsilon() -> None:
    tag_rules = rules(stuck={"after": "3s", "epsilon": 0.1})
    points = [(0, 5.0), (1000, 5.05), (2000, 4.95), (3000, 5.0), (4000, 5.0), (5000, 6.0)]
    assert run(tag_rules, points) == [(3000, "STUCK", "raised"), (5000, "STUCK", "cleared")]


def test_a_bad_sample_breaks_the_run_that_stuck_counts() -> None:
    tag_rules = rules(stuck={"after": "3s"})
    points = [(0, 5.0), (2000, None), (3000, 5.0), (5000, 5.0), (6000, 5.0)]
    assert run(tag_rules, points) == [(6000, "STUCK", "raised")]


def test_roc_is_raised_when_the_window_spreads_past_the_limit_and_clears_as_it_slides_on() -> None:
    tag_rules = rules(roc={"limit": 10, "window": "5s"})
    points = [(0, 0.0), (1000, 5.0), (2000, 11.0), (3000, 11.0), (7000, 11.5), (8000, 12.0)]
    assert run(tag_rules, points) == [(2000, "ROC", "raised"), (7000, "ROC", "cleared")]


def test_comm_is_raised_on_every_tag_after_the_delay_and_cleared_on_return() -> None:
    books = [AlarmBook("A", "HZ01"), AlarmBook("B", "HZ01")]
    comm = CommJudge(books, after_s=30)
    assert comm.judge(LinkState.DOWN, 0) == []
    assert comm.judge(LinkState.DOWN, 29_999) == []
    raised = comm.judge(LinkState.DOWN, 30_000)
    assert [(e.tag, str(e.kind), str(e.state), e.value) for e in raised] == [
        ("A", "COMM", "raised", None),
        ("B", "COMM", "raised", None),
    ]
    assert comm.judge(LinkState.DOWN, 40_000) == []
    cleared = comm.judge(LinkState.UP, 41_000)
    assert [e.id for e in cleared] == [e.id for e in raised]


def test_a_device_back_before_the_delay_raises_nothing() -> None:
    comm = CommJudge([AlarmBook("A", "HZ01")], after_s=30)
    assert comm.judge(LinkState.DOWN, 0) == []
    assert comm.judge(LinkState.UP, 20_000) == []
    assert comm.judge(LinkState.DOWN, 25_000) == []
    assert comm.judge(LinkState.DOWN, 50_000) == []


def test_a_comm_restored_at_start_is_cleared_by_the_first_answer_and_only_once() -> None:
    """A COMM active when the agent stopped is restored into the book; the device's first
    answer clears it, and the answers after it cost no walk over the tags."""
    book = AlarmBook("A", "HZ01")
    before = CommJudge([book], after_s=30)
    (raised,) = [*before.judge(LinkState.DOWN, 0), *before.judge(LinkState.DOWN, 30_000)]
    restored = AlarmBook("A", "HZ01")
    restored.restore(raised)
    comm = CommJudge([restored], after_s=30)
    (cleared,) = comm.judge(LinkState.UP, 60_000)
    assert (cleared.id, str(cleared.state)) == (raised.id, "cleared")
    assert comm.judge(LinkState.UP, 61_000) == []
    assert restored.active == {}


def test_tags_that_can_raise_the_same_alarms_share_one_set_of_their_kinds() -> None:
    # One frozenset per tag was 2 MB at 10,000 tags.
    plain, other_plain, limited = rules(), rules(), rules(limits={"H": 80})
    assert plain.kinds == {AlarmKind.FAULT, AlarmKind.COMM}
    assert plain.kinds is other_plain.kinds
    assert limited.kinds == {AlarmKind.FAULT, AlarmKind.COMM, AlarmKind.H}
