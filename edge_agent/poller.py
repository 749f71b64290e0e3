"""One device's poller: reads on its own deadlines and keeps the device's figures.

A poller wakes on drift-free monotonic deadlines (a late read skips the
deadlines it missed) and hands every poll's samples to the runtime. A slow
or dead device delays only its own poller.

Failures are logged by state change (`logs.Repeats`), never once per poll:
a driver must not raise, but if it does the poller logs `poll_failed` once
(with the traceback), a summary every 5 minutes, and `poll_recovered`; a
poll that overruns its deadlines logs `poll_deadline_failed` likewise.

The figures (polls, errors, reconnects, link and how long, latency) are what
`/metrics` and `edge-agent status` show; `stuck` is what the watchdog asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from drivers.base import Driver
from edge_agent.logs import Repeats
from edge_agent.model import LinkState, Sample
from edge_agent.service.snapshot import DeviceSnapshot, PollLatency

log = structlog.get_logger(component="poller")

OnPoll = Callable[["Poller", list[Sample]], None]
"""Called after every read that returned, with its samples."""


class Poller:
    def __init__(self, driver: Driver, interval_s: float, on_poll: OnPoll) -> None:
        self.driver = driver
        self._interval = interval_s
        self._on_poll = on_poll
        self._task: asyncio.Task[None] | None = None
        self._failures = Repeats(log, "poll", device=driver.name)
        self._overruns = Repeats(log, "poll_deadline", device=driver.name)
        self._busy_since: float | None = None
        self._latency = PollLatency()
        self._polls = self._errors = self._reconnects = 0
        self._link = LinkState.DOWN
        self._link_since = time.monotonic()
        self._was_up = False

    @property
    def name(self) -> str:
        return self.driver.name

    @property
    def link(self) -> LinkState:
        """The link as of the last poll (the driver's may have moved on since)."""
        return self._link

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"poll-{self.name}")

    async def stop(self) -> None:
        """Stop polling and close the driver's connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.driver.close()

    def stuck(self, now: float, after_s: float) -> bool:
        """A read has been in progress for `after_s`: drivers bound their I/O, so it hangs."""
        return self._busy_since is not None and now - self._busy_since > after_s

    def snapshot(self, now: float) -> DeviceSnapshot:
        return DeviceSnapshot(
            self.name,
            "up" if self._link is LinkState.UP else "down",
            now - self._link_since,
            self._polls,
            self._errors,
            self._reconnects,
            self._latency.snapshot(),
        )

    async def _run(self) -> None:
        deadline = time.monotonic()
        while True:
            await self._poll()
            deadline += self._interval
            now = time.monotonic()
            if deadline < now:
                missed = int((now - deadline) // self._interval) + 1
                self._overruns.failed("a poll took longer than the poll interval", missed=missed)
                deadline += missed * self._interval
            else:
                self._overruns.recovered()
            await asyncio.sleep(deadline - now)

    async def _poll(self) -> None:
        started = self._busy_since = time.monotonic()
        try:
            samples = await self.driver.read()
        except Exception as exc:
            # A driver must not raise, but polling must never stop for good.
            self._failures.failed(exc)
            samples = None
        else:
            self._failures.recovered()
        finally:
            self._busy_since = None
            self._latency.observe(time.monotonic() - started)
            self._polls += 1
        if samples is None or (samples and all(s.quality.is_bad for s in samples)):
            self._errors += 1
            if samples is None:
                return
        self._on_poll(self, samples)

    def note_link(self) -> bool:
        """Take the driver's link state; True when it changed since the last poll."""
        link = self.driver.link
        if link is self._link:
            return False
        self._link, self._link_since = link, time.monotonic()
        if link is LinkState.UP:
            self._reconnects += self._was_up
            self._was_up = True
        log.info("device_link_changed", device=self.name, link=str(link))
        return True
