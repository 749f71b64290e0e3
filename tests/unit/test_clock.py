"""Clock: synchronisation from the kernel (or timesyncd's marker), and steps between checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import clock
from edge_agent.clock import ClockStatus, ClockWatch, kernel_synced, system_clock_synced


class Clocks:
    """A wall clock and an elapsed-time clock that tests move by hand."""

    def __init__(self) -> None:
        self.wall = 1_764_441_155.0
        self.elapsed = 100.0

    def advance(self, seconds: float, wall_step: float = 0.0) -> None:
        self.elapsed += seconds
        self.wall += seconds + wall_step


def watch(clocks: Clocks, synced: bool = True) -> ClockWatch:
    return ClockWatch(1.0, lambda: clocks.wall, lambda: clocks.elapsed, lambda: synced)


def test_a_steady_clock_has_no_step() -> None:
    clocks = Clocks()
    watcher = watch(clocks)
    clocks.advance(60)
    assert watcher.check() == ClockStatus(synced=True, stepped_by_s=None)


def test_slewing_within_the_threshold_is_not_a_step() -> None:
    """NTP slews at most 500 ppm: 0.5 s over 1000 s is no step."""
    clocks = Clocks()
    watcher = watch(clocks)
    clocks.advance(1000, wall_step=0.5)
    assert watcher.check().stepped_by_s is None


def test_a_step_forward_is_reported_once() -> None:
    """NTP's first sync after a boot in 1970 jumps decades forward; the next check is quiet."""
    clocks = Clocks()
    clocks.wall = 3600.0  # 1970-01-01 01:00
    watcher = watch(clocks)
    clocks.advance(5, wall_step=1_764_441_000.0)
    assert watcher.check().stepped_by_s == 1_764_441_000.0
    clocks.advance(5)
    assert watcher.check().stepped_by_s is None


def test_a_step_backward_is_negative() -> None:
    clocks = Clocks()
    watcher = watch(clocks)
    clocks.advance(10, wall_step=-30.0)
    assert watcher.check().stepped_by_s == -30.0


def test_state_names_follow_uplink_v1() -> None:
    assert ClockStatus(True, None).state == "synced"
    assert ClockStatus(False, None).state == "unsynced"


def test_the_kernel_answers_with_a_bool_here() -> None:
    """The real adjtimex(2) call works unprivileged on this machine (read-only mode)."""
    assert isinstance(kernel_synced(), bool)


def test_the_real_watch_sees_no_step_between_two_quick_checks() -> None:
    status = ClockWatch().check()
    assert isinstance(status.synced, bool)
    assert status.stepped_by_s is None


def test_without_adjtimex_the_timesyncd_marker_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seccomp filter refusing adjtimex: synced exactly when timesyncd left its marker."""
    monkeypatch.setattr(clock, "kernel_synced", lambda: None)
    marker = tmp_path / "synchronized"
    assert system_clock_synced(marker) is False
    marker.touch()
    assert system_clock_synced(marker) is True
