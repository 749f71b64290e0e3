"""Reconnect delays: doubling, capped, jittered, reset after success."""

from __future__ import annotations

import random

from edge_agent.backoff import Backoff


def test_delays_stay_between_first_and_a_doubling_ceiling_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        assert 0.5 <= backoff.next() <= ceiling


def test_delays_are_jittered() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    for _ in range(5):
        backoff.next()
    assert len({round(backoff.next(), 6) for _ in range(10)}) > 1


def test_reset_makes_the_next_retry_quick_again() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5


def test_equal_jitter_waits_at_least_half_of_a_doubling_delay() -> None:
    """For waits that must grow for sure (a takeover of the client id): [d/2, d], d
    doubling from 2 x first."""
    backoff = Backoff(1.0, 16.0, random.Random(1), equal_jitter=True)
    for nominal in (2.0, 4.0, 8.0, 16.0, 16.0):
        assert nominal / 2 <= backoff.next() <= nominal
    backoff.reset()
    assert 1.0 <= backoff.next() <= 2.0
