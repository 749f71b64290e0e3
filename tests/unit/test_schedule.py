"""The one deadline schedule of the poll loops: fixed rate, late work started within its
interval, skipped not bunched."""

from __future__ import annotations

from edge_agent.schedule import Deadline


def test_a_schedule_starts_at_its_first_pass_and_keeps_its_grid() -> None:
    deadline = Deadline(1.0)
    assert deadline.due(5.0)
    assert deadline.passed(5.0) == 0
    assert deadline.next == 6.0
    assert deadline.passed(6.3) == 0  # work started late does not move the grid
    assert deadline.next == 7.0


def test_deadlines_whose_interval_went_by_are_skipped_and_counted() -> None:
    deadline = Deadline(1.0, next=10.0)
    assert deadline.passed(12.5) == 2  # 10 and 11 went by; work for 12 starts late
    assert deadline.next == 13.0
    assert deadline.passed(14.0) == 0  # starting on the deadline after: 13 is kept
    assert deadline.next == 14.0
    assert deadline.passed(14.5) == 0
    assert deadline.passed(16.01) == 1


def test_the_grid_wait_never_starts_late_work() -> None:
    deadline = Deadline(1.0, next=10.0)
    assert deadline.grid_wait_s(9.75) == 0.25  # before the deadline: the same as wait_s
    assert deadline.wait_s(10.25) == 0.0
    assert deadline.grid_wait_s(10.25) == 0.75  # past it: to the next on the grid
    assert deadline.grid_wait_s(12.5) == 0.5


def test_slack_makes_a_deadline_due_a_little_early() -> None:
    deadline = Deadline(10.0, next=100.0)
    assert not deadline.due(99.0)
    assert deadline.due(99.0, slack=1.0)
