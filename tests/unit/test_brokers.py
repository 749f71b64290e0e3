"""Broker rotation and the takeover backoff: which broker next, and how long to wait first."""

from __future__ import annotations

import random

import pytest

from edge_agent.backoff import Backoff
from edge_agent.uplink.brokers import (
    REFUSED_RETRY_MAX_S,
    SUSPECT_AFTER,
    TAKEOVER_FIRST_S,
    TAKEOVER_MAX_S,
    TAKEOVER_STABLE_S,
    Ending,
    ReconnectPolicy,
)


def policy(brokers: int = 3, *, stable_after_s: float = 60.0) -> ReconnectPolicy:
    return ReconnectPolicy(brokers, 1.0, 60.0, random.Random(7), stable_after_s=stable_after_s)


def test_a_failed_connect_moves_to_the_next_broker_at_once() -> None:
    """Within a round there is no wait: the next broker may well be up."""
    reconnect = policy(3)
    assert (reconnect.broker, reconnect.connect_failed()) == (0, 0.0)
    assert (reconnect.broker, reconnect.connect_failed()) == (1, 0.0)
    assert reconnect.broker == 2


def test_a_failed_round_waits_and_starts_again_at_the_first_broker() -> None:
    reconnect = policy(2)
    reconnect.connect_failed()
    delay = reconnect.connect_failed()
    assert reconnect.broker == 0
    assert 0.5 <= delay <= 1.0


def test_round_delays_double_up_to_reconnect_max_and_are_jittered() -> None:
    reconnect = policy(1)
    delays = [reconnect.connect_failed() for _ in range(12)]
    nominal = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]
    for delay, ceiling in zip(delays, nominal, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[-6:]}) > 1, "delays at the cap are still jittered"


def test_the_first_delay_is_jittered_too() -> None:
    """A fleet dropped by one broker restart must not come back in step."""
    firsts = {ReconnectPolicy(1, 1.0, 60.0, random.Random(i)).connect_failed() for i in range(10)}
    assert len(firsts) > 1


def test_a_dropped_connection_starts_the_next_round_at_the_first_broker() -> None:
    reconnect = policy(3)
    reconnect.connect_failed()
    assert reconnect.broker == 1
    reconnect.connection_ended(500.0, Ending.LOST)
    assert reconnect.broker == 0


def test_only_a_connection_that_stayed_up_resets_the_round_backoff() -> None:
    """A broker that accepts and drops at once is not hammered at reconnect_min."""
    reconnect = policy(1)
    for _ in range(6):
        reconnect.connect_failed()
    short = reconnect.connection_ended(1.0, Ending.LOST).delay
    assert short >= 30.0
    reconnect.connection_ended(60.0, Ending.LOST)
    assert reconnect.connection_ended(60.0, Ending.LOST).delay <= 1.0


def test_a_takeover_waits_at_least_30_s_and_is_counted() -> None:
    reconnect = policy(2)
    delay, takeover = reconnect.connection_ended(5.0, Ending.TAKEN_OVER)
    assert takeover == "reported"
    assert TAKEOVER_FIRST_S <= delay <= 2 * TAKEOVER_FIRST_S
    assert reconnect.takeovers == 1
    assert reconnect.broker == 0


def test_repeated_takeovers_back_off_to_ten_minutes() -> None:
    """Two clones each stay up about as long as the other waits: that must not reset it."""
    reconnect = policy(1)
    delays = [reconnect.connection_ended(300.0, Ending.TAKEN_OVER).delay for _ in range(8)]
    assert delays[-1] >= TAKEOVER_MAX_S / 2
    assert max(delays) <= TAKEOVER_MAX_S
    assert reconnect.takeovers == 8


def test_a_long_connection_without_takeover_resets_the_takeover_backoff() -> None:
    reconnect = policy(1)
    for _ in range(6):
        reconnect.connection_ended(10.0, Ending.TAKEN_OVER)
    reconnect.connection_ended(TAKEOVER_STABLE_S, Ending.LOST)
    assert reconnect.connection_ended(10.0, Ending.TAKEN_OVER).delay <= 2 * TAKEOVER_FIRST_S


