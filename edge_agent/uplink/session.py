"""One MQTT connection on the asyncio loop: paho speaks the protocol, asyncio does the I/O.

Why not `loop_start()`: paho's thread would call us under paho's own lock, and
paho would keep unacknowledged messages in memory and resend them itself after
a reconnect. Here every callback runs on the event loop (paho is driven by
`add_reader`/`add_writer` and a one-second `loop_misc` tick), and a session is
used for one connection only: after a disconnect it is thrown away with
whatever paho still held, and the uplink resends from the store.

Only the blocking TCP connect (and the TLS handshake, and reading the
credential and certificate files) runs in a worker thread, bounded by
`connect_timeout`; paho's socket callbacks are installed after it returns, so
they never run on that thread.

Hazards handled here:
- TLS: an `SSLSocket` can hold decrypted bytes the kernel no longer shows as
  readable, so after each read the reader drains `pending()`; otherwise a
  PUBACK could sit unseen until the next packet arrives.
- A silent broker: paho alone notices after about two keep-alives (a PINGREQ,
  then another keep-alive without an answer). While messages await their
  PUBACK, the session gives up after one keep-alive without a byte from the
  broker. One message must therefore cross the link within a keep-alive.
- Takeover: a DISCONNECT with reason 0x8E (MQTT 5) sets `taken_over`; the
  uplink backs off long instead of taking the client id straight back. Brokers
  that only close the old connection (Mosquitto before 2.0.15, any MQTT 3.1.1
  broker) leave `ended_by_broker` as the only trace; `brokers.py` judges that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.credentials import CredentialFileError, read_secret, resolve_path
from edge_agent.errors import AgentError
from edge_agent.logs import register_secret

AckHandler = Callable[[int, ReasonCode | None], None]
"""Called on the event loop with (mid, reason code or None for MQTT 3.1.1) for every PUBACK."""

WILL_DELAY_S = (
    30  # spec: the will is sent 30 s after an unclean loss, so a quick restart does not flap
)
SESSION_EXPIRY_S = 2 * WILL_DELAY_S
"""At least the will delay: a broker sends the will when the session ends, if earlier."""


class ConnectFailed(AgentError):
    """The broker could not be reached or refused the connection; retry later."""


class CredentialsUnusable(ConnectFailed):
    """A credential, certificate or key is unreadable, or the broker refused it: an operator
    must fix it. Retrying still makes sense (a file may be replaced), but say it loudly."""


REFUSED_IDENTITY = {0x85, 0x86, 0x87, 0x8A, 0x8C}
"""CONNACK reasons that mean our identity was refused: client id not valid, bad user name
or password, not authorized, banned, bad authentication method."""


class NotConnected(AgentError):
    """A publish was attempted on a session that is not (or no longer) connected."""


TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason: another connection with our client id took the session over."""

