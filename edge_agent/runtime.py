"""The one place that wires drivers, rules, store and uplink together, and runs them.

Tasks: one poller per device (its own deadlines, so a slow device delays only
itself), a committer that makes buffered readings durable every
`commit_interval`, a statistician that closes the statistics windows on the
wall clock, and the uplink. All run on one event loop; the store is used from
this loop only.

Alarms active when the agent last stopped are taken back from the store
before the first poll: they are not raised again, and the first good value
that recovers clears them with their old `id`. One whose rule is no longer
configured is cleared at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import structlog

from drivers import build_driver
from drivers.base import Driver
from edge_agent import __version__
from edge_agent.config.schema import AgentConfig
from edge_agent.model import AlarmEvent, AlarmState, LinkState, Sample
from edge_agent.rules import CommJudge, TagRules
from edge_agent.store import BatchLimits, Store, StoreSettings
from edge_agent.uplink import Identity, Uplink

log = structlog.get_logger(component="runtime")

MAINTENANCE_INTERVAL_S = 5.0
"""How often retention and the size cap are enforced."""

STATS_GRACE_S = 2.0
"""A statistics window is closed this long after its end, for samples still on their way."""


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        batch = config.uplink.batch
        store = config.store
        self._store = Store.open(
            StoreSettings(Path(store.path), store.max_size, store.retention, store.synchronous),
            BatchLimits(batch.max_items, batch.max_bytes),
        )
        stats_window = int(config.stats.window) if config.stats.enabled else None
        self._rules = {
            tag.tag: TagRules(
                tag,
                every_s=config.report_every(tag),
                poll_s=device.interval_of(tag),
                stats_window_s=stats_window,
            )
            for device in config.devices
            for tag in device.tags
        }
        self._comm = {
            device.name: CommJudge(
                [self._rules[tag.tag].alarms for tag in device.tags], device.comm_alarm_after
            )
            for device in config.devices
        }
        self._drivers: list[Driver] = [build_driver(device) for device in config.devices]
        self._links = {driver.name: LinkState.DOWN for driver in self._drivers}
        identity = Identity(
            config.uplink.mqtt.topic_prefix, config.gateway.enterprise, config.gateway.code
        )
        self.uplink = Uplink(config.uplink, identity, self._store, self.device_links, __version__)

    def device_links(self) -> dict[str, str]:
        return {name: str(state) for name, state in self._links.items()}

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, judge, store and forward until `stop` is set; then shut down in order."""
        log.info("agent_started", devices=len(self._drivers), tags=len(self._rules))
        self._restore_alarms()
        pollers = [
            asyncio.create_task(self._poll(driver, device.poll), name=f"poll-{driver.name}")
            for driver, device in zip(self._drivers, self._config.devices, strict=True)
        ]
        helpers = [asyncio.create_task(self._commit_periodically(), name="committer")]
        if self._config.stats.enabled:
            helpers.append(asyncio.create_task(self._close_stats_windows(), name="statistician"))
        uplink = asyncio.create_task(self.uplink.run(), name="uplink")
        try:
            await stop.wait()
        finally:
            log.info("agent_stopping")
            for task in (*pollers, *helpers):
                task.cancel()
            await asyncio.gather(*pollers, *helpers, return_exceptions=True)
            self._store.flush()
            await self.uplink.stop()
            uplink.cancel()  # only if stop() timed out: nothing is left to say
            await asyncio.gather(uplink, return_exceptions=True)
            for driver in self._drivers:
                with contextlib.suppress(Exception):
                    await driver.close()
            self._store.close()
            log.info("agent_stopped")

    async def _poll(self, driver: Driver, interval: float) -> None:
        """Read on drift-free monotonic deadlines; a late read skips the deadlines it missed."""
        deadline = time.monotonic()
        while True:
            try:
                samples = await driver.read()
                self._handle(samples)
                self._note_link(driver)
                self._alarm(self._comm[driver.name].judge(driver.link, _now_ms()))
            except Exception:
                # A driver must not raise, but polling must never stop for good.
                log.exception("poll_failed", device=driver.name)
            deadline += interval
            now = time.monotonic()
            if deadline < now:
                missed = int((now - deadline) // interval) + 1
                log.warning("poll_overrun", device=driver.name, missed=missed)
                deadline += missed * interval
            await asyncio.sleep(deadline - now)

    def _handle(self, samples: list[Sample]) -> None:
        events: list[AlarmEvent] = []
        for sample in samples:
            reading, judged = self._rules[sample.tag].judge(sample)
            if reading is not None:
                self._store.add_reading(reading)
            events += judged
        self._alarm(events)

    def _alarm(self, events: list[AlarmEvent]) -> None:
        """Store alarm events together, durable at once, and wake the uplink for them."""
        if not events:
            return
        for event in events:
            self._store.add_alarm(event)
            log_event = log.warning if event.state is AlarmState.RAISED else log.info
            log_event(
                "alarm_" + str(event.state),
                tag=event.tag,
                kind=str(event.kind),
                value=event.value,
                limit=event.limit,
                id=event.id,
            )
        self._store.flush()  # alarms never wait for the commit interval
        self.uplink.wake()

    def _restore_alarms(self) -> None:
        """Take back the alarms active at the last stop; clear those no longer configured."""
        stale: list[AlarmEvent] = []
        restored = 0
        for raised in self._store.active_alarms():
            rules = self._rules.get(raised.tag)
            if rules is not None and rules.restore(raised):
                restored += 1
            else:
                stale.append(
                    dataclasses.replace(
                        raised, ts_ms=_now_ms(), state=AlarmState.CLEARED, value=None
                    )
                )
        if restored or stale:
            log.info("alarms_restored", active=restored, cleared_as_unconfigured=len(stale))
        self._alarm(stale)

    def _note_link(self, driver: Driver) -> None:
        if driver.link is not self._links[driver.name]:
            self._links[driver.name] = driver.link
            log.info("device_link_changed", device=driver.name, link=str(driver.link))
            self.uplink.publish_state_soon()

    async def _close_stats_windows(self) -> None:
        """At each window's end (plus a grace), store the statistics of every tag."""
        window = self._config.stats.window
        while True:
            now = time.time()
            await asyncio.sleep(window - now % window + STATS_GRACE_S)
            before_ms = _now_ms() - int(STATS_GRACE_S * 1000)
            for rules in self._rules.values():
                for item in rules.close_stats(before_ms):
                    self._store.add_stat(item)
            self._store.flush()

    async def _commit_periodically(self) -> None:
        """Commit buffered readings every commit_interval; keep the store in bounds every 5 s."""
        interval = self._config.store.commit_interval
        next_maintenance = 0.0
        while True:
            await asyncio.sleep(interval)
            self._store.flush()
            if time.monotonic() >= next_maintenance:
                self._store.maintain(_now_ms())
                next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