def test_a_takeover_does_not_disturb_the_round_backoff() -> None:
    reconnect = policy(1)
    reconnect.connection_ended(10.0, Ending.TAKEN_OVER)
    assert reconnect.connect_failed() <= 1.0


def test_counts_failed_connects() -> None:
    reconnect = policy(2)
    for _ in range(5):
        reconnect.connect_failed()
    assert reconnect.failed_connects == 5


def test_a_policy_needs_a_broker() -> None:
    with pytest.raises(ValueError, match="at least one broker"):
        ReconnectPolicy(0, 1.0, 60.0)


def test_backoff_never_exceeds_its_cap_even_when_the_cap_is_below_the_first_delay() -> None:
    backoff = Backoff(5.0, 2.0, random.Random(1), equal_jitter=True)
    assert all(1.0 <= backoff.next() <= 2.0 for _ in range(5))


def test_a_broker_that_keeps_closing_idle_young_connections_is_a_suspected_takeover() -> None:
    """Mosquitto 2.0.11 closes the old connection without saying why."""
    reconnect = policy(1)
    for _ in range(SUSPECT_AFTER - 1):
        retry = reconnect.connection_ended(3.0, Ending.CLOSED_IDLE)
        assert retry.takeover is None
        assert retry.delay <= 2.0, "a close may be a broker restart: come back quickly"
    suspected = reconnect.connection_ended(3.0, Ending.CLOSED_IDLE)
    assert suspected.takeover == "suspected"
    assert suspected.delay >= TAKEOVER_FIRST_S
    assert reconnect.takeovers == 1


def test_a_failed_connect_between_closes_clears_the_suspicion() -> None:
    """A broker that restarts is unreachable for a moment: that is no takeover."""
    reconnect = policy(1)
    for _ in range(SUSPECT_AFTER - 1):
        reconnect.connection_ended(3.0, Ending.CLOSED_IDLE)
    reconnect.connect_failed()
    assert reconnect.connection_ended(3.0, Ending.CLOSED_IDLE).takeover is None


def test_closes_that_blame_a_publish_are_refusals_retried_within_30_s() -> None:
    """An oversized packet or a denied topic closes the connection too: never a clone."""
    reconnect = policy(1)
    for _ in range(4):
        reconnect.connect_failed()  # the round backoff is long now
    retries = [reconnect.connection_ended(3.0, Ending.REFUSED) for _ in range(10)]
    assert all(retry.takeover is None for retry in retries)
    assert max(retry.delay for retry in retries) <= REFUSED_RETRY_MAX_S
    assert reconnect.takeovers == 0


def test_refused_retries_at_the_cap_are_still_jittered() -> None:
    """A fleet refused together must not retry in step: no delay is exactly the cap."""
    reconnect = policy(1)
    for _ in range(8):
        reconnect.connect_failed()  # the round backoff is at its cap, above the refusal cap
    delays = [reconnect.connection_ended(3.0, Ending.REFUSED).delay for _ in range(10)]
    assert all(REFUSED_RETRY_MAX_S / 2 <= delay <= REFUSED_RETRY_MAX_S for delay in delays)
    assert len({round(delay, 6) for delay in delays}) == len(delays)


def test_a_refusal_between_idle_closes_clears_the_suspicion() -> None:
    reconnect = policy(1)
    for _ in range(SUSPECT_AFTER - 1):
        reconnect.connection_ended(3.0, Ending.CLOSED_IDLE)
    reconnect.connection_ended(3.0, Ending.REFUSED)
    assert reconnect.connection_ended(3.0, Ending.CLOSED_IDLE).takeover is None


def test_closes_of_stable_connections_or_by_the_agent_are_not_suspicious() -> None:
    reconnect = policy(1)
    for _ in range(SUSPECT_AFTER + 1):
        assert reconnect.connection_ended(120.0, Ending.CLOSED_IDLE).takeover is None
    for ending in (Ending.LOST, Ending.AGENT) * SUSPECT_AFTER:
        assert reconnect.connection_ended(3.0, ending).takeover is None
