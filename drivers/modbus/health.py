"""A unit's standing on its link: answering, failing, or demoted.

A unit that gives no answer (a timeout, a garbled frame, or a gateway's
exception 10/11 saying it cannot reach the unit) costs its siblings on the
same link a whole timeout per request. After DEMOTE_AFTER such polls in a row
it is demoted: it is asked once per demotion period (DEMOTION_S, or the
device's reconnect_max if shorter, doubling with jitter up to reconnect_max
while it stays silent), and between those probes its tags are reported q=2
at every due time without touching the link. Its first answer promotes it
again. A unit alone on its link is never demoted: it spares no sibling, and
its link's reconnect backoff (up to reconnect_max) already paces it.

The device's up/down state is debounced: one failed poll (a glitch, a dropped
connection that the retry did not mend) leaves it as it was; DOWN_AFTER
failed polls in a row make it down, and one complete answer makes it up.
"""

from __future__ import annotations

from edge_agent.backoff import Backoff

DEMOTE_AFTER = 3
"""Polls in a row without an answer before a unit is only probed."""

DEMOTION_S = 30.0
"""The first demotion period, unless the device's reconnect_max is shorter."""

DOWN_AFTER = 2
"""Failed polls in a row before the device reads as down."""


class UnitHealth:
    """Counts a unit's silent polls, and says when it may be asked again."""

    def __init__(self, backoff: Backoff) -> None:
        """`backoff`: the demotion periods (see `demotion`)."""
        self._silent_polls = 0
        self._failed_polls = 0
        self._probe_at: float | None = None
        self._backoff = backoff

    @classmethod
    def demotion(cls, reconnect_max: float) -> UnitHealth:
        """Periods from DEMOTION_S (or reconnect_max if shorter) up to reconnect_max."""
        return cls(Backoff(min(DEMOTION_S, reconnect_max), reconnect_max))

    @property
    def demoted(self) -> bool:
        return self._probe_at is not None

    def may_ask(self, now: float) -> bool:
        """False while demoted and the next probe is not due."""
        return self._probe_at is None or now >= self._probe_at

    def probe_in(self, now: float) -> float:
        return 0.0 if self._probe_at is None else max(self._probe_at - now, 0.0)

    def silent(self, now: float, shared: bool) -> bool:
        """The unit gave no answer in this poll; True when it is demoted by this one.
        `shared`: it has siblings on its link (a lone unit is never demoted)."""
        self._silent_polls += 1
        if not shared:
            return False
        if self._probe_at is not None or self._silent_polls >= DEMOTE_AFTER:
            newly = self._probe_at is None
            self._probe_at = now + self._backoff.next()
            return newly
        return False

    def answered(self) -> bool:
        """The unit answered; True when that ends a demotion."""
        was_demoted = self._probe_at is not None
        self._silent_polls = 0
        self._probe_at = None
        self._backoff.reset()
        return was_demoted

    def poll_ended(self, answered: bool) -> bool | None:
        """The debounced state after a poll (`answered`: the unit answered every request it
        was sent, if only with an exception): True up, False down, None unchanged."""
        if answered:
            self._failed_polls = 0
            return True
        self._failed_polls += 1
        return False if self._failed_polls >= DOWN_AFTER else None
