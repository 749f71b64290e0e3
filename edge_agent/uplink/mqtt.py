"""The uplink: moves messages from the store to the platform's broker, and back-fills after outages.

The loop per connection: mark the store live (what waits now is back-fill),
publish `state`, then keep a bounded window of messages in flight: resends
from the store first (oldest `seq` first), then newly packed messages
(alarms, due live readings, back-fill). A message is acknowledged in the store
only on a PUBACK with a success reason code; a refusal keeps it and retries it
after `REFUSED_RETRY_S`. On any disconnect the session is dropped with
whatever paho held, and the next connection starts again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.backoff import Backoff
from edge_agent.config.schema import Uplink as UplinkConfig
from edge_agent.store import Store, StoredMessage
from edge_agent.uplink.envelope import Identity, envelope, offline_payload, state_payload
from edge_agent.uplink.session import ConnectFailed, Endpoint, NotConnected, Session, Will

log = structlog.get_logger(component="uplink")

REFUSED_RETRY_S = 30.0
"""A message the broker refused (PUBACK >= 0x80) is tried again after this long."""


STOP_TIMEOUT_S = 3.0
"""How long a stop waits for the offline state and the disconnect; SIGTERM must end within 10 s."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0


@dataclass
class _Flight:
    """What is in flight on the current connection."""

    by_mid: dict[int, int] = field(default_factory=dict)
    seqs: set[int] = field(default_factory=set)
    state_mids: set[int] = field(default_factory=set)


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        identity: Identity,
        store: Store,
        devices: Callable[[], dict[str, str]],
        version: str,
    ) -> None:
        self._config = config
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
        self.stats = UplinkStats()

    # -- called by the runtime -----------------------------------------------

    def wake(self) -> None:
        """Something urgent (an alarm) was stored: pack and send it now."""
        self._wake.set()

    def publish_state_soon(self) -> None:
        """A device's link changed: the platform hears of it in a new `state`."""
        self._state_due = True
        self._wake.set()

    async def run(self) -> None:
        """Connect, serve, reconnect with jittered backoff, until `stop()`."""
        mqtt = self._config.mqtt
        backoff = Backoff(mqtt.reconnect_min, mqtt.reconnect_max)
        try:
            while not self._stopping.is_set():
                session = Session(self._endpoint(), self._will(), self._on_ack)
                try:
                    receive_maximum = await session.connect()
                except ConnectFailed as exc:
                    log.warning(
                        "mqtt_connect_failed", reason=str(exc), host=mqtt.host, port=mqtt.port
                    )
                else:
                    backoff.reset()
                    try:
                        await self._serve(session, receive_maximum)
                    finally:
                        self.stats.connected = False
                        await session.disconnect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.next())
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """End the send loop, publish the offline state last, and disconnect cleanly.

        Nothing is published after the offline state: a clean disconnect sends
        no will, so a later `online: true` would stand uncorrected.
        """
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), STOP_TIMEOUT_S)

    # -- one connection ------------------------------------------------------

    async def _serve(self, session: Session, receive_maximum: int) -> None:
        self._store.mark_live()
        self._flight = _Flight()
        self._state_due = True
        self.stats.connected = True
        self.stats.connects += 1
        window = min(self._config.max_inflight, receive_maximum)
        log.info("mqtt_connected", receive_maximum=receive_maximum, window=window)
        next_state = 0.0
        while not session.closed.done() and not self._stopping.is_set():
            try:
                if self._state_due or time.monotonic() >= next_state:
                    self._publish_state(session)
                    next_state = time.monotonic() + self._config.state_interval
                self._fill_window(session, window)
            except NotConnected:
                break
            self._wake.clear()
            wait = min(self._config.batch.linger, max(next_state - time.monotonic(), 0.0))
            await _wait_any(self._wake, session.closed, wait)
        if self._stopping.is_set():
            await self._say_offline(session)
        else:
            log.warning("mqtt_disconnected", reason=session.closed.result())

    async def _say_offline(self, session: Session) -> None:
        """Publish the retained offline state and give its PUBACK up to a second."""
        with contextlib.suppress(NotConnected):
            mid = session.publish(
                self._identity.topic("state"), offline_payload(self._identity), retain=True
            )
            self._flight.state_mids.add(mid)
            for _ in range(20):
                if mid not in self._flight.state_mids or session.closed.done():
                    return
                await asyncio.sleep(0.05)

    def _fill_window(self, session: Session, window: int) -> None:
        free = window - len(self._flight.seqs)
        if free <= 0:
            return
        skip = self._flight.seqs | self._refused_seqs()
        batch = self._config.batch
        for message in self._store.unsent(skip, free):
            self._send(session, message)
            free -= 1
        while free > 0:
            packed = self._store.pack_next(now_ms(), int(batch.linger * 1000))
            if packed is None:
                break
            self._send(session, packed)
            free -= 1
        if self._backlog_reported and not self._flight.seqs and not self._refused_until:
            self._state_due = True  # the back-log drained: say so at once

    def _send(self, session: Session, message: StoredMessage) -> None:
        payload = envelope(self._identity, message, now_ms())
        mid = session.publish(self._identity.topic(message.topic), payload)
        self._flight.by_mid[mid] = message.seq
        self._flight.seqs.add(message.seq)
        self.stats.published += 1

    def _publish_state(self, session: Session) -> None:
        backlog = self._store.backlog(in_flight=len(self._flight.seqs))
        payload = state_payload(self._identity, now_ms(), self._version, backlog, self._devices())
        mid = session.publish(self._identity.topic("state"), payload, retain=True)
        self._flight.state_mids.add(mid)
        self._backlog_reported = backlog.messages
        self._state_due = False

    def _on_ack(self, mid: int, reason: ReasonCode | None) -> None:
        self._wake.set()
        if mid in self._flight.state_mids:
            self._flight.state_mids.discard(mid)
            return
        seq = self._flight.by_mid.pop(mid, None)
        if seq is None:
            return
        self._flight.seqs.discard(seq)
        if reason is not None and reason.is_failure:
            self.stats.refused += 1
            self._refused_until[seq] = time.monotonic() + REFUSED_RETRY_S
            log.error("mqtt_publish_refused", seq=seq, reason=str(reason), retry_in=REFUSED_RETRY_S)
            return
        self._refused_until.pop(seq, None)
        self._store.ack(seq)
        self.stats.acked += 1

    def _refused_seqs(self) -> set[int]:
        now = time.monotonic()
        for seq in [s for s, until in self._refused_until.items() if until <= now]:
            del self._refused_until[seq]
        return set(self._refused_until)

    def _endpoint(self) -> Endpoint:
        mqtt = self._config.mqtt
        return Endpoint(
            host=mqtt.host,
            port=mqtt.port,
            client_id=self._identity.gateway,
            mqtt5=mqtt.protocol == "5",
            keepalive_s=max(int(mqtt.keepalive), 1),
            connect_timeout_s=mqtt.connect_timeout,
        )

    def _will(self) -> Will:
        return Will(self._identity.topic("state"), offline_payload(self._identity))


async def _wait_any(event: asyncio.Event, closed: asyncio.Future[str], seconds: float) -> None:
    """Wait until `event` is set, the connection closes, or `seconds` pass."""
    waiter = asyncio.ensure_future(event.wait())
    pending: set[asyncio.Future[Any]] = {waiter, closed}
    try:
        await asyncio.wait(pending, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
