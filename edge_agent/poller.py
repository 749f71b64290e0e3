"""One device's poller: reads on its own deadlines and keeps the device's figures.

A poller wakes on drift-free monotonic deadlines and hands every poll's
samples to the runtime. A slow or dead device delays only its own poller.
A poll that runs past the next deadline is followed at once, for that
deadline: a slow answer or a busy moment of the event loop costs no sample.
Only a deadline whose whole interval went by before its poll could start is
skipped. While `may_catch_up` says no (the runtime: the uplink is behind), a
late poll is not followed at once: the loop waits for its grid, so catching
up never adds to what cannot leave. The skipped stretch is told to `on_missed`
(the runtime declares it in the loss ledger: nothing was sampled there).

`run()` is the poll loop; the runtime runs it under the task supervisor
(supervisor.py), which restarts it if it fails. Between the failure and the
restart the poller is `halted`: its link reads as down, honestly.

Failures are logged by state change (`logs.Repeats`), never once per poll:
`poll_failed` once, a `poll_still_failing` summary every 5 minutes, and
`poll_recovered`. A failure is a poll after which the driver's link is down
(a dead device: drivers do not raise for what the device does, they say so
in their link, and why in `link_reason`), or a driver that raised, which it
must not (the line carries the traceback). Every poll is judged, one the
driver answered from its backoff or for a demoted unit too, so the summaries
go on for as long as the device is dead.
Overload is not a failure that starts and ends: deadlines a poll ran past are
logged as `poll_deadlines_missed` at once, then summed once a minute while
they go on (`logs.Tally`), however often the device flips between late and on
time.

The figures (polls, errors, reconnects, link and how long, latency) are what
`/metrics` and `edge-agent status` show; `alive` is what the watchdog asks.
With `--log-level debug` every poll that returned is a line,
`device_polled requests=N tags=K bad=B ms=...`; with debug off it costs one
level check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import structlog

from edge_agent.drivers.base import CountsClockSkew, CountsRequests, Driver, ExplainsLink
from edge_agent.logs import SUMMARY_EVERY_S, Repeats, Tally
from edge_agent.model import LinkState, Sample
from edge_agent.schedule import Deadline
from edge_agent.service.snapshot import DeviceSnapshot, PollLatency

log = structlog.get_logger(component="poller")

STALL_AFTER_S: Final = 60.0
"""A read in progress this long past its poll interval hangs: drivers bound their I/O."""
CLOSE_WITHIN_S: Final = 2.0

OnPoll = Callable[["Poller", list[Sample]], None]
"""Called after every read that returned, with its samples."""
OnMissed = Callable[["Poller", int, int, int], None]
"""Called with (poller, deadlines skipped, wall ms of the first and of the last)."""


class Poller:
    def __init__(
        self,
        driver: Driver,
        interval_s: float,
        on_poll: OnPoll,
        on_missed: OnMissed,
        *,
        summary_every_s: float = SUMMARY_EVERY_S,
        may_catch_up: Callable[[], bool] = lambda: True,
    ) -> None:
        """`summary_every_s`: how often a failure that goes on is summed up;
        `may_catch_up`: whether a poll that ran past the next deadline may be followed at
        once (see the module docstring)."""
        self.driver = driver
        self._may_catch_up = may_catch_up
        self.interval = interval_s
        self._on_poll = on_poll
        self._on_missed = on_missed
        # Bound once: the module's lazy logger binds again on every call (about 1 µs).
        self._log = log.bind(device=driver.name)
        self._failures = Repeats(self._log, "poll", summary_every_s)
        self._overruns = Tally(log, "poll_deadlines_missed", device=driver.name)
        self._busy_since: float | None = None
        self._idle_since = time.monotonic()
        self._latency = PollLatency()
        self._polls = self._errors = self._reconnects = 0
        self._requests_told = 0
        self._link = LinkState.DOWN
        self._link_since = time.monotonic()
        self._was_up = False
        self.halted_at_ms: int | None = None
        """Wall time the poll loop failed, until it polls again; None while it runs."""

    @property
    def name(self) -> str:
        return self.driver.name

    @property
    def link(self) -> LinkState:
        """The link as of the last poll (the driver's may have moved on since)."""
        return self._link

    def alive(self, now: float) -> bool:
        """The poll loop keeps its interval (a read bounded by STALL_AFTER_S), or it is
        halted after a failure and says its device is down: either way, no hang."""
        if self.halted_at_ms is not None:
            return True
        if self._busy_since is not None:
            return now - self._busy_since <= self.interval + STALL_AFTER_S
        return now - self._idle_since <= self.interval + STALL_AFTER_S

    def snapshot(self, now: float) -> DeviceSnapshot:
        up = self._link is LinkState.UP
        driver = self.driver
        reason = driver.link_reason if not up and isinstance(driver, ExplainsLink) else None
        replaced = driver.timestamps_replaced if isinstance(driver, CountsClockSkew) else 0
        return DeviceSnapshot(
            self.name,
            "up" if up else "down",
            now - self._link_since,
            self._polls,
            self._errors,
            self._reconnects,
            self._latency.snapshot(),
            reason,
            replaced,
        )

    async def run(self) -> None:
        """Poll until cancelled."""
        self._busy_since, self._idle_since = None, time.monotonic()
        schedule = Deadline(self.interval, next=time.monotonic())
        while True:
            now = time.monotonic()
            missed = schedule.passed(now)
            if missed:
                self._overruns.add(missed)
                assert schedule.next is not None  # set by passed()
                self._missed(schedule.next - (missed + 1) * self.interval, missed, now)
            else:
                self._overruns.tick(now)
            await self._poll()
            self.halted_at_ms = None
            now = time.monotonic()
            if schedule.due(now) and not self._may_catch_up():
                await asyncio.sleep(schedule.grid_wait_s(now))
            else:
                await asyncio.sleep(schedule.wait_s(now))

    def _missed(self, first: float, missed: int, now: float) -> None:
        wall_now = time.time_ns() // 1_000_000
        first_ms = wall_now - round((now - first) * 1000)
        last_ms = first_ms + round((missed - 1) * self.interval * 1000)
        self._on_missed(self, missed, first_ms, last_ms)

    async def _poll(self) -> None:
        started = self._busy_since = time.monotonic()
        try:
            samples = await self.driver.read()
        except Exception as exc:
            # A driver must not raise, but polling must never stop for good.
            self._failures.failed(exc)
            samples = None
        else:
            self._judge_link()
        finally:
            self._busy_since = None
            self._idle_since = time.monotonic()
            self._latency.observe(self._idle_since - started)
            self._polls += 1
        if samples is None or (samples and all(s.quality.is_bad for s in samples)):
            self._errors += 1
            if samples is None:
                return
        if self._log.is_enabled_for(logging.DEBUG):
            self._tell_poll(samples, self._idle_since - started)
        self._on_poll(self, samples)

    def _tell_poll(self, samples: list[Sample], took_s: float) -> None:
        driver = self.driver
        requests = None
        if isinstance(driver, CountsRequests):
            requests, self._requests_told = driver.requests - self._requests_told, driver.requests
        bad = sum(1 for sample in samples if sample.quality.is_bad)
        self._log.debug(
            "device_polled",
            requests=requests,
            tags=len(samples),
            bad=bad,
            ms=round(took_s * 1000, 1),
            link=str(driver.link),
        )

    def _judge_link(self) -> None:
        driver = self.driver
        if driver.link is LinkState.UP:
            self._failures.recovered()
            return
        reason = driver.link_reason if isinstance(driver, ExplainsLink) else None
        self._failures.failed(reason or "the device does not answer")

    def halt(self) -> None:
        """The poll loop failed: the device reads as down until it polls again."""
        if self.halted_at_ms is None:
            self.halted_at_ms = time.time_ns() // 1_000_000
        self._busy_since = None
        self._set_link(LinkState.DOWN)

    def note_link(self) -> bool:
        """Take the driver's link state; True when it changed since the last poll."""
        return self._set_link(self.driver.link)

    def _set_link(self, link: LinkState) -> bool:
        if link is self._link:
            return False
        self._link, self._link_since = link, time.monotonic()
        if link is LinkState.UP:
            self._reconnects += self._was_up
            self._was_up = True
        log.info("device_link_changed", device=self.name, link=str(link))
        return True

    async def close(self) -> None:
        """Drop the driver's connection, within CLOSE_WITHIN_S; a close never raises."""
        try:
            await asyncio.wait_for(self.driver.close(), CLOSE_WITHIN_S)
        except Exception as exc:
            log.warning("device_close_failed", device=self.name, error=repr(exc))
