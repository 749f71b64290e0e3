"""The watchdog's progress test: alive while the pipeline beat within `stall_after_s`."""

from __future__ import annotations

from edge_agent.service.watchdog import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_alive_until_no_beat_for_longer_than_the_stall_limit() -> None:
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    clock.now += 10.0
    assert heartbeat.alive()
    clock.now += 0.1
    assert not heartbeat.alive()


def test_a_beat_makes_a_stalled_pipeline_alive_again() -> None:
    clock = Clock()
    heartbeat = Heartbeat(10.0, clock)
    clock.now += 60.0
    heartbeat.beat()
    assert heartbeat.alive()
