"""The one deadline schedule of the poll loops: fixed rate, skipped not bunched."""

from __future__ import annotations

from edge_agent.schedule import Deadline


def test_a_schedule_starts_at_its_first_pass_and_keeps_its_grid() -> None:
    deadline = Deadline(1.0)
    assert deadline.due(5.0)
    assert deadline.passed(5.0) == 0
    assert deadline.next == 6.0
    assert deadline.passed(6.3) == 0  # late work does not move the grid
    assert deadline.next == 7.0


def test_deadlines_passed_while_working_are_skipped_and_counted() -> None:
    deadline = Deadline(1.0, next=10.0)
    assert deadline.passed(12.5) == 2  # 11 and 12 were skipped
    assert deadline.next == 13.0
    assert deadline.passed(14.0) == 0  # finishing on the next deadline: that one is kept
    assert deadline.next == 14.0
    assert deadline.passed(14.5) == 0
    assert deadline.passed(16.01) == 1


def test_slack_makes_a_deadline_due_a_little_early() -> None:
    deadline = Deadline(10.0, next=100.0)
    assert not deadline.due(99.0)
    assert deadline.due(99.0, slack=1.0)
