"""Samples taken on an unsynchronised clock go on with q=1 (uncertain), never as good.

uplink-v1 (Items on `state`): readings sampled while the clock is unsynced
must not carry a made-up time as if it were good; hold them, or send them
with q=1 and say so. The agent sends them, and says so with `clock:
"unsynced"` in every `state` meanwhile: holding could last for ever on a
gateway whose NTP server is out of reach, and a hazard value with a doubtful
time is worth more to an operator than none. Limits are still judged on
them, so an alarm is never missed for a clock.

Only good samples change: a bad one (q>=2) keeps the quality that says why
it is bad. The guard sits between the driver and the rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import structlog

from edge_agent.clock import ClockWatch
from edge_agent.model import Quality, Sample

log = structlog.get_logger(component="clock")

CHECK_EVERY_S: Final = 5.0
"""How often synchronisation and steps are checked (one adjtimex call each)."""


def uncertain_times(samples: list[Sample]) -> list[Sample]:
    """`samples` with every good one made uncertain (q=1), its value kept."""
    return [
        s._replace(quality=Quality.UNCERTAIN) if s.quality is Quality.GOOD else s for s in samples
    ]


class ClockGuard:
    """Knows whether the clock is synchronised; logs steps and changes; marks samples."""

    def __init__(self, watch: ClockWatch, on_change: Callable[[], None]) -> None:
        self._watch = watch
        self._on_change = on_change
        self.synced = watch.check().synced
        if not self.synced:
            log.warning("clock_unsynchronised", readings="sent with q=1 until it is")

    @property
    def state(self) -> str:
        """The `clock` field of `state`."""
        return "synced" if self.synced else "unsynced"

    def guard(self, samples: list[Sample]) -> list[Sample]:
        return samples if self.synced else uncertain_times(samples)

    def check(self) -> None:
        status = self._watch.check()
        if status.stepped_by_s is not None:
            log.warning("clock_stepped", step_s=round(status.stepped_by_s, 3))
        if status.synced != self.synced:
            self.synced = status.synced
            if status.synced:
                log.info("clock_synchronised")
            else:
                log.warning("clock_unsynchronised", readings="sent with q=1 until it is")
            self._on_change()

    async def run(self, every_s: float = CHECK_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.check()
