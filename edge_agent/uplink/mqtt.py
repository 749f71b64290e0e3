"""The uplink: moves messages from the store to the platform's broker, and back-fills after outages.

The loop per connection: mark the store live (what waits now is back-fill),
publish `state`, then keep a bounded window of messages in flight: resends
from the store first (alarms, then the oldest `seq`), then newly packed
messages (alarms, due live readings, statistics, back-fill). Alarms have
priority all the way to the broker: one slot of the window is kept for them,
and the bytes of everything else in flight are bounded by what the link
drains in half a second (pace.py), so an alarm never queues behind a
back-log already handed to paho. A message is acknowledged in the store
only on a PUBACK with a success reason code; a refusal keeps it and retries it
after `REFUSED_RETRY_S`. On any disconnect the session is dropped with
whatever paho held, and the next connection starts again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.schema import Address
from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.store import PackOptions, Store, StoredMessage
from edge_agent.uplink.brokers import TAKEOVER_EVIDENCE, ReconnectPolicy
from edge_agent.uplink.envelope import Identity, envelope, offline_payload, state_payload
from edge_agent.uplink.meta import Meta, held_hash
from edge_agent.uplink.pace import LinkPace
from edge_agent.uplink.ratelimit import ByteRate
from edge_agent.uplink.session import (
    ConnectFailed,
    CredentialsUnusable,
    Endpoint,
    NotConnected,
    Session,
    TlsFiles,
    Will,
)

log = structlog.get_logger(component="uplink")

REFUSED_RETRY_S = 30.0
"""A message the broker refused (PUBACK >= 0x80) is tried again after this long."""


META_WAIT_S = 1.0
"""How long to wait for the broker's retained `meta` after subscribing to it."""

STOP_TIMEOUT_S = 2.0
"""How long a stop waits for the offline state and the disconnect, by default."""

