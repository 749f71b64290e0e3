"""One MQTT connection on the asyncio loop: paho speaks the protocol, asyncio does the I/O.

Why not `loop_start()`: paho's thread would call us under paho's own lock, and
paho would keep unacknowledged messages in memory and resend them itself after
a reconnect. Here every callback runs on the event loop (paho is driven by
`add_reader`/`add_writer` and a one-second `loop_misc` tick), and a session is
used for one connection only: after a disconnect it is thrown away with
whatever paho still held, and the uplink resends from the store.

The connect runs on the event loop too, all of it within `connect_timeout`:
name resolution, the TCP connect and the TLS handshake are awaited and the
socket is closed when the time is up, then paho is handed the connected
socket. (A blocking connect in a worker thread cannot be cancelled: one
abandoned on its timeout could still reach the broker later and take the
client id from the next, live connection.) The credential and certificate
files are small local files, read on the loop.

Hazards handled here:
- TLS: an `SSLSocket` can hold decrypted bytes the kernel no longer shows as
  readable, so after each read the reader drains `pending()`; otherwise a
  PUBACK could sit unseen until the next packet arrives.
- A silent broker: paho alone notices after about two keep-alives (a PINGREQ,
  then another keep-alive without an answer). While messages await their
  PUBACK, the session gives up after one keep-alive without a byte from the
  broker. One message must therefore cross the link within a keep-alive.
- How a connection ended (`ending`), from what the broker said: a DISCONNECT
  with reason 0x8E (MQTT 5) is a takeover of the client id; another reason
  names its own cause. Brokers that close without a word (Mosquitto 2.0.11
  even for a takeover or an oversized packet; any MQTT 3.1.1 broker) leave
  only the time of the close: a close within one round trip of a PUBLISH
  implicates that publish (`implicated`), and only a close with nothing in
  flight may be a takeover; `brokers.py` judges that.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
from edge_agent.uplink.brokers import Ending
from edge_agent.uplink.packets import Announced

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


class ClosedBeforeConnack(ConnectFailed):
    """The broker closed the connection without answering CONNECT."""


class ProtocolRefused(ConnectFailed):
    """The broker refused the MQTT version (CONNACK 0x84)."""


class RetainRefused(ConnectFailed):
    """The broker keeps no retained messages and so refused a retained will (CONNACK 0x9A)."""


class NotConnected(AgentError):
    """A publish was attempted on a session that is not (or no longer) connected."""


TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason: another connection with our client id took the session over."""

UNSUPPORTED_PROTOCOL = 0x84
"""CONNACK reason: the broker does not speak the MQTT version asked for."""

RETAIN_NOT_SUPPORTED = 0x9A
"""CONNACK reason: the will asked to be retained, and the broker retains nothing."""

UNSPECIFIED = 0x80
"""What paho reports for a connection lost without a DISCONNECT (end of file, reset)."""

MESSAGE_FAULTS = {0x81, 0x82, 0x83, 0x87, 0x90, 0x95, 0x99, 0x9A, 0x9B}
"""DISCONNECT reasons that blame what was just published: malformed packet, protocol
error, implementation specific error, not authorized, topic name invalid, packet too
large, payload format invalid, retain not supported, QoS not supported."""

MIN_ROUND_TRIP_S = 0.25
"""The least time after a PUBLISH within which a close is taken as its answer."""


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
    retain: bool = True
    """False only for a broker that keeps no retained messages (Retain Available 0)."""


