"""The one place that wires drivers, rules, store and uplink together, and runs them.

Tasks: one poller per device (its own deadlines, so a slow device delays only
itself), a committer that makes buffered readings durable every
`commit_interval`, and the uplink. All run on one event loop; the store is
used from this loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import structlog

from drivers import build_driver
from drivers.base import Driver
from edge_agent import __version__
from edge_agent.config.schema import AgentConfig
from edge_agent.model import AlarmState, LinkState, Sample
from edge_agent.rules import TagRules
from edge_agent.store import BatchLimits, Store, StoreSettings
from edge_agent.uplink import Identity, Uplink

log = structlog.get_logger(component="runtime")

MAINTENANCE_INTERVAL_S = 5.0
"""How often retention and the size cap are enforced."""


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        batch = config.uplink.batch
        store = config.store
        self._store = Store.open(
            StoreSettings(Path(store.path), store.max_size, store.retention, store.synchronous),
            BatchLimits(batch.max_items, batch.max_bytes),
        )
        self._rules = {
            tag.tag: TagRules(tag.tag, tag.hazard, tag.limits)
            for device in config.devices
            for tag in device.tags
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
        pollers = [
            asyncio.create_task(self._poll(driver, device.poll), name=f"poll-{driver.name}")
            for driver, device in zip(self._drivers, self._config.devices, strict=True)
        ]
        committer = asyncio.create_task(self._commit_periodically(), name="committer")
        uplink = asyncio.create_task(self.uplink.run(), name="uplink")
        try:
            await stop.wait()
        finally:
            log.info("agent_stopping")
            for task in (*pollers, committer):
                task.cancel()
            await asyncio.gather(*pollers, committer, return_exceptions=True)
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
        urgent = False
        for sample in samples:
            reading, events = self._rules[sample.tag].judge(sample)
            self._store.add_reading(reading)
            for event in events:
                self._store.add_alarm(event)
                urgent = True
                log_event = log.warning if event.state is AlarmState.RAISED else log.info
                log_event(
                    "alarm_" + str(event.state),
                    tag=event.tag,
                    kind=str(event.kind),
                    value=event.value,
                    limit=event.limit,
                    id=event.id,
                )
        if urgent:
            self._store.flush()  # alarms never wait for the commit interval
            self.uplink.wake()

    def _note_link(self, driver: Driver) -> None:
        if driver.link is not self._links[driver.name]:
            self._links[driver.name] = driver.link
            log.info("device_link_changed", device=driver.name, link=str(driver.link))
            self.uplink.publish_state_soon()

    async def _commit_periodically(self) -> None:
        """Commit buffered readings every commit_interval; keep the store in bounds every 5 s."""
        interval = self._config.store.commit_interval
        next_maintenance = 0.0
        while True:
            await asyncio.sleep(interval)
            self._store.flush()
            if time.monotonic() >= next_maintenance:
                self._store.maintain(time.time_ns() // 1_000_000)
                next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