UNSPECIFIED = 0x80
"""What paho reports for a connection lost without a DISCONNECT (end of file, reset)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """TLS 1.2+ with the server certificate verified; paths as configured (see `resolve_path`)."""

    ca_file: str | None = None
    """CA bundle the server certificate must chain to; None: the system CA store."""
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    client_id: str
    mqtt5: bool
    keepalive_s: int
    connect_timeout_s: float
    tls: TlsFiles | None = None
    """None: plain TCP."""
    username_file: str | None = None
    password_file: str | None = None


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
        self._unacked: set[int] = set()
        self._waiting_since = 0.0
        self._last_in = 0.0
        self.taken_over = False
        """True when the broker ended the connection because our client id connected elsewhere."""
        self.ended_by_broker = False
        """True when the broker closed the connection (a DISCONNECT, or the socket closed),
        not the agent, a keep-alive timeout, or a local error."""
        self._agent_closing = False
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
            # that ended at once would send the will at once. Hence no clean start
            # either: a clean start ends the old session, and a broker that follows
            # the standard (ejabberd) then sends its will at once, so a quick restart
            # would flap the gateway offline. Resuming the session cancels the will.
            # The session holds nothing else of ours: QoS 1 publishes are resent
            # from the store, and the one subscription (`meta`) is removed at once.
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        connect_args: dict[str, Any] = (
            {"properties": properties, "clean_start": False} if ep.mqtt5 else {}
        )
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._connect_blocking, connect_args),
                ep.connect_timeout_s + 1,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"TLS: the certificate of {ep.host}:{ep.port} is not trusted "
                f"({exc.verify_message}); nothing was sent"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectFailed(
                f"TLS handshake with {ep.host}:{ep.port} failed: {exc} "
                "(does that port speak TLS? MQTT over TLS is usually 8883)"
            ) from None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConnectFailed(f"cannot reach {ep.host}:{ep.port}: {exc or 'timed out'}") from None
        self._last_in = time.monotonic()
        self._attach_socket()
        try:
            return await asyncio.wait_for(asyncio.shield(self._connack), ep.connect_timeout_s)
        except TimeoutError:
            self._abort()
            raise ConnectFailed(f"no CONNACK from {ep.host}:{ep.port} in time") from None

    def _connect_blocking(self, connect_args: dict[str, Any]) -> None:
        """In a worker thread: read credentials and certificates, then TCP, TLS and CONNECT."""
        ep = self._endpoint
        if ep.tls is not None:
            self._client.tls_set_context(tls_context(ep.tls))
        if ep.username_file is not None:
            password = None if ep.password_file is None else _secret(ep.password_file)
            user = _secret(ep.username_file)
            if password is not None:
                # Not the user name: it is often the gateway code, which logs must show.
                register_secret(password)
            self._client.username_pw_set(user, password)
        self._client.connect(ep.host, ep.port, ep.keepalive_s, **connect_args)

    async def disconnect(self) -> None:
        """Send DISCONNECT (no will is sent) and wait briefly for the socket to close."""
        self._agent_closing = True
        if not self.closed.done():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 2.0)
        self._abort()

    def drop(self) -> None:
        """Close the socket without a DISCONNECT: to the broker the agent vanished, so it
        publishes the will (after its delay) unless the agent connects again."""
        self._abort()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Hand one QoS 1 message to the socket; returns its mid for the PUBACK."""
        if self.closed.done() or not self._client.is_connected():
            raise NotConnected("the MQTT connection is down")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish refused by the client: {paho.error_string(info.rc)}")
        if not self._unacked:
            self._waiting_since = time.monotonic()
        self._unacked.add(int(info.mid))
        return int(info.mid)

    async def retained(self, topic: str, wait_s: float) -> bytes | None:
        """The message the broker retains on `topic`, or None when none came within `wait_s`.

        A broker sends a retained message right after the SUBACK; one that holds
        none sends nothing, hence the wait.
        """
        held: asyncio.Future[bytes] = self._loop.create_future()

        def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            if not held.done():
                held.set_result(bytes(message.payload))

        self._client.message_callback_add(topic, on_message)
        try:
            self._client.subscribe(topic, qos=1)
            return await asyncio.wait_for(held, wait_s)
        except TimeoutError:
            return None
        finally:
            self._client.message_callback_remove(topic)
            if not self.closed.done():
                self._client.unsubscribe(topic)

    # -- paho on the event loop ------------------------------------------------

    def _attach_socket(self) -> None:
        sock = self._client.socket()
        if sock is None:
            raise ConnectFailed("the connection closed before CONNACK")
        self._client.on_socket_close = self._handle_socket_close
        self._client.on_socket_register_write = self._register_write
        self._client.on_socket_unregister_write = self._unregister_write
        self._loop.add_reader(sock, self._read)
        if self._client.want_write():
            self._loop.add_writer(sock, self._client.loop_write)
        self._misc_task = asyncio.create_task(self._tick(), name="mqtt-misc")

    def _read(self) -> None:
        self._last_in = time.monotonic()
        self._client.loop_read()
        # TLS: bytes already decrypted are invisible to the event loop's selector.
        sock = self._client.socket()
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            self._client.loop_read()
            sock = self._client.socket()

    async def _tick(self) -> None:
        """Keep-alive pings and the detection of a silent broker, once a second or faster."""
        keepalive = self._endpoint.keepalive_s
        while not self.closed.done():
            await asyncio.sleep(min(1.0, keepalive / 4))
            self._client.loop_misc()
            if self._silent_for() > keepalive and not self.closed.done():
                self._resolve_closed(
                    f"no answer from the broker for {keepalive} s (keep-alive) "
                    f"with {len(self._unacked)} message(s) awaiting PUBACK"
                )
                self._abort()

    def _silent_for(self) -> float:
        """Seconds without a byte from the broker while a PUBACK is awaited; 0 if none is."""
        if not self._unacked:
            return 0.0
        return time.monotonic() - max(self._last_in, self._waiting_since)

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
        # paho calls on_disconnect right after this, with the reason: let that one win.
        self._loop.call_soon(self._resolve_closed, "socket closed")

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
            if reason.value in REFUSED_IDENTITY:
                self._connack.set_exception(
                    CredentialsUnusable(
                        f"the broker refused: {reason}; check the user name and password "
                        "files, the client certificate and gateway.code"
                    )
                )
            else:
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
        from_broker = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        if not self._agent_closing and (from_broker or reason.value == UNSPECIFIED):
            self.ended_by_broker = True  # paho reports end of file and a reset as unspecified
        if from_broker and reason.value == TAKEN_OVER:
            self.taken_over = True
        how = "DISCONNECT from the broker" if from_broker else "connection lost"
        self._resolve_closed(f"{reason} ({how})")

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._unacked.discard(mid)
        self._on_ack(mid, reason if self._endpoint.mqtt5 else None)

    def _resolve_closed(self, reason: str) -> None:
        if not self._connack.done():
            self._connack.set_exception(ConnectFailed(f"connection lost before CONNACK: {reason}"))
            self._connack.exception()  # retrieved: nobody may be awaiting it any more
        if not self.closed.done():
            self.closed.set_result(reason)

    def _abort(self) -> None:
        """Drop the socket and everything paho still holds; idempotent."""
        self._agent_closing = True
        if self._misc_task is not None:
            self._misc_task.cancel()
        sock = self._client.socket()
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._resolve_closed("closed by the agent")


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2 or newer, the server's certificate and host name verified; never less."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.ca_file is None:
        context.load_default_certs()
    else:
        ca = _resolved(files.ca_file)
        with _naming("ca_file", ca):
            context.load_verify_locations(cafile=ca)
    if files.cert_file is not None:
        cert = _resolved(files.cert_file)
        key = None if files.key_file is None else _resolved(files.key_file)
        with _naming("cert_file/key_file", cert if key is None else f"{cert}, {key}"):
            context.load_cert_chain(cert, key)
    return context


def _secret(configured: str) -> str:
    try:
        return read_secret(configured)
    except CredentialFileError as exc:
        raise CredentialsUnusable(str(exc)) from None


def _resolved(configured: str) -> Path:
    try:
        return resolve_path(configured)
    except CredentialFileError as exc:
        raise CredentialsUnusable(str(exc)) from None


@contextlib.contextmanager
def _naming(setting: str, path: object) -> Iterator[None]:
    try:
        yield
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsUnusable(f"TLS files unusable: {setting} {path}: {exc}") from None


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ untyped
