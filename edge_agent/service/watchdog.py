"""The systemd watchdog, pinged from the event loop only while the pipeline makes progress.

API (the runtime wires it):

    committed = Heartbeat(stall_after_s=10)
    committed.beat()           # after every commit
    interval = watchdog_interval()          # from notify.py; None: no watchdog
    if interval:
        Watchdog(notifier, interval, stalled).run()   # stalled() -> why not, or None

Why the pings come from the event loop itself, and only while the data
flows: a ping from a thread would keep a hung loop alive forever. A loop
blocked in a callback (a stuck syscall, a deadlock) runs no task, so no ping;
a loop that runs but whose pipeline stalled silently (a poller stuck awaiting
a future that never resolves, the committer or the uplink hung) makes
`stalled()` say why, so no ping. Either way systemd kills and restarts the
agent after WatchdogSec=. What fails honestly (a device down, a broker away,
a full disk) is not a stall: restarting would not mend it, and the agent
says so in /healthz and `state` instead.

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
    """Sends WATCHDOG=1 every `interval_s / 2` while `stalled()` says nothing."""

    def __init__(
        self, notifier: Notifier, interval_s: float, stalled: Callable[[], str | None]
    ) -> None:
        self._notifier = notifier
        self._period = interval_s / 2
        self._stalled = stalled

    async def run(self) -> None:
        """Ping until cancelled; logs once when pings are withheld and once when they resume."""
        withholding = False
        while True:
            await asyncio.sleep(self._period)
            reason = self._stalled()
            if reason is None:
                if withholding:
                    log.warning("watchdog_pings_resumed")
                    withholding = False
                self._notifier.watchdog()
            elif not withholding:
                log.error("watchdog_pings_withheld", reason=reason)
                withholding = True