class Session:
    """A single MQTT connection; make a new one for every connection attempt."""

    def __init__(self, endpoint: Endpoint, will: Will, on_ack: AckHandler) -> None:
        self._endpoint = endpoint
        self._on_ack = on_ack
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[Announced] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        """Resolves with a reason when the connection ends, for whatever cause."""
        self._misc_task: asyncio.Task[None] | None = None
        self._unacked: dict[int, float] = {}
        """mid -> when it was published, for every publish awaiting its PUBACK."""
        self._round_trip_s = MIN_ROUND_TRIP_S
        """Smoothed time from PUBLISH to PUBACK."""
        self._waiting_since = 0.0
        self._last_in = 0.0
        self._closed_at: float | None = None
        self._refused_at: float | None = None
        """When the last PUBACK with a failure reason came."""
        self._in_flight_at_close = 0
        self.broker_reason: ReasonCode | None = None
        """The reason of the broker's DISCONNECT (MQTT 5), if it sent one."""
        self.ended_by_broker = False
        """True when the broker closed the connection (a DISCONNECT, or the socket closed),
        not the agent, a keep-alive timeout, or a local error."""
        self.announced = Announced()
        """What the broker announced in its CONNACK."""
        self._agent_closing = False
        self._client = self._make_client(will)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def broker_reason_name(self) -> str:
        """The broker's DISCONNECT reason by name, or what a close without one means."""
        if self.broker_reason is None:
            return "closed by the broker without a reason"
        return f"{self.broker_reason} (DISCONNECT 0x{self.broker_reason.value:02X})"

    @property
    def ending(self) -> Ending:
        """How the connection ended; meaningful once `closed` is done."""
        reason = self.broker_reason
        if not self.ended_by_broker:
            return Ending.AGENT if self._agent_closing else Ending.LOST
        if reason is not None and reason.value == TAKEN_OVER:
            return Ending.TAKEN_OVER
        if (
            (reason is not None and reason.value in MESSAGE_FAULTS)
            or self._refusal_explains_close()
            or self.implicated()
        ):
            return Ending.REFUSED
        if reason is None and not self._in_flight_at_close:
            return Ending.CLOSED_IDLE
        return Ending.LOST

    def implicated(self) -> list[int]:
        """The publishes a close by the broker answers: those still unacknowledged that went
        out within one round trip before it. None after a DISCONNECT that blames no message
        (a takeover, a shutdown) or a close by the agent."""
        reason = self.broker_reason
        if self._closed_at is None or not self.ended_by_broker:
            return []
        if reason is not None and reason.value not in MESSAGE_FAULTS:
            return []
        if self._refusal_explains_close():
            return []  # the refused publish is the one to blame, and it is set aside already
        within = self._round_trip_window()
        return [mid for mid, at in self._unacked.items() if self._closed_at - at <= within]

    def _refusal_explains_close(self) -> bool:
        """A PUBACK refusal came within one round trip before the broker closed (Mosquitto
        2.0.11 closes right after refusing a publish with 0x87)."""
        closed, refused = self._closed_at, self._refused_at
        if closed is None or refused is None or not self.ended_by_broker:
            return False
        return closed - refused <= self._round_trip_window()

    def _round_trip_window(self) -> float:
        return max(2 * self._round_trip_s, MIN_ROUND_TRIP_S)

    def _make_client(self, will: Will) -> _PreparedClient:
        ep = self._endpoint
        protocol = MQTTProtocolVersion.MQTTv5 if ep.mqtt5 else MQTTProtocolVersion.MQTTv311
        client = _PreparedClient(
            CallbackAPIVersion.VERSION2,
            client_id=ep.client_id,
            protocol=protocol,
            clean_session=None if ep.mqtt5 else True,
        )
        will_properties = None
        if ep.mqtt5:
            will_properties = _properties(PacketTypes.WILLMESSAGE)
            will_properties.WillDelayInterval = WILL_DELAY_S
        client.will_set(
            will.topic, will.payload, qos=1, retain=will.retain, properties=will_properties
        )
        # The uplink bounds what is in flight itself; paho must never queue on its own.
        client.max_inflight_messages_set(65535)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        return client

    # -- lifetime ------------------------------------------------------------

    async def connect(self) -> Announced:
        """Connect and wait for CONNACK, all within `connect_timeout`; returns what the
        broker announced."""
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
            async with asyncio.timeout(ep.connect_timeout_s):
                context = self._prepare_identity()
                self._client.prepared = await _open_socket(ep.host, ep.port, context)
                self._client.connect(ep.host, ep.port, ep.keepalive_s, **connect_args)
                self._last_in = time.monotonic()
                self._attach_socket()
                self.announced = await asyncio.shield(self._connack)
        except ssl.SSLCertVerificationError as exc:
            self._abort()
            raise ConnectFailed(
                f"TLS: the certificate of {ep.host}:{ep.port} is not trusted "
                f"({exc.verify_message}); nothing was sent"
            ) from None
        except ssl.SSLError as exc:
            self._abort()
            raise ConnectFailed(
                f"TLS handshake with {ep.host}:{ep.port} failed: {exc} "
                "(does that port speak TLS? MQTT over TLS is usually 8883)"
            ) from None
        except TimeoutError:
            self._abort()
            raise ConnectFailed(
                f"no CONNACK from {ep.host}:{ep.port} within {ep.connect_timeout_s:g} s "
                "(name resolution, TCP, TLS and CONNECT together)"
            ) from None
        except (OSError, ValueError) as exc:
            self._abort()
            raise ConnectFailed(f"cannot reach {ep.host}:{ep.port}: {exc}") from None
        except BaseException:
            self._abort()
            raise
        if self.announced.maximum_qos < 1:
            self._abort()
            raise ConnectFailed(
                "the broker allows QoS 0 only (CONNACK Maximum QoS 0): uplink-v1 delivery "
                "needs QoS 1, so nothing is sent; ask the province to allow QoS 1"
            )
        return self.announced

    def _prepare_identity(self) -> ssl.SSLContext | None:
        """Read the credential files and build the TLS context (small local files)."""
        ep = self._endpoint
        if ep.username_file is not None:
            password = None if ep.password_file is None else _secret(ep.password_file)
            user = _secret(ep.username_file)
            if password is not None:
                # Not the user name: it is often the gateway code, which logs must show.
                register_secret(password)
            self._client.username_pw_set(user, password)
        return None if ep.tls is None else tls_context(ep.tls)

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
        """Hand one QoS 1 message to the socket; returns its mid for the PUBACK. `retain`
        only where the broker has retained messages (Retain Available)."""
        if self.closed.done() or not self._client.is_connected():
            raise NotConnected("the MQTT connection is down")
        retain = retain and self.announced.retain_available
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"publish refused by the client: {paho.error_string(info.rc)}")
        now = time.monotonic()
        if not self._unacked:
            self._waiting_since = now
        self._unacked[int(info.mid)] = now
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
            if reason.value == UNSUPPORTED_PROTOCOL:
                self._connack.set_exception(ProtocolRefused(f"the broker refused: {reason}"))
            elif reason.value == RETAIN_NOT_SUPPORTED:
                self._connack.set_exception(RetainRefused(f"the broker refused: {reason}"))
            elif reason.value in REFUSED_IDENTITY:
                self._connack.set_exception(
                    CredentialsUnusable(
                        f"the broker refused: {reason}; check the user name and password "
                        "files, the client certificate and gateway.code"
                    )
                )
            else:
                self._connack.set_exception(ConnectFailed(f"the broker refused: {reason}"))
            return
        self._connack.set_result(Announced.from_properties(properties))

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
        if from_broker:
            self.broker_reason = reason
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
        published = self._unacked.pop(mid, None)
        if reason.is_failure:
            self._refused_at = time.monotonic()
        if published is not None:
            took = time.monotonic() - published
            self._round_trip_s += (took - self._round_trip_s) / 8  # as TCP smooths its RTT
        self._on_ack(mid, reason if self._endpoint.mqtt5 else None)

    def _resolve_closed(self, reason: str) -> None:
        if not self._connack.done():
            self._connack.set_exception(
                ClosedBeforeConnack(f"connection lost before CONNACK: {reason}")
            )
            self._connack.exception()  # retrieved: nobody may be awaiting it any more
        if not self.closed.done():
            self._closed_at = time.monotonic()
            self._in_flight_at_close = len(self._unacked)
            self.closed.set_result(reason)

    def _abort(self) -> None:
        """Drop the socket and everything paho still holds; idempotent."""
        self._agent_closing = True
        if self._misc_task is not None:
            self._misc_task.cancel()
        if self._client.prepared is not None:  # connected, but not yet handed to paho
            self._client.prepared.close()
            self._client.prepared = None
        sock = self._client.socket()
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            # paho closes its socket again when it is collected, perhaps after the loop
            # is gone: it must not call back into this session then.
            self._client.on_socket_close = None
            with contextlib.suppress(OSError):
                sock.close()
        self._resolve_closed("closed by the agent")


