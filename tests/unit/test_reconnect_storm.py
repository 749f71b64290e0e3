"""A province's 5,000 gateways after a shared outage: the real reconnect policy, simulated.

Each gateway is the agent's own `ReconnectPolicy` with the agent's default
reconnect settings (built from the config models, as the runtime builds them)
and its own seeded `random.Random`. Time is discrete: an event queue of
connect attempts, each answered at once by a broker that, by scenario, is
unreachable (the attempt fails), accepts and drops at once, or accepts for
good. Nothing sleeps: a simulation of the fleet takes about a third of a second.

The bound on a broker's busiest second after an outage: when it returns,
every gateway waits out a delay drawn from [c/2, c], c at least the nominal
delay of the slowest gateway (`reconnect_max` after a long outage). Wherever
a gateway's last failed attempt fell, its next one falls in a given second
with probability at most 1/(c/2), and it falls only once (the attempt
connects). A second's count is then a sum of independent trials with mean at
most N/(c/2), whose spread is at most a Poisson count's; the bound allows five
standard deviations. The broker that drops every connection gets bounds of
the same form, each test says how.

Run with `pytest -s` for the figures; docs/uplink.md ("A province at scale")
quotes them.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.reload import uplink_settings_of
from edge_agent.uplink.brokers import (
    REFUSED_RETRY_MAX_S,
    SUSPECT_AFTER,
    TAKEOVER_FIRST_S,
    TAKEOVER_MAX_S,
    Ending,
    ReconnectPolicy,
)

GATEWAYS = 5_000
SEED = 20261207
OUTAGE_S = 300.0
"""How long the broker is unreachable (every connect fails)."""
DROPPING_S = 120.0
"""How long the broker accepts every connection and drops it at once."""
DROPPED_AFTER_S = 0.1
"""How long a dropped connection was up."""
UP_BEFORE_S = 86_400.0
"""How long every connection had been up when the incident began."""

DEFAULTS = uplink_settings_of(UplinkConfig.model_validate({"mqtt": {"host": "broker.example"}}))

Broker = Callable[[ReconnectPolicy, float], float | None]
"""What the broker does with an attempt at time t: the gateway's wait until its next
attempt, or None when the connection lasts."""


@dataclass(frozen=True, slots=True)
class Storm:
    attempts: Counter[int]
    """Connect attempts in each whole second since the incident began."""
    connected_at: tuple[float, ...]
    """Per gateway, when the connection that lasted came up."""
    takeovers: int
    """Suspected takeovers, over the fleet (the broker closed connections early)."""

    def peak_from(self, start_s: float) -> tuple[int, int]:
        """(second, attempts) of the busiest second from `start_s` on."""
        return max(((s, n) for s, n in self.attempts.items() if s >= start_s), key=lambda sn: sn[1])

    def all_connected_after(self, start_s: float) -> float:
        return max(self.connected_at) - start_s


def simulate(broker: Broker, seed: int = SEED) -> Storm:
    """Every gateway loses a day-old connection at t = 0 and retries as its policy says."""
    policies = [
        ReconnectPolicy(
            len(DEFAULTS.brokers),
            DEFAULTS.reconnect_min_s,
            DEFAULTS.reconnect_max_s,
            random.Random(seed + n),
        )
        for n in range(GATEWAYS)
    ]
    queue = [
        (policy.connection_ended(UP_BEFORE_S, Ending.LOST).delay, n)
        for n, policy in enumerate(policies)
    ]
    heapq.heapify(queue)
    attempts: Counter[int] = Counter()
    connected_at = [0.0] * GATEWAYS
    while queue:
        t, n = heapq.heappop(queue)
        attempts[int(t)] += 1
        wait = broker(policies[n], t)
        if wait is None:
            connected_at[n] = t
        else:
            heapq.heappush(queue, (t + wait, n))
    return Storm(attempts, tuple(connected_at), sum(p.takeovers for p in policies))


def unreachable_until(back_s: float) -> Broker:
    def broker(policy: ReconnectPolicy, t: float) -> float | None:
        return policy.connect_failed() if t < back_s else None

    return broker


def dropping_until(fixed_s: float, ending: Ending) -> Broker:
    def broker(policy: ReconnectPolicy, t: float) -> float | None:
        if t >= fixed_s:
            return None
        return DROPPED_AFTER_S + policy.connection_ended(DROPPED_AFTER_S, ending).delay

    return broker


def peak_bound(gateways: int, ceiling_s: float) -> float:
    """The busiest second's bound when no gateway waits less than [c/2, c] (module docstring)."""
    mean = gateways / (ceiling_s / 2)
    return mean + 5 * math.sqrt(mean)


def lowest_ceiling(outage_s: float) -> float:
    """The smallest nominal delay any gateway is waiting out when the broker returns.

    The slowest gateway draws every delay at its nominal value; any other has
    failed at least as often by then, so its nominal delay is at least as long.
    """
    t, ceiling = 0.0, DEFAULTS.reconnect_min_s
    while t + ceiling < outage_s:
        t += ceiling
        ceiling = min(2 * ceiling, DEFAULTS.reconnect_max_s)
    return ceiling


