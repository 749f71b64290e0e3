"""The systemd watchdog, pinged from the event loop only while the pipeline makes progress.

API (the runtime wires it):

    heartbeat = Heartbeat(stall_after_s=60)
    heartbeat.beat()           # after every commit of samples, and whenever nothing is due
    interval = watchdog_interval()          # from notify.py; None: no watchdog
    if interval:
        task = asyncio.create_task(Watchdog(notifier, interval, heartbeat.alive).run())

Why the pings come from the event loop itself, and only on progress: a ping
from a thread would keep a hung loop alive forever. A loop blocked in a
callback (a stuck syscall, a deadlock) runs no task, so no ping; a loop that
runs but whose pipeline stalled silently (a poller stuck awaiting a future
that never resolves, the committer dead) makes `progress()` False, so no ping.
Either way systemd kills and restarts the agent after WatchdogSec=. A busy
loop is not restarted as long as it still commits.

Pings go out every half interval, as sd_watchdog_enabled(3) advises, so one
late tick does not cost a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from edge_agent.service.notify import Notifier

log = structlog.get_logger(component="watchdog")


class Heartbeat:
    """Remembers when the pipeline last made progress; `alive()` is the watchdog's test."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_after_s = stall_after_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def alive(self) -> bool:
        return self._clock() - self._last <= self._stall_after_s


class Watchdog:
    """Sends WATCHDOG=1 every `interval_s / 2` while `progress()` is True."""

    def __init__(self, notifier: Notifier, interval_s: float, progress: Callable[[], bool]) -> None:
        self._notifier = notifier
        self._period = interval_s / 2
        self._progress = progress

    async def run(self) -> None:
        """Ping until cancelled; logs once when pings are withheld and once when they resume."""
        withholding = False
        while True:
            await asyncio.sleep(self._period)
            if self._progress():
                if withholding:
                    log.warning("watchdog_pings_resumed")
                    withholding = False
                self._notifier.watchdog()
            elif not withholding:
                log.error("watchdog_pings_withheld", reason="the pipeline made no progress")
                withholding = True
