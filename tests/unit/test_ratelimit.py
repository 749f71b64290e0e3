"""The back-fill byte rate: a token bucket that may go into debt by one message."""

from __future__ import annotations

from edge_agent.uplink.ratelimit import ByteRate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_message_larger_than_the_rate_goes_and_then_waits_its_time_out() -> None:
    clock = Clock()
    rate = ByteRate(1000, clock)
    assert rate.allows()
    rate.spend(3000)
    assert not rate.allows()
    assert rate.wait_s() == 2.0
    clock.now = 2.0
    assert rate.allows()


def test_the_long_run_rate_holds() -> None:
    clock = Clock()
    rate = ByteRate(1000, clock)
    sent = 0
    for step in range(1000):
        clock.now = step * 0.01
        if rate.allows():
            rate.spend(100)
            sent += 100
    assert 9_000 <= sent <= 11_100  # 10 s at 1000 B/s, plus the first second's burst