class _PreparedClient(paho.Client):
    """paho, handed a socket the event loop connected (`prepared`) instead of connecting
    one itself with blocking calls that no timeout could cancel."""

    prepared: socket.socket | None = None

    def _create_socket(self) -> socket.socket:
        sock, self.prepared = self.prepared, None
        if sock is None:
            raise OSError("no connected socket was prepared")
        return sock


async def _open_socket(host: str, port: int, context: ssl.SSLContext | None) -> socket.socket:
    """Resolve, connect and shake hands (TLS) on the event loop; cancellable at every step,
    and the socket is closed when cancelled. Addresses are tried in the resolver's order."""
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return sock if context is None else await _handshake(sock, context, host)
        except OSError as exc:
            sock.close()
            if isinstance(exc, ssl.SSLError):
                raise
            errors.append(exc)
        except BaseException:
            sock.close()
            raise
    raise errors[-1] if errors else OSError(f"{host} has no address")


async def _handshake(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """The TLS handshake of a connected non-blocking socket, awaiting readiness on the loop."""
    loop = asyncio.get_running_loop()
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await _ready(loop.add_reader, loop.remove_reader, tls)
            except ssl.SSLWantWriteError:
                await _ready(loop.add_writer, loop.remove_writer, tls)
    except BaseException:
        tls.close()  # it holds the descriptor now, not `sock`
        raise


async def _ready(
    add: Callable[..., None], remove: Callable[[Any], object], sock: socket.socket
) -> None:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    add(sock, wake)
    try:
        await ready
    finally:
        remove(sock)


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
