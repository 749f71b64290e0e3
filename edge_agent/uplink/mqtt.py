"""The uplink: moves messages from the store to the platform's broker, and back-fills after outages.

The loop per connection: mark the store live (what waits now is back-fill),
publish `state`, then keep the in-flight window (window.py) topped up: the
store (an `Outbox`, settings.py) offers resends first (alarms, then the oldest
`seq`), then packs new messages (alarms, due live readings, statistics,
back-fill), as much as the window admits; every QoS 1 publish, retained
`state` and `meta` included, counts against it. Alarms have priority all the
way to the broker: one slot of the window is kept for them, and the bytes of
everything else in flight are bounded by what the link drains in half a
second (pace.py), so an alarm never queues behind a back-log already handed
to paho. A message is acknowledged in the store only on a PUBACK with a
success reason code; a refusal keeps it and retries it after
`REFUSED_RETRY_S`. On any disconnect the session is dropped with whatever
paho held, and the next connection starts again from the store.

What the broker announces at connect is honoured (packets.py): Receive
Maximum sizes the window; every message is packed within Maximum Packet
Size (the store packs new ones within it; one packed earlier under a larger
limit, before a failover, is split by the store under new `seq`s, the old
`seq` declared skipped; an item too large for any packet is declared lost);
`state` leaves out its oldest loss entries to fit and says how many; `meta`
is paged within it; without Retain Available, `state` and `meta` go out
unretained. With `--log-level debug` each stored message published is a
line (`mqtt_published seq topic items bytes`) and so is its PUBACK
(`mqtt_acked seq latency_ms`); with debug off they cost one level check.
Refusals are judged by what the broker said (brokers.py) and
logged as one line a minute per reason. Failed connects are logged per
broker at once, then summed up every 5 minutes while they go on, and once
more when a connect succeeds again (`logs.Repeats`): a broker away for a
day is not a line per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.logs import SUMMARY_EVERY_S, Repeats, Tally
from edge_agent.store import StoredMessage
from edge_agent.store.items import split
from edge_agent.uplink.brokers import TAKEOVER_EVIDENCE, ReconnectPolicy
from edge_agent.uplink.envelope import Identity, envelope, offline_payload, state_payload
from edge_agent.uplink.meta import Meta, held_hash
from edge_agent.uplink.packets import Announced, payload_room, publish_size
from edge_agent.uplink.probe import answers_3_1_1
from edge_agent.uplink.ratelimit import ByteRate
from edge_agent.uplink.session import (
    ClosedBeforeConnack,
    ConnectFailed,
    CredentialsUnusable,
    Endpoint,
    NotConnected,
    ProtocolRefused,
    RetainRefused,
    Session,
    Will,
    tls_context,
)
from edge_agent.uplink.settings import BrokerAddress, Outbox, UplinkSettings
from edge_agent.uplink.window import Window

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

MQTT_3_1_1_CANNOT = (
    "MQTT 3.1.1 cannot say that the broker refused a publish (a broker that denies a "
    "topic may acknowledge the message, which is then deleted as delivered), cannot "
    "delay the will (a quick restart shows the gateway offline for a moment), and gives "
    "no reason when the broker closes the connection; use MQTT 5 where the broker has it"
)


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
    refusal: str | None = None
    """What the broker last refused, and why (for /healthz), until a delivery."""
    alarm_deliveries: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=ALARM_LATENCIES_KEPT)
    )
    """(sample time, sample-to-PUBACK ms) of the latest live alarm messages (their oldest
    item), for the latency benchmark."""

    def mark(self, connected: bool) -> None:
        self.connected, self.since = connected, time.monotonic()


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        identity: Identity,
        outbox: Outbox,
        devices: Callable[[], dict[str, str]],
        version: str,
        *,
        meta: Meta | None = None,
        clock: Callable[[], str] | None = None,
        summary_every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        """`summary_every_s`: how often failed connects that go on are summed up."""
        self._settings = settings
        self._meta = meta
        self._clock = clock
        self._identity = identity
        self._outbox = outbox
        self._devices = devices
        self._version = version
        self._wake = asyncio.Event()
        self._idle = False
        """The send loop waits with nothing stored to send (`stored` wakes it)."""
        self._state_due = True
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._backfill_rate = ByteRate(settings.backfill_rate) if settings.backfill_rate else None
        self._window = self._new_window(settings.max_inflight, settings.max_bytes)
        self._announced = Announced()
        self._refused_until: dict[int, float] = {}
        self._retained: dict[int, str] = {}
        """mid -> topic of the retained publishes (`state`, `meta`) of this connection."""
        self._next_state = 0.0
        self._state_refused_until = 0.0
        """A refused `state` waits this long, on a new connection too (monotonic)."""
        self._refusals: dict[str, Tally] = {}
        self._summary_every_s = summary_every_s
        self._connect_failures: dict[tuple[str, int], Repeats] = {}
        """Per broker (host, port): each one's failures are its own story."""
        self._told_3_1_1 = False
        self._will_retained = True
        """False once a broker refused a retained will (it keeps no retained messages)."""
        self._backlog_reported = 0
        self.stats = UplinkStats()
        # Bound once: the module's lazy logger binds again on every call (about 1 µs), too
        # much for a check on every publish and PUBACK.
        self._debug_log = log.bind()
        self._busy_until = time.monotonic() + self._connect_bound()
        self._delivered_at = time.monotonic()

    def _new_window(self, size: int, max_bytes: int) -> Window:
        settings = self._settings
        return Window(
            size,
            priority=settings.alarm_priority,
            max_bytes=max_bytes,
            backfill_rate=self._backfill_rate,
        )

    # -- called by the runtime -----------------------------------------------

    def wake(self) -> None:
        """Something urgent (an alarm) was stored: pack and send it now."""
        self._wake.set()

    def stored(self) -> None:
        """Something was committed: a send loop that waits with nothing to send looks now."""
        if self._idle:
            self._wake.set()

    def publish_state_soon(self) -> None:
        """A device's link changed: the platform hears of it in a new `state`."""
        self._state_due = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Messages from the store published on this connection and not yet acknowledged."""
        return len(self._window.seqs)

    @property
    def backfill_in_flight(self) -> int:
        """Back-fill messages (`hist: true`) among those in flight."""
        return self._window.backfill

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
        return 2 * self._settings.connect_timeout_s + 1.0

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
        settings = self._settings
        brokers = settings.brokers
        reconnect = ReconnectPolicy(
            len(brokers), settings.reconnect_min_s, settings.reconnect_max_s
        )
        try:
            while not self._stopping.is_set():
                broker = brokers[reconnect.broker]
                session = Session(self._endpoint(broker), self._will(), self._on_ack)
                self.stats.broker = f"{broker.host}:{broker.port}"
                with structlog.contextvars.bound_contextvars(broker=f"{broker.host}:{broker.port}"):
                    delay = await self._connection(session, reconnect)
                if delay > 0:
                    self._progress(delay + self._connect_bound())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._finished.set()

    async def _connection(self, session: Session, reconnect: ReconnectPolicy) -> float:
        """One connection, from connect to its end; returns the delay before the next."""
        self._progress(self._connect_bound())
        failures = self._failures_of(session.endpoint)
        try:
            announced = await session.connect()
        except RetainRefused as exc:
            self._will_retained = False
            log.warning(
                "mqtt_retain_unavailable",
                reason=str(exc),
                hint="the broker keeps no retained messages: the will, state and meta go out "
                "unretained, and the platform sees them only while it is subscribed",
            )
            return 0.0
        except ConnectFailed as exc:
            if await self._speaks_3_1_1_only(session.endpoint, exc):
                failures.failed(
                    str(exc),
                    level=logging.ERROR,
                    event="mqtt_protocol_mismatch",
                    hint='the broker speaks MQTT 3.1.1 only: set uplink.mqtt.protocol: "3.1.1"',
                )
            else:
                # A credential file an operator must fix is an error; a broker away is not.
                unusable = isinstance(exc, CredentialsUnusable)
                failures.failed(str(exc), level=logging.ERROR if unusable else logging.WARNING)
            return reconnect.connect_failed()
        failures.recovered()
        up_since = time.monotonic()
        try:
            await self._serve(session, announced)
        except Exception:
            session.drop()
            raise
        finally:
            self.stats.mark(connected=False)
            self._set_aside(session)
            await session.disconnect()
        delay, takeover = reconnect.connection_ended(time.monotonic() - up_since, session.ending)
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
        return delay

    def _failures_of(self, endpoint: Endpoint) -> Repeats:
        """The failed connects of one broker: `mqtt_connect_failed` (or the more telling
        `mqtt_protocol_mismatch`), `mqtt_connect_still_failing`, `mqtt_connect_recovered`."""
        broker = (endpoint.host, endpoint.port)
        failures = self._connect_failures.get(broker)
        if failures is None:
            failures = self._connect_failures[broker] = Repeats(
                log, "mqtt_connect", self._summary_every_s, broker=f"{broker[0]}:{broker[1]}"
            )
        return failures

    async def _speaks_3_1_1_only(self, endpoint: Endpoint, failed: ConnectFailed) -> bool:
        """After an MQTT 5 connect the broker closed unanswered or refused for its version:
        does it answer MQTT 3.1.1 (probe.py)?"""
        if not endpoint.mqtt5 or not isinstance(failed, ClosedBeforeConnack | ProtocolRefused):
            return False
        try:
            context = None if endpoint.tls is None else tls_context(endpoint.tls)
        except ConnectFailed:
            return False
        return await answers_3_1_1(
            endpoint.host, endpoint.port, context, endpoint.connect_timeout_s
        )

    def _set_aside(self, session: Session) -> None:
        """The broker's close blamed what was just published: set those messages aside for
        `REFUSED_RETRY_S`, as a refusal, and go on with the rest at the next connection."""
        blamed = session.implicated()
        for mid in blamed:
            out = self._window.message_of(mid)
            topic = self._retained.get(mid) or (out.topic if out is not None else "?")
            self._refused(session.broker_reason_name, topic, out)
        if blamed:
            log.warning(
                "mqtt_close_blamed_publish",
                reason=session.broker_reason_name,
                messages=len(blamed),
                retry_in=REFUSED_RETRY_S,
                hint="set aside; the rest goes on (the broker's log says what it refused)",
            )

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

    async def _serve(self, session: Session, announced: Announced) -> None:
        settings = self._settings
        self._delivered_at = time.monotonic()
        await self._outbox.mark_live()
        self._announced = announced
        self._retained.clear()
        max_bytes = min(settings.max_bytes, self._room("alarm"))  # the longest of rt/alarm/stat
        self._window = self._new_window(
            min(settings.max_inflight, announced.receive_maximum), max_bytes
        )
        # A broker that closes the connection on refusing `state` would otherwise get it
        # first on every connection, and nothing else would get through.
        self._state_due = time.monotonic() >= self._state_refused_until
        self.stats.mark(connected=True)
        self.stats.connects += 1
        log.info(
            "mqtt_connected",
            window=self._window.size,
            message_bytes=max_bytes,
            **announced.as_log(),
        )
        self._tell_what_is_missing(announced)
        meta_sync = asyncio.create_task(self._sync_meta(session), name="meta-sync")
        try:
            await self._send_loop(session)
        finally:
            meta_sync.cancel()
        if self._stopping.is_set():
            await self._say_offline(session)
        else:
            log.warning("mqtt_disconnected", reason=session.closed.result())

    def _tell_what_is_missing(self, announced: Announced) -> None:
        """Say once what this broker or protocol cannot do that uplink-v1 relies on."""
        if not self._settings.mqtt5 and not self._told_3_1_1:
            self._told_3_1_1 = True
            log.warning("mqtt_3_1_1_in_use", cannot=MQTT_3_1_1_CANNOT)

    def _room(self, topic: str) -> int:
        """The largest payload (before gzip) a publish on `topic` may carry on this broker."""
        return payload_room(
            self._identity.topic(topic),
            self._announced,
            self._settings.mqtt5,
            gzip=self._settings.gzip,
        )

    async def _send_loop(self, session: Session) -> None:
        self._next_state = self._state_refused_until
        keepalive = self._settings.keepalive_s
        while not session.closed.done() and not self._stopping.is_set():
            if not self._window.seqs and not self._refused_until:
                self._delivered_at = time.monotonic()  # nothing waits on the broker
                self._progress(2 * keepalive)
            self._wake.clear()  # before the take: a wake during it (a PUBACK) is not lost
            try:
                if self._state_due or time.monotonic() >= self._next_state:
                    await self._publish_state(session)
                    self._next_state = time.monotonic() + self._settings.state_interval_s
                await self._fill_window(session)
            except NotConnected:
                break
            for tally in self._refusals.values():
                tally.tick()
            # With nothing stored to send, nothing can become due before a commit says so
            # (`stored`) or an alarm wakes the loop: no look every linger_s meanwhile, each
            # a job on the store's thread and two wakes. The keep-alive bounds the wait, so
            # the loop's progress stays within the watchdog's 2 x keepalive.
            self._idle = not self._state_due and self._outbox.holds_only(len(self._window.seqs))
            pause = keepalive if self._idle else self._settings.linger_s
            wait = min(pause, max(self._next_state - time.monotonic(), 0.0))
            if self._backfill_rate is not None and (debt := self._backfill_rate.wait_s()) > 0:
                wait = min(wait, max(debt, 0.01))  # back-fill may go again once it is paid
            await _wait_any(self._wake, session.closed, wait)
            self._idle = False

    async def _sync_meta(self, session: Session) -> None:
        """Publish `meta` if the broker's retained one says another config (or nothing)."""
        if self._meta is None:
            return
        try:
            held = held_hash(await session.retained(self._identity.topic("meta"), META_WAIT_S))
            if held == self._meta.config_hash:
                return
            for topic, payload in self._meta.payloads(self._room("meta/1")):
                self._publish_retained(session, topic, payload)
        except NotConnected:
            return  # the next connection checks again
        except Exception:
            log.exception("meta_sync_failed")  # the next connection tries again
            return
        log.info("meta_published", config=self._meta.config_hash, replaced=held)

    async def _say_offline(self, session: Session) -> None:
        """Publish the retained offline state and give its PUBACK up to a second."""
        with contextlib.suppress(NotConnected):
            mid = self._publish_retained(
                session, self._identity.topic("state"), offline_payload(self._identity)
            )
            for _ in range(20):
                if mid not in self._window.retained or session.closed.done():
                    return
                await asyncio.sleep(0.05)

    async def _fill_window(self, session: Session) -> None:
        """Top the window up with what the store offers: resends first, then new messages."""
        window = self._window
        if window.in_flight >= window.size:
            return
        top_up = window.top_up(time.monotonic())
        skip = window.seqs | self._refused_seqs()
        linger_ms = int(self._settings.linger_s * 1000)
        too_large = [
            message.seq
            for message in await self._outbox.take(top_up, skip, now_ms(), linger_ms)
            if not self._send(session, message)
        ]
        if too_large:
            # Packed before this broker's limit was known (a failover): split in the store.
            await self._outbox.repack(too_large, top_up.ceiling_bytes)
            self._wake.set()
        if (
            self._backlog_reported
            and not window.seqs
            and not self._refused_until
            and not self._outbox.backlog(0).messages
        ):
            self._state_due = True  # the back-log drained: say so at once

    def _send(self, session: Session, message: StoredMessage) -> bool:
        """Publish a stored message; False, and nothing sent, when it exceeds the broker's
        Maximum Packet Size."""
        topic = self._identity.topic(message.topic)
        payload = self._payload(envelope(self._identity, message, now_ms()))
        if not self._fits(topic, payload):
            return False
        mid = session.publish(topic, payload)
        self._window.sent(mid, message, len(payload), time.monotonic())
        self.stats.published += 1
        if self._debug_log.is_enabled_for(logging.DEBUG):
            self._debug_log.debug(
                "mqtt_published",
                seq=message.seq,
                topic=message.topic,
                hist=message.hist,
                items=len(split(message.items_json)),
                bytes=len(payload),
            )
        return True

    def _fits(self, topic: str, payload: bytes) -> bool:
        limit = self._announced.maximum_packet_size
        return limit is None or publish_size(topic, len(payload), self._settings.mqtt5) <= limit

    def _publish_retained(self, session: Session, topic: str, payload: bytes) -> int | None:
        """Publish `state` or a `meta` page; None, and an error logged, when it cannot fit
        the broker's Maximum Packet Size even so."""
        packed = self._payload(payload)
        if not self._fits(topic, packed):
            log.error(
                "mqtt_retained_too_large",
                topic=topic,
                bytes=len(packed),
                maximum_packet_size=self._announced.maximum_packet_size,
                hint="the broker's Maximum Packet Size is too small for this gateway's "
                "state or meta; ask the province to raise it",
            )
            return None
        mid = session.publish(topic, packed, retain=True)
        self._window.sent(mid, None, len(payload), time.monotonic())
        self._retained[mid] = topic
        return mid

    def _payload(self, payload: bytes) -> bytes:
        if self._settings.gzip:
            return gzip.compress(payload, compresslevel=5, mtime=0)
        return payload

    async def _publish_state(self, session: Session) -> None:
        losses = await self._outbox.losses()
        backlog = self._outbox.backlog(self.in_flight)
        payload = state_payload(
            self._identity,
            ts_ms=now_ms(),
            version=self._version,
            backlog=backlog,
            devices=self._devices(),
            losses=losses,
            clock=None if self._clock is None else self._clock(),
            max_bytes=self._room("state"),
        )
        self._publish_retained(session, self._identity.topic("state"), payload)
        self._backlog_reported = backlog.messages
        self._state_due = False

    def _on_ack(self, mid: int, reason: ReasonCode | None) -> None:
        self._progress(2 * self._settings.keepalive_s)  # the broker answers
        if self._debug_log.is_enabled_for(logging.DEBUG):
            self._tell_ack(mid, reason)
        ours, message = self._window.acked(mid, time.monotonic())
        retained = self._retained.pop(mid, None)
        if self._window.wants_top_up or (self._backlog_reported and not self._window.seqs):
            self._wake.set()  # more may be due; or the back-log may have drained (`state`)
        if not ours:
            return  # a publish of an earlier connection
        refused = reason is not None and reason.is_failure
        if refused:
            self._wake.set()
            self._refused(str(reason), retained or "?", message)
        if message is None or refused:
            return
        seq = message.seq
        self._refused_until.pop(seq, None)
        self._outbox.ack(seq)
        self.stats.acked += 1
        self.stats.refusal = None
        self._delivered_at = time.monotonic()
        if message.topic == "alarm" and not message.hist:
            self.stats.alarm_deliveries.append((message.oldest_ms, now_ms() - message.oldest_ms))

    def _tell_ack(self, mid: int, reason: ReasonCode | None) -> None:
        message, sent_at = self._window.message_of(mid), self._window.sent_at(mid)
        if message is None or sent_at is None:
            return  # `state`, `meta`, or a publish of an earlier connection
        self._debug_log.debug(
            "mqtt_acked",
            seq=message.seq,
            latency_ms=round((time.monotonic() - sent_at) * 1000, 1),
            reason=None if reason is None else str(reason),
        )

    def _refused(self, reason: str, topic: str, message: StoredMessage | None) -> None:
        """The broker refused a publish (a PUBACK >= 0x80, or a close that blamed it): try
        it again after `REFUSED_RETRY_S`; a retained `state` is published again then, and
        `meta` at the next connection. Logged as one line a minute per reason."""
        self.stats.refused += 1
        name = message.topic if message is not None else topic.rsplit("/", 1)[-1]
        self.stats.refusal = f"{reason} ({name})"
        retry_at = time.monotonic() + REFUSED_RETRY_S
        if message is not None:
            self._refused_until[message.seq] = retry_at
        elif name == "state":
            self._next_state = self._state_refused_until = retry_at
            self._state_due = False
        tally = self._refusals.get(reason)
        if tally is None:
            tally = self._refusals[reason] = Tally(
                log,
                "mqtt_publish_refused",
                counted="messages",
                reason=reason,
                retry_in=REFUSED_RETRY_S,
            )
        tally.add(1)

    def _refused_seqs(self) -> set[int]:
        now = time.monotonic()
        for seq in [s for s, until in self._refused_until.items() if until <= now]:
            del self._refused_until[seq]
        return set(self._refused_until)

    def _endpoint(self, broker: BrokerAddress) -> Endpoint:
        settings = self._settings
        return Endpoint(
            host=broker.host,
            port=broker.port,
            client_id=self._identity.gateway,
            mqtt5=settings.mqtt5,
            keepalive_s=max(int(settings.keepalive_s), 1),
            connect_timeout_s=settings.connect_timeout_s,
            tls=settings.tls,
            username_file=settings.username_file,
            password_file=settings.password_file,
        )

    def _will(self) -> Will:
        offline = self._payload(offline_payload(self._identity))  # gzip covers every payload
        return Will(self._identity.topic("state"), offline, self._will_retained)


async def _wait_any(event: asyncio.Event, closed: asyncio.Future[str], seconds: float) -> None:
    """Wait until `event` is set, the connection closes, or `seconds` pass."""
    waiter = asyncio.ensure_future(event.wait())
    pending: set[asyncio.Future[Any]] = {waiter, closed}
    try:
        await asyncio.wait(pending, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