STALL_SLACK_S = 30.0
"""Beyond its own bounds (a connect's timeout, a backoff, two keep-alives), how long the
uplink may make no progress before `alive` says it hangs."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


ALARM_LATENCIES_KEPT = 10_000


@dataclass
class UplinkStats:
    connected: bool = False
    since: float = field(default_factory=time.monotonic)
    """Monotonic time `connected` last changed (or the uplink was made)."""
    broker: str | None = None
    """host:port of the broker connected to, or tried last."""
    connects: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    alarm_deliveries: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=ALARM_LATENCIES_KEPT)
    )
    """(sample time, sample-to-PUBACK ms) of the latest live alarm messages (their oldest
    item), for the latency benchmark."""

    def mark(self, connected: bool) -> None:
        self.connected, self.since = connected, time.monotonic()


@dataclass
class _Flight:
    """What is in flight on the current connection."""

    by_mid: dict[int, int] = field(default_factory=dict)
    seqs: set[int] = field(default_factory=set)
    hist_seqs: set[int] = field(default_factory=set)
    retained_mids: set[int] = field(default_factory=set)
    sizes: dict[int, int] = field(default_factory=dict)
    """Item bytes of each seq in flight: what the pace is measured and bounded in."""
    live_alarms: dict[int, int] = field(default_factory=dict)
    """seq -> sample time of live alarm messages in flight, for their latency."""

    @property
    def bulk_bytes(self) -> int:
        return sum(size for seq, size in self.sizes.items() if seq not in self.live_alarms)


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        identity: Identity,
        store: Store,
        devices: Callable[[], dict[str, str]],
        version: str,
        *,
        meta: Meta | None = None,
        clock: Callable[[], str] | None = None,
    ) -> None:
        self._config = config
        self._meta = meta
        self._clock = clock
        self._identity = identity
        self._store = store
        self._devices = devices
        self._version = version
        self._wake = asyncio.Event()
        self._state_due = True
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._flight = _Flight()
        self._refused_until: dict[int, float] = {}
        self._backlog_reported = 0
        self._backfill_rate = ByteRate(config.backfill_rate) if config.backfill_rate else None
        self._pace = LinkPace()
        self.stats = UplinkStats()
        self._busy_until = time.monotonic() + self._connect_bound()
        self._delivered_at = time.monotonic()

    # -- called by the runtime -----------------------------------------------

    def wake(self) -> None:
        """Something urgent (an alarm) was stored: pack and send it now."""
        self._wake.set()

    def publish_state_soon(self) -> None:
        """A device's link changed: the platform hears of it in a new `state`."""
        self._state_due = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Messages published on this connection and not yet acknowledged."""
        return len(self._flight.seqs)

    def alive(self, now: float) -> bool:
        """Delivering, idle, connecting or waiting out a backoff, each within its bound:
        False only when the uplink hangs (the watchdog's question)."""
        return self._stopping.is_set() or now <= self._busy_until

    def undelivered_for(self, now: float) -> float:
        """Seconds that messages have waited on this connection with none delivered."""
        return now - self._delivered_at if self.stats.connected else 0.0

    def _progress(self, within_s: float) -> None:
        """The uplink moved on; its next step is due within `within_s` (plus the slack)."""
        self._busy_until = time.monotonic() + within_s + STALL_SLACK_S

    def _connect_bound(self) -> float:
        return 2 * self._config.mqtt.connect_timeout + 1.0

    @property
    def backfill_in_flight(self) -> int:
        """Back-fill messages (`hist: true`) among those in flight."""
        return len(self._flight.hist_seqs)

    async def run(self) -> None:
        """Connect, serve, reconnect with jittered backoff, until `stop()`.

        The brokers are tried in turn and a takeover of the client id backs off
        long: the policy is `brokers.ReconnectPolicy`. Every log line of a
        connection names its broker.

        What the uplink cannot handle raises out of here, to the task supervisor,
        which logs it and runs the uplink again from the store (which holds
        everything not yet acknowledged); the connection is dropped without a
        DISCONNECT, so if the agent does not come back the broker publishes the
        will and the platform sees the gateway offline.
        """
        self._finished.clear()
        mqtt = self._config.mqtt
        brokers = mqtt.endpoints()
        reconnect = ReconnectPolicy(len(brokers), mqtt.reconnect_min, mqtt.reconnect_max)
        try:
            while not self._stopping.is_set():
                broker = brokers[reconnect.broker]
                session = Session(self._endpoint(broker), self._will(), self._on_ack)
                self.stats.broker = f"{broker.host}:{broker.port}"
                with structlog.contextvars.bound_contextvars(broker=f"{broker.host}:{broker.port}"):
                    self._progress(self._connect_bound())
                    try:
                        receive_maximum = await session.connect()
                    except ConnectFailed as exc:
                        # A credential file an operator must fix is an error; a broker away is not.
                        warn = log.error if isinstance(exc, CredentialsUnusable) else log.warning
                        warn("mqtt_connect_failed", reason=str(exc))
                        delay = reconnect.connect_failed()
                    else:
                        up_since = time.monotonic()
                        try:
                            await self._serve(session, receive_maximum)
                        except Exception:
                            session.drop()
                            raise
                        finally:
                            self.stats.mark(connected=False)
                            await session.disconnect()
                        up_for = time.monotonic() - up_since
                        delay, takeover = reconnect.connection_ended(
                            up_for, session.taken_over, session.ended_by_broker
                        )
                        if takeover is not None:
                            log.error(
                                "mqtt_client_id_taken_over",
                                gateway=self._identity.gateway,
                                evidence=TAKEOVER_EVIDENCE[takeover],
                                takeovers=reconnect.takeovers,
                                retry_in=round(delay, 1),
                                hint=(
                                    f"another client connected with client id "
                                    f"{self._identity.gateway!r}: check for a cloned gateway "
                                    "(two gateways configured with the same gateway.code); "
                                    "backing off instead of taking the id back"
                                ),
                            )
                if delay > 0:
                    self._progress(delay + self._connect_bound())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._finished.set()

    async def stop(self, within_s: float = STOP_TIMEOUT_S) -> None:
        """End the send loop, publish the offline state last, and disconnect cleanly,
        within `within_s`.

        Nothing is published after the offline state: a clean disconnect sends
        no will, so a later `online: true` would stand uncorrected.
        """
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), within_s)

    # -- one connection ------------------------------------------------------

    async def _serve(self, session: Session, receive_maximum: int) -> None:
        self._delivered_at = time.monotonic()
        self._store.mark_live()
        self._flight = _Flight()
        self._state_due = True
        self.stats.mark(connected=True)
        self.stats.connects += 1
        window = min(self._config.max_inflight, receive_maximum)
        log.info("mqtt_connected", receive_maximum=receive_maximum, window=window)
        meta_sync = asyncio.create_task(self._sync_meta(session), name="meta-sync")
        try:
            await self._send_loop(session, window)
        finally:
            meta_sync.cancel()
        if self._stopping.is_set():
            await self._say_offline(session)
        else:
            log.warning("mqtt_disconnected", reason=session.closed.result())

    async def _send_loop(self, session: Session, window: int) -> None:
        next_state = 0.0
        keepalive = self._config.mqtt.keepalive
        while not session.closed.done() and not self._stopping.is_set():
            if not self._flight.seqs and not self._refused_until:
                self._delivered_at = time.monotonic()  # nothing waits on the broker
                self._progress(2 * keepalive)
            try:
                if self._state_due or time.monotonic() >= next_state:
                    self._publish_state(session)
                    next_state = time.monotonic() + self._config.state_interval
                self._fill_window(session, window)
            except NotConnected:
                break
            self._wake.clear()
            wait = min(self._config.batch.linger, max(next_state - time.monotonic(), 0.0))
            if self._backfill_rate is not None:
                wait = min(wait, max(self._backfill_rate.wait_s(), 0.01))
            await _wait_any(self._wake, session.closed, wait)

    async def _sync_meta(self, session: Session) -> None:
        """Publish `meta` if the broker's retained one says another config (or nothing)."""
        if self._meta is None:
            return
        try:
            held = held_hash(await session.retained(self._identity.topic("meta"), META_WAIT_S))
            if held == self._meta.config_hash:
                return
            for topic, payload in self._meta.payloads:
                self._flight.retained_mids.add(session.publish(topic, payload, retain=True))
        except NotConnected:
            return  # the next connection checks again
        except Exception:
            log.exception("meta_sync_failed")  # the next connection tries again
            return
        log.info("meta_published", config=self._meta.config_hash, replaced=held)

    async def _say_offline(self, session: Session) -> None:
        """Publish the retained offline state and give its PUBACK up to a second."""
        with contextlib.suppress(NotConnected):
            mid = session.publish(
                self._identity.topic("state"), offline_payload(self._identity), retain=True
            )
            self._flight.retained_mids.add(mid)
            for _ in range(20):
                if mid not in self._flight.retained_mids or session.closed.done():
                    return
                await asyncio.sleep(0.05)

    def _fill_window(self, session: Session, window: int) -> None:
        """Top the window up: resends first (alarms, then oldest seq), then newly packed messages.

        With alarm priority, readings and statistics leave one slot free for
        an alarm and stay within the pace's byte budget; alarms only need a
        free slot. Without it, messages go first in, first out.
        """
        if len(self._flight.seqs) >= window:
            return
        priority = self._config.alarm_priority
        budget = _Budget(
            slots=window - len(self._flight.seqs),
            bulk_slots=window - len(self._flight.seqs) - (1 if priority and window > 1 else 0),
            backfill_slots=self._backfill_slots(window),
            bulk_bytes=(
                self._pace.inflight_budget(time.monotonic()) - self._flight.bulk_bytes
                if priority
                else None
            ),
        )
        outgoing: list[StoredMessage] = []
        skip = self._flight.seqs | self._refused_seqs()
        for message in self._store.unsent(skip, budget.slots, alarms_first=priority):
            if not budget.take(message):
                break  # keep resends in order; new alarms are packed below
            outgoing.append(message)
        linger_ms = int(self._config.batch.linger * 1000)
        max_bytes = (
            self._pace.message_budget(time.monotonic(), self._config.batch.max_bytes)
            if priority
            else None
        )
        while budget.slots > 0:
            packed = self._store.pack_next(
                now_ms(),
                linger_ms,
                PackOptions(
                    backfill=budget.backfill_slots > 0,
                    bulk=budget.bulk_allowed,
                    priority=priority,
                    max_bytes=max_bytes,
                ),
            )
            if packed is None:
                break
            budget.take(packed, force=True)
            outgoing.append(packed)
        self._store.guard_published()
        for message in outgoing:
            self._send(session, message)
        if self._backlog_reported and not self._flight.seqs and not self._refused_until:
            self._state_due = True  # the back-log drained: say so at once

    def _backfill_slots(self, window: int) -> int:
        """How many back-fill messages may be added now.

        Back-fill holds at most half the window, so live readings and alarms
        always find a free slot, and none while the `backfill_rate` is spent.
        """
        if self._backfill_rate is not None and not self._backfill_rate.allows():
            return 0
        if not self._config.alarm_priority:
            return window
        return max(window // 2, 1) - len(self._flight.hist_seqs)

    def _send(self, session: Session, message: StoredMessage) -> None:
        payload = envelope(self._identity, message, now_ms())
        if self._config.batch.gzip:
            payload = gzip.compress(payload, compresslevel=5, mtime=0)
        self._pace.sending(time.monotonic(), len(self._flight.seqs))
        mid = session.publish(self._identity.topic(message.topic), payload)
        self._flight.by_mid[mid] = message.seq
        self._flight.seqs.add(message.seq)
        self._flight.sizes[message.seq] = len(message.items_json)
        if message.topic == "alarm" and not message.hist:
            self._flight.live_alarms[message.seq] = message.oldest_ms
        if message.hist:
            self._flight.hist_seqs.add(message.seq)
            if self._backfill_rate is not None:
                self._backfill_rate.spend(len(payload))
        self.stats.published += 1

    def _publish_state(self, session: Session) -> None:
        backlog = self._store.backlog(in_flight=len(self._flight.seqs))
        payload = state_payload(
            self._identity,
            ts_ms=now_ms(),
            version=self._version,
            backlog=backlog,
            devices=self._devices(),
            losses=self._store.losses(),
            clock=None if self._clock is None else self._clock(),
        )
        mid = session.publish(self._identity.topic("state"), payload, retain=True)
        self._flight.retained_mids.add(mid)
        self._backlog_reported = backlog.messages
        self._state_due = False

    def _on_ack(self, mid: int, reason: ReasonCode | None) -> None:
        self._wake.set()
        self._progress(2 * self._config.mqtt.keepalive)  # the broker answers
        if mid in self._flight.retained_mids:
            self._flight.retained_mids.discard(mid)
            return
        seq = self._flight.by_mid.pop(mid, None)
        if seq is None:
            return
        self._flight.seqs.discard(seq)
        self._flight.hist_seqs.discard(seq)
        size = self._flight.sizes.pop(seq, 0)
        sampled = self._flight.live_alarms.pop(seq, None)
        self._pace.acked(time.monotonic(), size, len(self._flight.seqs))
        if reason is not None and reason.is_failure:
            self.stats.refused += 1
            self._refused_until[seq] = time.monotonic() + REFUSED_RETRY_S
            log.error("mqtt_publish_refused", seq=seq, reason=str(reason), retry_in=REFUSED_RETRY_S)
            return
        self._refused_until.pop(seq, None)
        self._store.ack(seq)
        self.stats.acked += 1
        self._delivered_at = time.monotonic()
        if sampled is not None:
            self.stats.alarm_deliveries.append((sampled, now_ms() - sampled))

    def _refused_seqs(self) -> set[int]:
        now = time.monotonic()
        for seq in [s for s, until in self._refused_until.items() if until <= now]:
            del self._refused_until[seq]
        return set(self._refused_until)

    def _endpoint(self, broker: Address) -> Endpoint:
        mqtt = self._config.mqtt
        tls = TlsFiles(**mqtt.tls.model_dump()) if mqtt.tls else TlsFiles()
        return Endpoint(
            host=broker.host,
            port=broker.port,
            client_id=self._identity.gateway,
            mqtt5=mqtt.protocol == "5",
            keepalive_s=max(int(mqtt.keepalive), 1),
            connect_timeout_s=mqtt.connect_timeout,
            tls=tls if mqtt.uses_tls else None,
            username_file=mqtt.username_file,
            password_file=mqtt.password_file,
        )

    def _will(self) -> Will:
        return Will(self._identity.topic("state"), offline_payload(self._identity))


@dataclass
class _Budget:
    """What one top-up of the window may still add."""

    slots: int
    bulk_slots: int
    backfill_slots: int
    bulk_bytes: int | None
    """Item bytes readings and statistics may still add; None: no bound (no priority)."""

    @property
    def bulk_allowed(self) -> bool:
        return self.bulk_slots > 0 and (self.bulk_bytes is None or self.bulk_bytes > 0)

    def take(self, message: StoredMessage, force: bool = False) -> bool:
        """Count `message` in if it fits (or `force`: it was packed to fit); False if not."""
        alarm = message.topic == "alarm"
        fits = self.slots > 0 and (
            alarm or (self.bulk_allowed and (self.backfill_slots > 0 or not message.hist))
        )
        if not (fits or force):
            return False
        self.slots -= 1
        if not alarm:
            self.bulk_slots -= 1
            if self.bulk_bytes is not None:
                self.bulk_bytes -= len(message.items_json)
        self.backfill_slots -= message.hist
        return True


async def _wait_any(event: asyncio.Event, closed: asyncio.Future[str], seconds: float) -> None:
    """Wait until `event` is set, the connection closes, or `seconds` pass."""
    waiter = asyncio.ensure_future(event.wait())
    pending: set[asyncio.Future[Any]] = {waiter, closed}
    try:
        await asyncio.wait(pending, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
