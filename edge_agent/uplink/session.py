"""One MQTT connection on the asyncio loop: paho speaks the protocol, asyncio does the I/O.

Why not `loop_start()`: paho's thread would call us under paho's own lock, and
paho would keep unacknowledged messages in memory and resend them itself after
a reconnect. Here every callback runs on the event loop (paho is driven by
`add_reader`/`add_writer` and a one-second `loop_misc` tick), and a session is
used for one connection only: after a disconnect it is thrown away with
whatever paho still held, and the uplink resends from the store.

Only the blocking TCP connect runs in a worker thread, bounded by
`connect_timeout`; paho's socket callbacks are installed after it returns, so
they never run on that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import AgentError

AckHandler = Callable[[int, ReasonCode | None], None]
"""Called on the event loop with (mid, reason code or None for MQTT 3.1.1) for every PUBACK."""

WILL_DELAY_S = (
    30  # spec: the will is sent 30 s after an unclean loss, so a quick restart does not flap
)


class ConnectFailed(AgentError):
    """The broker could not be reached or refused the connection; retry later."""


class NotConnected(AgentError):
    """A publish was attempted on a session that is not (or no longer) connected."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    client_id: str
    mqtt5: bool
    keepalive_s: int
    connect_timeout_s: float


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


class Session:
    """A single MQTT connection; make a new one for every connection attempt."""

    def __init__(self, endpoint: Endpoint, will: Will, on_ack: AckHandler) -> None:
        self._endpoint = endpoint
        self._on_ack = on_ack
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[int] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        """Resolves with a reason when the connection ends, for whatever cause."""
        self._misc_task: asyncio.Task[None] | None = None
        self._client = self._make_client(will)

    def _make_client(self, will: Will) -> paho.Client:
        ep = self._endpoint
        protocol = MQTTProtocolVersion.MQTTv5 if ep.mqtt5 else MQTTProtocolVersion.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=ep.client_id,
            protocol=protocol,
            clean_session=None if ep.mqtt5 else True,
        )
        will_properties = None
        if ep.mqtt5:
            will_properties = _properties(PacketTypes.WILLMESSAGE)
            will_properties.WillDelayInterval = WILL_DELAY_S
        client.will_set(will.topic, will.payload, qos=1, retain=True, properties=will_properties)
        client.connect_timeout = ep.connect_timeout_s
        # The uplink bounds what is in flight itself; paho must never queue on its own.
        client.max_inflight_messages_set(65535)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        return client

    # -- lifetime ------------------------------------------------------------

    async def connect(self) -> int:
        """Connect and wait for CONNACK; returns the broker's Receive Maximum (65535 if unset)."""
        ep = self._endpoint
        properties = None
        if ep.mqtt5:
            properties = _properties(PacketTypes.CONNECT)
            # The broker holds the will back only while the session lives: a session
            # that ended at once would send the will at once. Clean start on every
            # connect still discards the old session (and its pending will).
            properties.SessionExpiryInterval = 2 * WILL_DELAY_S
        connect_args: dict[str, Any] = (
            {"properties": properties, "clean_start": True} if ep.mqtt5 else {}
        )
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    self._client.connect, ep.host, ep.port, ep.keepalive_s, **connect_args
                ),
                ep.connect_timeout_s + 1,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConnectFailed(f"cannot reach {ep.host}:{ep.port}: {exc or 'timed out'}") from None
        self._attach_socket()
        try:
            return await asyncio.wait_for(asyncio.shield(self._connack), ep.connect_timeout_s)
        except TimeoutError:
            self._abort()
            raise ConnectFailed(f"no CONNACK from {ep.host}:{ep.port} in time") from None

    async def disconnect(self) -> None:
        """Send DISCONNECT (no will is sent) and wait briefly for the socket to close."""
        if not self.closed.done():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 2.0)
        self._abort()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Hand one QoS 1 message to the socket; returns its mid for the PUBACK."""
        if self.closed.done() or not self._client.is_connected():
            raise NotConnected("the MQTT connection is down")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish refused by the client: {paho.error_string(info.rc)}")
        return int(info.mid)

    # -- paho on the event loop ------------------------------------------------

    def _attach_socket(self) -> None:
        sock = self._client.socket()
        if sock is None:
            raise ConnectFailed("the connection closed before CONNACK")
        self._client.on_socket_close = self._handle_socket_close
        self._client.on_socket_register_write = self._register_write
        self._client.on_socket_unregister_write = self._unregister_write
        self._loop.add_reader(sock, self._client.loop_read)
        if self._client.want_write():
            self._loop.add_writer(sock, self._client.loop_write)
        self._misc_task = asyncio.create_task(self._tick(), name="mqtt-misc")

    async def _tick(self) -> None:
        """Keep-alive pings and the detection of a silent broker, once a second."""
        while not self.closed.done():
            await asyncio.sleep(1.0)
            self._client.loop_misc()

    def _register_write(self, client: paho.Client, userdata: object, sock: paho.SocketLike) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _unregister_write(
        self, client: paho.Client, userdata: object, sock: paho.SocketLike
    ) -> None:
        self._loop.remove_writer(sock)

    def _handle_socket_close(
        self, client: paho.Client, userdata: object, sock: paho.SocketLike
    ) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._resolve_closed("socket closed")

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(ConnectFailed(f"the broker refused: {reason}"))
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None) or 65535
        self._connack.set_result(int(receive_maximum))

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._resolve_closed(str(reason))

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._on_ack(mid, reason if self._endpoint.mqtt5 else None)

    def _resolve_closed(self, reason: str) -> None:
        if not self._connack.done():
            self._connack.set_exception(ConnectFailed(f"connection lost before CONNACK: {reason}"))
            self._connack.exception()  # retrieved: nobody may be awaiting it any more
        if not self.closed.done():
            self.closed.set_result(reason)

    def _abort(self) -> None:
        """Drop the socket and everything paho still holds; idempotent."""
        if self._misc_task is not None:
            self._misc_task.cancel()
        sock = self._client.socket()
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._resolve_closed("closed by the agent")


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ untyped
