"""The clock guard: samples taken on an unsynchronised clock go on as q=1, and it says so."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from edge_agent.clock import ClockWatch, clock_source
from edge_agent.clockguard import ClockGuard, uncertain_times
from edge_agent.model import Quality, Sample


class FakeClock:
    """A synchronisation flag and wall/elapsed clocks the test moves by hand."""

    def __init__(self, synced: bool) -> None:
        self.synced = synced
        self.wall = 1_764_441_155.0
        self.elapsed = 100.0

    def watch(self) -> ClockWatch:
        return ClockWatch(1.0, lambda: self.wall, lambda: self.elapsed, lambda: self.synced)


def test_a_good_sample_on_an_unsynced_clock_is_uncertain_with_its_value() -> None:
    good = Sample("HZ01.LT101", 1000, 12.5, Quality.GOOD)
    assert uncertain_times([good]) == [Sample("HZ01.LT101", 1000, 12.5, Quality.UNCERTAIN)]


def test_bad_samples_keep_the_quality_that_says_why() -> None:
    bad = [Sample.bad("A", 1, Quality.COMM), Sample.bad("B", 1, Quality.SENSOR)]
    assert uncertain_times(bad) == bad


def test_the_guard_marks_samples_only_while_unsynced_and_reports_the_change() -> None:
    clock = FakeClock(synced=False)
    changes: list[str] = []
    guard = ClockGuard(clock.watch(), lambda: changes.append(guard.state))
    sample = Sample("A", 1, 1.0, Quality.GOOD)
    assert guard.state == "unsynced"
    assert guard.guard([sample])[0].quality is Quality.UNCERTAIN

    clock.synced = True
    guard.check()
    assert changes == ["synced"]
    assert guard.guard([sample]) == [sample]


def test_a_step_is_logged_as_a_warning_with_its_size() -> None:
    clock = FakeClock(synced=True)
    with capture_logs() as logged:
        guard = ClockGuard(clock.watch(), lambda: None)
        clock.elapsed += 5
        clock.wall += 5 + 3600
        guard.check()
    assert logged == [
        {"component": "clock", "event": "clock_stepped", "step_s": 3600.0, "log_level": "warning"}
    ]


def test_an_unsynced_clock_at_start_is_logged() -> None:
    with capture_logs() as logged:
        ClockGuard(FakeClock(synced=False).watch(), lambda: None)
    assert [line["event"] for line in logged] == ["clock_unsynchronised"]


@pytest.mark.parametrize(("setting", "synced"), [("synced", True), ("unsynced", False)])
def test_the_environment_can_say_how_the_clock_is(setting: str, synced: bool) -> None:
    """For a clock disciplined where the kernel cannot see it (PTP, GPS), and for tests."""
    assert clock_source({"EDGE_AGENT_CLOCK": setting})() is synced


def test_by_default_the_system_answers() -> None:
    assert isinstance(clock_source({})(), bool)


def test_a_misspelt_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="EDGE_AGENT_CLOCK='sync'"):
        clock_source({"EDGE_AGENT_CLOCK": "sync"})