@pytest.mark.parametrize("outage_s", [10.0, 30.0, OUTAGE_S])
def test_the_return_after_an_outage_stays_under_the_bound(outage_s: float) -> None:
    """The broker back after an outage: its busiest second under N/(c/2) plus 5 sqrt of that."""
    storm = simulate(unreachable_until(outage_s))
    second, peak = storm.peak_from(outage_s)
    ceiling = lowest_ceiling(outage_s)
    bound = peak_bound(GATEWAYS, ceiling)
    all_in = storm.all_connected_after(outage_s)
    failed = sum(n for s, n in storm.attempts.items() if s < outage_s)
    print(
        f"\n{GATEWAYS:,} gateways, broker unreachable {outage_s:.0f} s: {failed:,} failed attempts "
        f"({storm.attempts[0]:,} in the first second); after its return: peak {peak} "
        f"connects/s at +{second - outage_s:.0f} s (bound {bound:.0f}, every wait >= "
        f"{ceiling / 2:g} s), all connected after {all_in:.1f} s"
    )
    assert peak <= bound
    assert all_in <= DEFAULTS.reconnect_max_s, "no wait is longer than reconnect_max"


def test_the_storm_is_the_same_for_the_same_seed() -> None:
    """Seeded per gateway: the figures in the docs are reproducible."""
    first = simulate(unreachable_until(OUTAGE_S))
    assert first == simulate(unreachable_until(OUTAGE_S))
    assert first != simulate(unreachable_until(OUTAGE_S), seed=SEED + 1)


def nominal_waits(count: int) -> float:
    """The longest time the first `count` round waits and their dropped connections take."""
    ceilings = (DEFAULTS.reconnect_min_s * 2**k for k in range(count))
    return sum(min(c, DEFAULTS.reconnect_max_s) + DROPPED_AFTER_S for c in ceilings)


def dropped(ending: Ending, from_s: float, bound: float) -> Storm:
    """The broker drops every connection at once, each ending as `ending`, for `DROPPING_S`;
    after `from_s` no second may hold more attempts than `bound`."""
    storm = simulate(dropping_until(DROPPING_S, ending))
    second, peak = storm.peak_from(from_s)
    after_fix, peak_after_fix = storm.peak_from(DROPPING_S)
    first = [storm.attempts[s] for s in range(math.ceil(from_s))]
    print(
        f"\n{GATEWAYS:,} gateways, broker drops every connection for {DROPPING_S:.0f} s "
        f"({ending.name}): {first[:3]} attempts in the first seconds, peak {max(first)} in "
        f"the first {len(first)} s; then peak {peak} at {second} s (bound {bound:.0f}); "
        f"{storm.takeovers:,} suspected takeovers; "
        f"after the fix: peak {peak_after_fix} at +{after_fix - DROPPING_S:.0f} s, "
        f"all connected after {storm.all_connected_after(DROPPING_S):.1f} s"
    )
    assert peak <= bound
    return storm


def test_a_broker_that_closes_idle_connections_gets_no_lock_step() -> None:
    """Closed at once with nothing in flight: after the first retries the fleet spreads out.

    The first `SUSPECT_AFTER` closes wait the round backoff from `reconnect_min`;
    the last of them is a suspected takeover, waited out for at least
    `TAKEOVER_FIRST_S`, and so on. So from then on a gateway's attempts come
    in runs of `SUSPECT_AFTER`, each run after a wait of at least
    `TAKEOVER_FIRST_S`: a second's mean is at most about
    SUSPECT_AFTER x N / TAKEOVER_FIRST_S.
    """
    storm = dropped(
        Ending.CLOSED_IDLE,
        nominal_waits(SUSPECT_AFTER),
        peak_bound(SUSPECT_AFTER * GATEWAYS, 2 * TAKEOVER_FIRST_S),
    )
    assert storm.takeovers >= GATEWAYS, "every gateway suspects a clone"
    assert storm.all_connected_after(DROPPING_S) <= TAKEOVER_MAX_S


def test_a_broker_that_refuses_every_connection_gets_no_lock_step() -> None:
    """Closed at once as a refusal: the waits stay jittered under the refusal cap.

    Once the round backoff's nominal delay reaches twice `REFUSED_RETRY_MAX_S`,
    every wait is drawn from [cap/2, cap]: a second's mean is at most N/(cap/2).
    """
    waits_to_cap = math.ceil(math.log2(2 * REFUSED_RETRY_MAX_S / DEFAULTS.reconnect_min_s))
    storm = dropped(
        Ending.REFUSED,
        nominal_waits(waits_to_cap),
        peak_bound(GATEWAYS, REFUSED_RETRY_MAX_S),
    )
    assert storm.takeovers == 0
    assert storm.all_connected_after(DROPPING_S) <= REFUSED_RETRY_MAX_S
    last = [
        storm.attempts[s] for s in range(int(DROPPING_S - REFUSED_RETRY_MAX_S), int(DROPPING_S))
    ]
    mean = sum(last) / len(last)
    # Waits of exactly the cap would keep the waves of the first retries for good: each
    # period alike, busy seconds and empty ones. Jittered, they flatten to a Poisson-ish count.
    assert max(last) <= mean + 5 * math.sqrt(mean), "the fleet retries in waves that never flatten"
