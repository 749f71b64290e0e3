"""Which broker to try next, and how long to wait first: pure policy, no I/O, no clock.

The uplink reports each outcome (a failed connect, or a connection that ended
after so many seconds, taken over or not) and gets back the delay before its
next attempt; `broker` says which one to try.

Rules:
- The brokers are tried in the configured order. A failed connect moves on to
  the next broker at once; only when a whole round has failed does the uplink
  wait, with the round backoff. Every round starts again at the first broker,
  so a gateway returns to its preferred broker after an outage. There is no
  fail-back while connected: a connection to a later broker is kept until it ends.
- After a connection ends, the next round also waits with the round backoff:
  a broker that accepts and then drops a gateway at once is not hammered.
- The round backoff is reset only by a connection that stayed up
  `stable_after_s`, not by a bare CONNACK, for the same reason.
- A connection ended by the broker because another client took its client id
  over (MQTT 5 DISCONNECT reason 0x8E) means a second gateway with the same
  gateway code: retrying at once would knock that one off in turn, and the two
  would flap forever. It waits with a separate takeover backoff instead
  (30 s at first, doubling to 10 min), which is reset only by a connection
  that stayed up longer than the clone would wait (twice its cap).
- Some brokers just close the old connection without saying why (Mosquitto
  2.0.11; every MQTT 3.1.1 broker). They also close without a word on what
  they refuse (an oversized packet, some ACL settings), so a close within one
  round trip of a PUBLISH blames that publish (`Ending.REFUSED`), not a clone.
  Only `SUSPECT_AFTER` connections in a row that the broker closed before
  they were stable, each with nothing in flight (`Ending.CLOSED_IDLE`), with
  no failed connect or other ending between them (a broker that restarts is
  unreachable for a moment), count as a suspected takeover and get the
  takeover backoff.
- A connection ended by a refusal (a DISCONNECT with a reason other than
  0x8E, or a close that blames a publish) waits the round backoff, but never
  longer than `REFUSED_RETRY_MAX_S`: the uplink sets the blamed message aside
  and goes on with the rest, so the next connection should be useful.

Every delay is jittered: drawn from [d/2, d] while d doubles from its first
value to its cap ("equal jitter"). Even the first retry is jittered, so a
fleet of gateways dropped by one broker restart does not return in step.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from edge_agent.backoff import Backoff

TAKEOVER_FIRST_S = 30.0
"""Shortest wait after a takeover: a clone gets this long before we take the id back."""

TAKEOVER_MAX_S = 600.0
"""Longest wait after repeated takeovers."""

TAKEOVER_STABLE_S = 2 * TAKEOVER_MAX_S
"""A connection up this long without a takeover means the clone is gone."""

STABLE_S = 60.0
"""A connection up this long resets the round backoff."""

SUSPECT_AFTER = 3
"""Short connections closed by the broker in a row, idle, that make a suspected takeover."""

REFUSED_RETRY_MAX_S = 30.0
"""Longest wait after a connection ended by a refusal."""


class Ending(enum.Enum):
    """How a connection ended, as far as the broker said (session.py tells)."""

    AGENT = "closed by the agent"
    LOST = "connection lost"
    TAKEN_OVER = "the broker said: session taken over (DISCONNECT 0x8E)"
    REFUSED = "the broker refused what was sent"
    CLOSED_IDLE = "closed by the broker without a reason, with nothing in flight"


Takeover = Literal["reported", "suspected"]
"""reported: the broker said so (DISCONNECT 0x8E); suspected: it kept closing us."""

TAKEOVER_EVIDENCE: dict[Takeover, str] = {
    "reported": "the broker said: session taken over (DISCONNECT 0x8E)",
    "suspected": (
        "the broker closed our connections again and again soon after accepting them, "
        "without a reason and with nothing in flight (Mosquitto 2.0.11 and MQTT 3.1.1 "
        "give no reason); if no clone exists, the broker's log says why"
    ),
}
"""Why a takeover is believed, in words for the log."""


class Retry(NamedTuple):
    """What to do after a connection ended."""

    delay: float
    takeover: Takeover | None


@dataclass
class ReconnectPolicy:
    """Broker rotation with a round backoff, and the takeover backoff.

    `reconnect_min` is the shortest delay after a failed round or a dropped
    connection, `reconnect_max` the longest.
    """

    brokers: int
    reconnect_min: float
    reconnect_max: float
    rng: random.Random = field(default_factory=random.Random)
    stable_after_s: float = STABLE_S
    broker: int = 0
    """Index of the broker to try next."""
    takeovers: int = 0
    """Connections ended by a takeover of our client id, since start."""
    failed_connects: int = 0
    """Connect attempts that failed, since start."""

    def __post_init__(self) -> None:
        if self.brokers < 1:
            raise ValueError("at least one broker is needed")
        self._closed_early = 0  # connections in a row the broker closed before they were stable
        self._rounds = Backoff(
            self.reconnect_min / 2, self.reconnect_max, self.rng, equal_jitter=True
        )
        self._takeover = Backoff(TAKEOVER_FIRST_S, TAKEOVER_MAX_S, self.rng, equal_jitter=True)

    def connect_failed(self) -> float:
        """The attempt on `broker` failed: move on; wait only after a whole round."""
        self.failed_connects += 1
        self._closed_early = 0
        self.broker += 1
        if self.broker < self.brokers:
            return 0.0
        self.broker = 0
        return self._rounds.next()

    def connection_ended(self, up_for_s: float, ending: Ending) -> Retry:
        """A connection that was up `up_for_s` seconds ended; the next round starts at broker 0."""
        self.broker = 0
        stable = up_for_s >= self.stable_after_s
        if stable:
            self._rounds.reset()
        if up_for_s >= TAKEOVER_STABLE_S:
            self._takeover.reset()
        idle_close = ending is Ending.CLOSED_IDLE and not stable
        self._closed_early = self._closed_early + 1 if idle_close else 0
        takeover: Takeover | None = None
        if ending is Ending.TAKEN_OVER:
            takeover = "reported"
        elif self._closed_early >= SUSPECT_AFTER:
            takeover = "suspected"
        if takeover is not None:
            self.takeovers += 1
            self._closed_early = 0
            return Retry(self._takeover.next(), takeover)
        delay = self._rounds.next()
        if ending is Ending.REFUSED:
            # Jittered under the cap too: min(delay, cap) makes every gateway at the cap
            # wait exactly the cap, so a fleet refused together would retry in step for good.
            cap = self.rng.uniform(REFUSED_RETRY_MAX_S / 2, REFUSED_RETRY_MAX_S)
            delay = min(delay, cap)
        return Retry(delay, None)
