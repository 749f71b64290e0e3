"""The one place that wires drivers, rules, store and uplink together, and runs them.

Tasks, each run by the task supervisor (supervisor.py: a task that raises is
logged, counted and restarted with backoff): one poller per device (poller.py:
its own deadlines, so a slow device delays only itself), the committer that
makes buffered readings durable within `commit_interval`, maintenance (the
size cap and retention), the statistician that closes the statistics windows
on the wall clock, the clock guard, the uplink, the reloader (SIGHUP), and the
service side: the HTTP status server and the local socket
(service/local.py), STATUS lines and watchdog pings for systemd. All run on
one event loop; the store is used from this loop only.
The committer, the clock guard and the uplink are core: if one keeps failing
(supervisor.CORE_FAILURES within CORE_WINDOW_S) the agent stops and exits
non-zero (EX_SOFTWARE), so systemd starts it afresh. A device's poller never
escalates: while it restarts, its tags are q=2, its COMM alarm is judged, and
the stretch it did not sample is declared.

Faults stop at the stage that meets them: a tag whose rules raise gets a
reading with q=4 (the others are judged as usual), and the store never raises
(store/engine.py).

Start: the store is opened (declaring the stretch the last stop left, until
the first sample on a synchronised clock), alarms active when the agent last
stopped are taken back (not raised again; the first good value that recovers
clears them with their old `id`; one whose rule is no longer configured is
cleared), the status server starts, READY goes to systemd, then polling.

Samples pass the clock guard (q=1 while the clock is unsynchronised,
clockguard.py) before the rules.

The watchdog pings only while the data flows (`stalled`): every poll loop
keeps its interval or says its device is down, the committer commits, and the
uplink delivers or is honestly reconnecting.

Stop (SIGTERM/SIGINT), within SHUTDOWN_S however the devices behave:
STOPPING to systemd, tasks stopped and connections closed, everything
buffered committed, the offline `state` published, the store closed clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog

from edge_agent import __version__
from edge_agent.census import (
    alarms_by_kind,
    store_snapshot,
    tag_snapshot,
    tags_by_quality,
    uplink_snapshot,
)
from edge_agent.clock import ClockWatch
from edge_agent.clockguard import ClockGuard
from edge_agent.config import load_config
from edge_agent.config.loader import file_digest
from edge_agent.config.schema import AgentConfig, Device
from edge_agent.drivers import build_driver
from edge_agent.errors import ConfigError, ConfigFileMissing
from edge_agent.model import AlarmEvent, AlarmState, LinkState, Quality, Reading, Sample
from edge_agent.poller import Poller
from edge_agent.reload import (
    ReloadPlan,
    batch_limits,
    identity_of,
    meta_of,
    plan_reload,
    rule_specs,
    store_settings,
    uplink_settings,
)
from edge_agent.rules import CommJudge, TagRules
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.local import LocalServer, socket_path
from edge_agent.service.notify import Notifier
from edge_agent.service.snapshot import Snapshot, TagSnapshot
from edge_agent.service.watchdog import Heartbeat, Watchdog
from edge_agent.store import Loss, Store
from edge_agent.supervisor import TaskSupervisor
from edge_agent.uplink import Uplink

log = structlog.get_logger(component="runtime")

MAINTENANCE_INTERVAL_S: Final = 5.0
"""How often retention and the size cap are checked when nothing is due."""
MAINTENANCE_PAUSE_S: Final = 0.01
"""Between two housekeeping steps while work waits."""

STATS_GRACE_S: Final = 2.0
"""A statistics window is closed this long after its end, for samples still on their way."""

COMMIT_STALL_S: Final = 10.0
"""No commit attempt this long past `commit_interval`: the committer hangs."""
COMMIT_IDLE_S: Final = COMMIT_STALL_S / 2
"""Longest the committer waits with nothing buffered before it beats all the same."""

CATCH_UP_LAG_S: Final = 0.5
"""How much longer than a commit interval and a linger the oldest live reading may wait
to be packed before the uplink is behind, and a late poll waits for its grid instead of
catching up."""

STATUS_EVERY_S: Final = 5.0
"""How often the STATUS line for systemd is refreshed (sent only when it changed)."""

SHUTDOWN_S: Final = 3.5
"""A stop (SIGTERM) ends within this, whatever devices and broker do; the unit's
TimeoutStopSec leaves room above it (deploy/systemd/edge-agent.service)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Systemd:
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
        systemd: Systemd | None = None,
    ) -> None:
        self._config = config
        self._path = config_path
        # Hashed a few ms after `run` loaded it: a file replaced in between would be
        # taken for the one in force until the next reload (which hashes before loading).
        self._config_digest = None if config_path is None else file_digest(config_path)
        self._systemd = systemd or Systemd()
        self._commit_wake = asyncio.Event()
        """An alarm, or the first thing buffered since the buffer was last handed to the
        store's thread (Store.buffered)."""
        self._commit_urgent = False
        self._store = Store(store_settings(config), batch_limits(config), self._commit_wake.set)
        self._clock = ClockGuard(clock or ClockWatch(), self._clock_changed)
        self._rules = {tag: spec.build() for tag, spec in rule_specs(config).items()}
        self._comm = {device.name: self._comm_judge(device) for device in config.devices}
        self._pollers = {device.name: self._poller(device) for device in config.devices}
        self._tags_at_poll = _tags_at_poll(config)
        self._quality: dict[str, Quality] = {}
        self._latest: dict[str, Sample] = {}
        """Each tag's latest sample, for /tags: what report by exception did not send too."""
        self._rules_failing: set[str] = set()
        self.uplink = self._uplink(config)
        self._committed = Heartbeat(config.store.commit_interval + COMMIT_STALL_S)
        self._started = time.monotonic()
        self._reload_requested = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks = TaskSupervisor(self._give_up)
        self.fatal: str | None = None
        """Why the agent gave up (a core task kept failing); None while it has not."""

    # -- building --------------------------------------------------------------

    def _poller(self, device: Device) -> Poller:
        driver = build_driver(device, report_every=self._config.report_every_of(device))
        return Poller(
            driver, device.poll, self._on_poll, self._on_missed, may_catch_up=self._keeps_up
        )

    def _keeps_up(self) -> bool:
        """Whether a late poll may be followed at once: while the uplink is connected, only
        as long as it keeps up with the readings (see CATCH_UP_LAG_S). Sampling faster
        than the readings leave would grow a back-log and take the CPU that sends them.
        How long the oldest reading waits tells it, not how many wait: at high rates a
        commit interval's normal batch is many thousands."""
        if not self.uplink.stats.connected:
            return True
        config = self._config
        keeps_up_s = config.store.commit_interval + config.uplink.batch.linger + CATCH_UP_LAG_S
        return self._store.live_keeps_up(time.time_ns() // 1_000_000, keeps_up_s)

    def _comm_judge(self, device: Device) -> CommJudge:
        books = [self._rules[tag.tag].alarms for tag in device.tags]
        return CommJudge(books, device.comm_alarm_after)

    def _uplink(self, config: AgentConfig) -> Uplink:
        return Uplink(
            uplink_settings(config),
            identity_of(config),
            self._store,
            self.device_links,
            __version__,
            meta=meta_of(config, _now_ms()),
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
                self._store,
                self._config.store,
                in_flight=self.uplink.in_flight,
                connected=self.uplink.stats.connected,
            ),
            uplink=uplink_snapshot(self.uplink, now),
            tags_by_quality=tags_by_quality(self._quality.values()),
            alarms_active=alarms_by_kind(self._rules.values()),
            task_failures=self._tasks.failures(),
            stalled=self.stalled(),
            gateway=self._config.gateway.code,
            config_digest=self._config_digest,
        )

    def tags(self) -> tuple[TagSnapshot, ...]:
        """Every tag as it is now (/tags), in the config's order; quick, never awaits."""
        now, synced = time.monotonic(), self._clock.synced
        snapshots = []
        for device in self._config.devices:
            link_reason = self._pollers[device.name].snapshot(now).reason
            for tag in device.tags:
                sample, quality = self._latest.get(tag.tag), self._quality.get(tag.tag)
                snapshots.append(
                    tag_snapshot(
                        tag,
                        device.name,
                        self._rules[tag.tag],
                        None if sample is None or quality is None else (sample, quality),
                        link_reason=link_reason,
                        clock_synced=synced,
                        rules_failed=tag.tag in self._rules_failing,
                    )
                )
        return tuple(snapshots)

    def stalled(self) -> str | None:
        """Why the data does not flow (a hang, not an honest failure), or None when it does."""
        now = time.monotonic()
        hung = [poller.name for poller in self._pollers.values() if not poller.alive(now)]
        if hung:
            return f"the poll loop of {', '.join(hung)} hangs"
        if not self._committed.alive():
            return "the committer has not committed"
        if not self.uplink.alive(now):
            return "the uplink neither delivers nor reconnects"
        return None

    # -- running ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, judge, store and forward until `stop` is set (or a core task gives up);
        then shut down in order, within SHUTDOWN_S. Raises StoreError when the store cannot
        be opened."""
        await self._store.open()
        log.info("agent_started", devices=len(self._pollers), tags=len(self._rules))
        await self._restore_alarms(lambda tag: True)
        self._start_server()
        notifier = self._systemd.notifier
        notifier.ready(self.snapshot().summary_line())  # config loaded, store open
        for poller in self._pollers.values():
            self._start_poller(poller)
        self._tasks.start("committer", self._commit_periodically, core=True)
        self._tasks.start("maintenance", self._maintain_periodically)
        if self._config.stats.enabled:
            self._tasks.start("statistician", self._close_stats_windows)
        self._tasks.start("clock", self._clock.run, core=True)
        self._tasks.start("uplink", self.uplink.run, core=True)
        self._tasks.start("reloader", self._reload_on_request)
        if notifier.enabled:
            self._tasks.start("status", self._report_status)
        if self._systemd.watchdog_s is not None:
            watchdog = Watchdog(notifier, self._systemd.watchdog_s, self.stalled)
            self._tasks.start("watchdog", watchdog.run)
        _settle_collector()
        try:
            await _first(stop.wait(), self._stop.wait())
        finally:
            await self._shutdown()

    def request_reload(self) -> None:
        """SIGHUP: reload the config file (at once, or after a reload under way)."""
        self._reload_requested.set()

    def _give_up(self, reason: str) -> None:
        """A core task keeps failing: stop, and exit non-zero so systemd starts afresh."""
        self.fatal = reason
        self._stop.set()

    def _start_poller(self, poller: Poller) -> None:
        self._tasks.start(
            _poll_task(poller.name),
            poller.run,
            on_failure=partial(self._poller_failed, poller),
            on_restart=partial(self._poller_restarted, poller),
        )

    def _start_server(self) -> None:
        metrics = self._config.metrics
        host, port = metrics.address()
        limits = HealthLimits(metrics.health.devices_down, metrics.health.uplink_down)
        server = StatusServer(host, port, self.snapshot, limits, take_tags=self.tags)
        if metrics.enabled:
            self._tasks.start("http", server.run)  # a taken port is retried; polling goes on
        # The local socket is served whatever metrics.enabled says: it is this host's
        # alone, and `edge-agent status` finds this gateway's agent by it.
        local = LocalServer(socket_path(self._config.gateway.code), server.handle)
        self._tasks.start("local", local.run)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_S

        def within(share_s: float) -> float:
            return max(min(share_s, deadline - loop.time()), 0.05)

        self._systemd.notifier.stopping()
        log.info("agent_stopping")
        await self._tasks.stop_all(within(1.5), but={"uplink"})
        await asyncio.wait(
            [asyncio.ensure_future(p.close()) for p in self._pollers.values()],
            timeout=within(1.0),
        )
        await self._store.flush()
        self._tasks.ending("uplink")
        await self.uplink.stop(within(2.0))
        await self._tasks.stop("uplink", within(0.5))  # only if stop() ran out of time
        await asyncio.wait_for(self._store.close(), within(1.0))
        gc.unfreeze()  # what start-up built may be collected again (an agent run in a test)
        log.info("agent_stopped", fatal=self.fatal)

    # -- the pipeline ----------------------------------------------------------

    def _on_poll(self, poller: Poller, samples: list[Sample]) -> None:
        if self._clock.synced:
            self._store.sampled(_now_ms())  # the mark a stop is declared from
        self._handle(self._clock.guard(samples))
        if poller.note_link():
            self.uplink.publish_state_soon()
        self._alarm(self._comm[poller.name].judge(poller.driver.link, _now_ms()))

    def _on_missed(self, poller: Poller, missed: int, first_ms: int, last_ms: int) -> None:
        """Skipped deadlines were not sampled: declared, with the samples not taken."""
        tags = self._tags_at_poll[poller.name]
        self._store.record_loss(
            Loss(
                f"not sampling: {poller.name} missed poll deadlines",
                missed * tags,
                first_ms,
                last_ms,
            )
        )

    def _poller_failed(self, poller: Poller, error: BaseException) -> None:
        """A poll loop failed: its tags are q=2 (no communication) until it polls again."""
        poller.halt()
        now = _now_ms()
        tags = [tag.tag for tag in self._device(poller.name).tags]
        self._handle([Sample.bad(tag, now, Quality.COMM) for tag in tags])
        self.uplink.publish_state_soon()
        self._alarm(self._comm[poller.name].judge(LinkState.DOWN, now))

    def _poller_restarted(self, poller: Poller) -> None:
        if poller.halted_at_ms is not None:
            reason = f"not sampling: the poller of {poller.name} restarted after a failure"
            self._store.record_loss(Loss(reason, first_ms=poller.halted_at_ms, last_ms=_now_ms()))

    def _device(self, name: str) -> Device:
        return next(device for device in self._config.devices if device.name == name)

    def _handle(self, samples: list[Sample]) -> None:
        events: list[AlarmEvent] = []
        rules_of, quality_of, add_reading = self._rules, self._quality, self._store.add_reading
        latest, failing = self._latest, self._rules_failing
        for sample in samples:
            tag = sample.tag
            latest[tag] = sample
            try:
                reading, judged = rules_of[tag].judge(sample)
            except Exception as exc:
                reading, judged = self._rules_failed(sample, exc), []
            else:
                if failing:
                    self._rules_recovered(tag)
            if reading is not None:
                # Report by exception reports every change of quality, so the last
                # reading reported carries the tag's current quality.
                quality_of[tag] = reading.quality
                add_reading(reading, bool(judged))
            if judged:
                events += judged
        self._store.buffered()
        self._alarm(events)

    def _rules_failed(self, sample: Sample, error: Exception) -> Reading | None:
        """A tag whose rules raise: q=4 for it alone, logged once until it is judged again."""
        rules: TagRules | None = self._rules.get(sample.tag)
        if rules is None:
            return None  # a tag no longer configured (a reload under way)
        if sample.tag not in self._rules_failing:
            self._rules_failing.add(sample.tag)
            log.error("rules_failed", tag=sample.tag, value=repr(sample.value), exc_info=error)
        return Reading(sample.tag, rules.hz, sample.ts_ms, None, Quality.CONFIG)

    def _rules_recovered(self, tag: str) -> None:
        if tag in self._rules_failing:
            self._rules_failing.discard(tag)
            log.info("rules_recovered", tag=tag)

    def _alarm(self, events: list[AlarmEvent]) -> None:
        """Store alarm events together, committed at once (ahead of anything queued on the
        store's thread), and wake the uplink for them."""
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
        self._commit_urgent = True  # alarms never wait for the commit interval
        self._commit_wake.set()
        self.uplink.wake()

    async def _restore_alarms(self, in_scope: Callable[[str], bool]) -> None:
        """Take back the stored active alarms of the tags `in_scope` into their rules;
        clear those the rules can no longer raise (or whose tag is gone)."""
        stale: list[AlarmEvent] = []
        restored = 0
        for raised in await self._store.active_alarms():
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
            for tag, rules in self._rules.items():
                try:
                    items = rules.close_stats(before_ms)
                except Exception:
                    log.exception("stats_failed", tag=tag)  # this tag's window only
                    continue
                for item in items:
                    self._store.add_stat(item)
            if await self._store.flush():
                self.uplink.stored()

    async def _commit_periodically(self) -> None:
        """Commit what is buffered within commit_interval of the first of it (the uplink's
        takes commit too: Store.commit_due_in), and at once after an alarm; with nothing
        buffered, wait for something to be (Store.buffered), not on a timer. Acknowledgements
        alone wait for the next commit of something else (Store.flush).

        The heartbeat beats after each commit done (not asked for) and each pass that
        found nothing due, at least every COMMIT_IDLE_S while nothing is buffered: a
        committer stuck in a commit stops it. A commit that cannot write (a full disk)
        is not a stall: the store keeps what it could not write in memory, within its
        bound, and says so.
        """
        store, wake = self._store, self._commit_wake
        while True:
            due_in = store.commit_due_in(self._config.store.commit_interval)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when
            # the event is set as the task is cancelled, and the stop would be swallowed.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMIT_IDLE_S if due_in is None else due_in):
                    await wake.wait()
            wake.clear()
            urgent, self._commit_urgent = self._commit_urgent, False
            due = urgent or store.commit_due_in(self._config.store.commit_interval) == 0
            if due and await store.flush(urgent=urgent, acks_alone=False):
                self.uplink.stored()
            self._committed.beat()  # committed, or nothing was due

    async def _maintain_periodically(self) -> None:
        """Keep the store within its cap and retention: a bounded step at a time, one after
        another while work waits (each behind any commit or packing), else every
        MAINTENANCE_INTERVAL_S."""
        while True:
            more = await self._store.maintain(_now_ms())
            await asyncio.sleep(MAINTENANCE_PAUSE_S if more else MAINTENANCE_INTERVAL_S)

    async def _report_status(self) -> None:
        """Refresh systemd's STATUS line when it changed."""
        last = ""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            line = self.snapshot().summary_line()
            if line != last:
                self._systemd.notifier.status(line)
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
            # Before loading: a file replaced meanwhile is refused by `status`, never taken
            # for the one in force.
            digest = file_digest(self._path)
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
        self._config_digest = digest
        await self._apply(config, plan)
        return True

    async def _apply(self, config: AgentConfig, plan: ReloadPlan) -> None:
        gone = [p for name, p in self._pollers.items() if name not in plan.kept_devices]
        for poller in gone:
            await self._tasks.stop(_poll_task(poller.name))
        await asyncio.gather(*(poller.close() for poller in gone))
        self._config = config
        self._committed = Heartbeat(config.store.commit_interval + COMMIT_STALL_S)
        self._commit_wake.set()  # a shorter commit_interval applies to what waits already
        await self._store.set_limits(batch_limits(config))
        self._rules = {
            tag: self._rules[tag] if tag in plan.kept_tags else spec.build()
            for tag, spec in rule_specs(config).items()
        }
        self._quality = {tag: q for tag, q in self._quality.items() if tag in plan.kept_tags}
        self._latest = {tag: s for tag, s in self._latest.items() if tag in plan.kept_tags}
        self._comm = {
            device.name: self._comm[device.name]
            if _unchanged(device, plan)
            else self._comm_judge(device)
            for device in config.devices
        }
        await self._restore_alarms(lambda tag: tag not in plan.kept_tags)
        self._pollers = {
            device.name: self._pollers[device.name]
            if device.name in plan.kept_devices
            else self._poller(device)
            for device in config.devices
        }
        self._tags_at_poll = _tags_at_poll(config)
        for poller in self._pollers.values():
            if poller.name not in plan.kept_devices:
                self._start_poller(poller)
        if plan.restart_stats:
            await self._tasks.stop("statistician")
            if config.stats.enabled:
                self._tasks.start("statistician", self._close_stats_windows)
        if plan.restart_uplink:
            await self._restart_uplink()
        else:
            self.uplink.publish_state_soon()  # the devices may have changed
        if plan.restart_metrics:
            await self._tasks.stop("http")
            await self._tasks.stop("local")
            self._start_server()
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
        self._tasks.ending("uplink")
        await self.uplink.stop()
        await self._tasks.stop("uplink")
        self.uplink = self._uplink(self._config)
        self._tasks.start("uplink", self.uplink.run, core=True)


def _unchanged(device: Device, plan: ReloadPlan) -> bool:
    """The device and the rules of all its tags are kept: its COMM judge can stay too."""
    return device.name in plan.kept_devices and all(
        tag.tag in plan.kept_tags for tag in device.tags
    )


def _tags_at_poll(config: AgentConfig) -> dict[str, int]:
    """Per device, the tags read at every poll: what a skipped poll deadline did not sample."""
    return {
        device.name: sum(1 for tag in device.tags if device.interval_of(tag) == device.poll)
        for device in config.devices
    }


def _poll_task(device: str) -> str:
    return f"poll:{device}"


def _settle_collector() -> None:
    """Move what start-up built (config, rules, drivers, imported modules) out of the cyclic
    collector's sight: it lives as long as the agent, and a full collection would otherwise
    walk all of it again, while the pipeline frees what it makes by reference counting
    (docs/performance.md, the whole pipeline against the bare reader)."""
    gc.collect()
    gc.freeze()


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    """Wait until the first of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
