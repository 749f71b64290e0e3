"""The one place that wires drivers, rules, store and uplink together, and runs them.

Tasks: one poller per device (poller.py: its own deadlines, so a slow device
delays only itself), a committer that makes buffered readings durable every
`commit_interval`, a statistician that closes the statistics windows on the
wall clock, the clock guard, the uplink, the reloader (SIGHUP), and the
service side: the HTTP status server, STATUS lines and watchdog pings for
systemd. All run on one event loop; the store is used from this loop only.

Start: the store is opened, alarms active when the agent last stopped are
taken back (not raised again; the first good value that recovers clears
them with their old `id`; one whose rule is no longer configured is
cleared), the status server starts, READY goes to systemd, then polling.

Samples pass the clock guard (q=1 while the clock is unsynchronised,
clockguard.py) before the rules.

The watchdog pings only while the pipeline makes progress: the committer
beats the heartbeat after each commit that did not fail, unless a poller's
read has hung for `STALL_AFTER_S` (drivers bound their I/O, so that is a
bug). A dead committer, a hung loop or a hung poller stop the pings, and
systemd restarts the agent.

Stop (SIGTERM/SIGINT): STOPPING to systemd, pollers stopped and their
connections closed, everything buffered committed, the offline `state`
published, the store closed clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import structlog

from drivers import build_driver
from edge_agent import __version__
from edge_agent.census import alarms_by_kind, store_snapshot, tags_by_quality, uplink_snapshot
from edge_agent.clock import ClockWatch
from edge_agent.clockguard import ClockGuard
from edge_agent.config import load_config
from edge_agent.config.schema import AgentConfig, Device
from edge_agent.errors import ConfigError, ConfigFileMissing
from edge_agent.logs import Repeats
from edge_agent.model import AlarmEvent, AlarmState, Quality, Sample
from edge_agent.poller import Poller
from edge_agent.reload import ReloadPlan, identity_of, plan_reload, rule_specs
from edge_agent.rules import CommJudge
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.notify import Notifier
from edge_agent.service.snapshot import Snapshot
from edge_agent.service.watchdog import Heartbeat, Watchdog
from edge_agent.store import BatchLimits, Store, StoreSettings
from edge_agent.uplink import Uplink
from edge_agent.uplink.meta import build_meta

log = structlog.get_logger(component="runtime")

MAINTENANCE_INTERVAL_S: Final = 5.0
"""How often retention and the size cap are enforced."""

STATS_GRACE_S: Final = 2.0
"""A statistics window is closed this long after its end, for samples still on their way."""

STALL_AFTER_S: Final = 60.0
"""No commit (or a read hung) this long: the pipeline stalled, the watchdog pings stop."""

STATUS_EVERY_S: Final = 5.0
"""How often the STATUS line for systemd is refreshed (sent only when it changed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Supervisor:
    """What systemd gave the agent: where to notify, and the watchdog interval (or None)."""

    notifier: Notifier = dataclasses.field(default_factory=lambda: Notifier(None))
    watchdog_s: float | None = None


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        config_path: Path | None = None,
        clock: ClockWatch | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._config = config
        self._path = config_path
        self._supervisor = supervisor or Supervisor()
        self._store = _open_store(config)
        self._clock = ClockGuard(clock or ClockWatch(), self._clock_changed)
        self._rules = {tag: spec.build() for tag, spec in rule_specs(config).items()}
        self._comm = {device.name: self._comm_judge(device) for device in config.devices}
        self._pollers = {device.name: self._poller(device) for device in config.devices}
        self._quality: dict[str, Quality] = {}
        self.uplink = self._uplink(config)
        self._heartbeat = Heartbeat(STALL_AFTER_S)
        self._commit_error: str | None = None
        self._started = time.monotonic()
        self._reload_requested = asyncio.Event()
        self._server: StatusServer | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # -- building --------------------------------------------------------------

    def _poller(self, device: Device) -> Poller:
        return Poller(build_driver(device), device.poll, self._on_poll)

    def _comm_judge(self, device: Device) -> CommJudge:
        books = [self._rules[tag.tag].alarms for tag in device.tags]
        return CommJudge(books, device.comm_alarm_after)

    def _uplink(self, config: AgentConfig) -> Uplink:
        identity = identity_of(config)
        meta = build_meta(identity, config, _now_ms())
        return Uplink(
            config.uplink,
            identity,
            self._store,
            self.device_links,
            __version__,
            meta=meta,
            clock=lambda: self._clock.state,
        )

    def _clock_changed(self) -> None:
        self.uplink.publish_state_soon()  # `state.clock` says it

    # -- what the agent tells about itself -------------------------------------

    def device_links(self) -> dict[str, str]:
        return {name: str(poller.link) for name, poller in self._pollers.items()}

    def snapshot(self) -> Snapshot:
        """Everything /metrics, /healthz, /status and STATUS show; quick, never awaits."""
        now = time.monotonic()
        return Snapshot(
            version=__version__,
            uptime_s=now - self._started,
            taken_ms=_now_ms(),
            clock_synced=self._clock.synced,
            devices=tuple(poller.snapshot(now) for poller in self._pollers.values()),
            store=store_snapshot(
                self._store, self._config.store, self.uplink.in_flight, self._commit_error
            ),
            uplink=uplink_snapshot(self.uplink, now),
            tags_by_quality=tags_by_quality(self._quality.values()),
            alarms_active=alarms_by_kind(self._rules.values()),
        )

    # -- running ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, judge, store and forward until `stop` is set; then shut down in order."""
        log.info("agent_started", devices=len(self._pollers), tags=len(self._rules))
        self._restore_alarms(lambda tag: True)
        await self._start_server()
        notifier = self._supervisor.notifier
        notifier.ready(self.snapshot().summary_line())  # config loaded, store open
        for poller in self._pollers.values():
            poller.start()
        self._start("committer", self._commit_periodically())
        if self._config.stats.enabled:
            self._start("statistician", self._close_stats_windows())
        self._start("clock", self._clock.run())
        self._start("uplink", self.uplink.run())
        self._start("reloader", self._reload_on_request())
        if notifier.enabled:
            self._start("status", self._report_status())
        if self._supervisor.watchdog_s is not None:
            watchdog = Watchdog(notifier, self._supervisor.watchdog_s, self._heartbeat.alive)
            self._start("watchdog", watchdog.run())
        try:
            await stop.wait()
        finally:
            await self._shutdown()

    def request_reload(self) -> None:
        """SIGHUP: reload the config file (at once, or after a reload under way)."""
        self._reload_requested.set()

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.create_task(work, name=name)

    async def _stop_task(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _shutdown(self) -> None:
        self._supervisor.notifier.stopping()
        log.info("agent_stopping")
        for name in [name for name in self._tasks if name != "uplink"]:
            await self._stop_task(name)
        await asyncio.gather(*(poller.stop() for poller in self._pollers.values()))
        self._store.flush()
        await self.uplink.stop()
        await self._stop_task("uplink")  # only if stop() timed out: nothing is left to say
        if self._server is not None:
            await self._server.close()
        self._store.close()
        log.info("agent_stopped")

    async def _start_server(self) -> None:
        metrics = self._config.metrics
        if not metrics.enabled:
            return
        host, port = metrics.address()
        limits = HealthLimits(metrics.health.devices_down, metrics.health.uplink_down)
        self._server = StatusServer(host, port, self.snapshot, limits)
        await self._server.start()  # a taken port is logged; polling goes on without it

    # -- the pipeline ----------------------------------------------------------

    def _on_poll(self, poller: Poller, samples: list[Sample]) -> None:
        self._handle(self._clock.guard(samples))
        if poller.note_link():
            self.uplink.publish_state_soon()
        self._alarm(self._comm[poller.name].judge(poller.driver.link, _now_ms()))

    def _handle(self, samples: list[Sample]) -> None:
        events: list[AlarmEvent] = []
        for sample in samples:
            reading, judged = self._rules[sample.tag].judge(sample)
            if reading is not None:
                # Report by exception reports every change of quality, so the last
                # reading reported carries the tag's current quality.
                self._quality[sample.tag] = reading.quality
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

    def _restore_alarms(self, in_scope: Callable[[str], bool]) -> None:
        """Take back the stored active alarms of the tags `in_scope` into their rules;
        clear those the rules can no longer raise (or whose tag is gone)."""
        stale: list[AlarmEvent] = []
        restored = 0
        for raised in self._store.active_alarms():
            if not in_scope(raised.tag):
                continue
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
        """Commit buffered readings every commit_interval; keep the store in bounds every 5 s.

        Each commit that did not fail beats the watchdog's heartbeat, unless a read hangs.
        A full disk is not a failure here: the store holds readings in memory and says so.
        """
        failures = Repeats(log, "commit")
        next_maintenance = 0.0
        while True:
            await asyncio.sleep(self._config.store.commit_interval)
            try:
                self._store.flush()
                if time.monotonic() >= next_maintenance:
                    self._store.maintain(_now_ms())
                    next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
            except Exception as exc:
                self._commit_error = f"{type(exc).__name__}: {exc}"
                failures.failed(exc)
                continue
            self._commit_error = None
            failures.recovered()
            now = time.monotonic()
            if not any(poller.stuck(now, STALL_AFTER_S) for poller in self._pollers.values()):
                self._heartbeat.beat()

    async def _report_status(self) -> None:
        """Refresh systemd's STATUS line when it changed."""
        last = ""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            line = self.snapshot().summary_line()
            if line != last:
                self._supervisor.notifier.status(line)
                last = line

    # -- reload ----------------------------------------------------------------

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Load and validate the config file again and apply it; on any error keep the old.

        True when the new config is in force. docs/operations.md (Reload) and
        reload.py say what is kept and what is rebuilt.
        """
        if self._path is None:
            log.error("reload_refused", problems=["the agent was not started from a file"])
            return False
        try:
            config = load_config(self._path)
        except ConfigError as exc:
            log.error("reload_refused", problems=exc.problems, running="the previous config")
            return False
        except ConfigFileMissing as exc:
            log.error("reload_refused", problems=[str(exc)], running="the previous config")
            return False
        plan = plan_reload(self._config, config)
        if plan.refused is not None:
            log.error("reload_refused", problems=[plan.refused], running="the previous config")
            return False
        await self._apply(config, plan)
        return True

    async def _apply(self, config: AgentConfig, plan: ReloadPlan) -> None:
        gone = [p for name, p in self._pollers.items() if name not in plan.kept_devices]
        await asyncio.gather(*(poller.stop() for poller in gone))
        self._config = config
        self._rules = {
            tag: self._rules[tag] if tag in plan.kept_tags else spec.build()
            for tag, spec in rule_specs(config).items()
        }
        self._quality = {tag: q for tag, q in self._quality.items() if tag in plan.kept_tags}
        self._comm = {
            device.name: self._comm[device.name]
            if _unchanged(device, plan)
            else self._comm_judge(device)
            for device in config.devices
        }
        self._restore_alarms(lambda tag: tag not in plan.kept_tags)
        self._pollers = {
            device.name: self._pollers[device.name]
            if device.name in plan.kept_devices
            else self._poller(device)
            for device in config.devices
        }
        for poller in self._pollers.values():
            if poller.name not in plan.kept_devices:
                poller.start()
        if plan.restart_stats:
            await self._stop_task("statistician")
            if config.stats.enabled:
                self._start("statistician", self._close_stats_windows())
        if plan.restart_uplink:
            await self._restart_uplink()
        else:
            self.uplink.publish_state_soon()  # the devices may have changed
        if plan.restart_metrics and self._server is not None:
            await self._server.close()
            self._server = None
        if plan.restart_metrics:
            await self._start_server()
        log.info(
            "config_reloaded",
            devices_kept=sorted(plan.kept_devices),
            devices_new=sorted(set(self._pollers) - plan.kept_devices),
            devices_closed=sorted(p.name for p in gone if p.name not in self._pollers),
            tags_new=len(self._rules) - len(plan.kept_tags),
            uplink_restarted=plan.restart_uplink,
        )

    async def _restart_uplink(self) -> None:
        """A clean stop (offline state), then a new connection with the new settings."""
        await self.uplink.stop()
        await self._stop_task("uplink")
        self.uplink = self._uplink(self._config)
        self._start("uplink", self.uplink.run())


def _unchanged(device: Device, plan: ReloadPlan) -> bool:
    """The device and the rules of all its tags are kept: its COMM judge can stay too."""
    return device.name in plan.kept_devices and all(
        tag.tag in plan.kept_tags for tag in device.tags
    )


def _open_store(config: AgentConfig) -> Store:
    store, batch = config.store, config.uplink.batch
    return Store.open(
        StoreSettings(Path(store.path), store.max_size, store.retention, store.synchronous),
        BatchLimits(batch.max_items, batch.max_bytes),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
