"""Serve an OPC UA scenario: one asyncua server per device, values following the scenario.

- Every `update` the values are recomputed from t (seconds since the simulator
  started) and written when they changed, so subscriptions see data changes
  and reads see the value of the last update. A variable with a `status` is
  served with that StatusCode (a bad node among good ones).
- Endpoints: None and/or any of the secure policy/mode pairs; the server makes
  its own certificate (SERVER_AUTH, for 127.0.0.1 and localhost) when missing.
  With `trust_dir`, only client certificates found there are accepted; with
  `users`, only those users (anonymous refused).
- Limits as real servers have them (`limits`, `max_sessions`): the
  OperationLimits and MaxMonitoredItemsPerSubscription are announced in
  Server/ServerCapabilities (or, with `announced: false`, say 0) and enforced:
  a Read, Browse, TranslateBrowsePathsToNodeIds or CreateMonitoredItems with
  more operations than its limit is answered BadTooManyOperations, a monitored
  item past a subscription's limit BadTooManyMonitoredItems, a session past
  `max_sessions` BadTooManySessions. asyncua's server enforces none of these.
- Switches for tests and demos: `restart(down_for)` closes the listener and every
  session (their subscriptions die with them, as in a real restart) and listens
  again on the same port; `stall(True)` keeps connections open but answers
  nothing, and new connections get no answer either (a hung server or a
  black-holed network); `drop_subscriptions()` deletes every subscription
  while sessions stay (a server that silently forgot them);
  `announce_limits(False)` keeps enforcing the limits but says 0 (no limit);
  `refuse_untrusted_with(code)` answers an untrusted client certificate with
  another StatusCode (node-opcua says BadSecurityChecksFailed). `sessions()`
  counts the sessions the server holds.
- Read-only for clients: every variable is read-only (AccessLevel CurrentRead).

asyncua has no public switch for restarting a listener or stalling it, nor for
limits, so `_Listener` reaches into its BinaryServer and session registry, and
drivers/simulator/opcua_guard.py wraps the sessions and secure channels the
server creates: the two places the simulator touches asyncua internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_agent.drivers.simulator.opcua_guard import LIMIT_NODES, Guard
from edge_agent.drivers.simulator.opcua_scenario import (
    Folder,
    OpcuaScenario,
    OpcuaServerSpec,
    Variable,
    load_opcua_scenario,
)

HOST = "127.0.0.1"
APPLICATION_URI = "urn:edge-agent:simulator"

_ENDPOINTS = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256/Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256/SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128Sha256RsaOaep/Sign": ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    "Aes128Sha256RsaOaep/SignAndEncrypt": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256Sha256RsaPss/Sign": ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    "Aes256Sha256RsaPss/SignAndEncrypt": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}

__all__ = ["OpcuaSimulator", "run_opcua_simulator", "start_opcua_simulator"]


class _Users(UserManager):  # type: ignore[misc]  # asyncua is untyped here (pyproject)
    """Only the scenario's users, each with its password."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class _Point:
    """One variable: its node, how to compute its value, and what was written last."""

    def __init__(self, node_id: ua.NodeId, spec: Variable) -> None:
        self.node_id = node_id
        self.spec = spec
        self.kind = getattr(ua.VariantType, spec.type)
        self.status = ua.StatusCode(getattr(ua.StatusCodes, spec.status))
        self.last: object = None

    def value(self, t: float) -> object:
        raw = self.spec.value.at(t)
        value = _typed(self.spec.type, raw)
        return [value] * self.spec.array if self.spec.array else value


def _typed(kind: str, raw: object) -> object:
    if kind == "Boolean":
        return bool(raw)
    if kind in ("Float", "Double"):
        return float(raw)  # type: ignore[arg-type]  # scenario values are numbers here
    if kind == "String":
        return str(raw)
    if kind == "DateTime":
        return datetime.fromtimestamp(float(raw), UTC)  # type: ignore[arg-type]
    if kind == "StatusCode":
        return ua.StatusCode(int(raw))  # type: ignore[call-overload]
    return round(raw)  # type: ignore[call-overload]  # the integer types


class _Listener:
    """Restart and stall switches for one asyncua server (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._blocker: socket.socket | None = None

    @property
    def stalled(self) -> bool:
        return self._blocker is not None

    @property
    def _binary(self) -> Any:
        return self._server.bserver

    async def stop(self) -> None:
        """Close the listener, every connection and every session (and its subscriptions)."""
        await self._binary.stop()
        iserver = self._server.iserver
        for session in list(iserver._external_sessions.values()):
            with contextlib.suppress(Exception):
                await session.close_session(delete_subs=True)

    async def start(self) -> None:
        await self._binary.start()

    def stall(self, on: bool) -> None:
        binary = self._binary
        for client in list(binary.clients):
            if client.transport is not None:
                if on:
                    client.transport.pause_reading()
                else:
                    client.transport.resume_reading()
        if on and self._blocker is None:
            binary._server.close()  # new connections land in a backlog nobody accepts
            self._blocker = socket.create_server((HOST, binary.port), backlog=16)
        elif not on and self._blocker is not None:
            self._blocker.close()
            self._blocker = None

    async def relisten(self) -> None:
        """Listen again after a stall (stall(False) only frees the port)."""
        binary = self._binary
        binary._server = await asyncio.get_running_loop().create_server(
            binary._make_protocol, binary.hostname, binary.port
        )

    async def guard(self, guard: Guard) -> None:
        """Make every connection from now on (restarts included) with `guard.protocol`."""
        binary = self._binary
        binary._make_protocol = guard.protocol(binary._make_protocol)
        binary._server.close()
        await binary._server.wait_closed()
        await self.relisten()

    async def drop_subscriptions(self) -> int:
        service = self._server.iserver.subscription_service
        ids = list(service.subscriptions)
        await service.delete_subscriptions(ids)
        return len(ids)


class OpcuaServer:
    """One simulated OPC UA server."""

    def __init__(self, spec: OpcuaServerSpec, clock: Callable[[], float], directory: Path) -> None:
        self.spec = spec
        self._clock = clock
        self._directory = directory
        self._server = Server(user_manager=_Users(spec.users) if spec.users else None)
        self._listener = _Listener(self._server)
        self._guard = Guard(self._server, spec.limits, spec.max_sessions)
        self._points: list[_Point] = []
        self._updater: asyncio.Task[None] | None = None
        self._clock_offset = timedelta(0)
        self.port = spec.port
        self.namespace_index = 0
        self.certificate: bytes | None = None
        """The server's certificate (DER), when it has secure endpoints."""

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{HOST}:{self.port}"

    async def start(self) -> None:
        server, spec = self._server, self.spec
        await server.init()
        server.set_endpoint(f"opc.tcp://{HOST}:{self.port}")
        server.set_server_name(f"edge-agent simulator {spec.name}")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([_ENDPOINTS[e] for e in spec.security])
        if spec.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if any(e != "None" for e in spec.security):
            await self._certificates()
        self.namespace_index = await server.register_namespace(spec.namespace)
        await self.announce_limits(self.spec.limits.announced)
        await self._nodes()
        await server.start()
        self.port = server.bserver.port
        await self._listener.guard(self._guard)
        await self._update()
        self._updater = asyncio.create_task(self._update_periodically())

    async def _certificates(self) -> None:
        key, cert = self._directory / "server-key.pem", self._directory / "server-cert.der"
        await cert_gen.setup_self_signed_certificate(
            key, cert, APPLICATION_URI, HOST, [ExtendedKeyUsageOID.SERVER_AUTH], {}
        )
        await self._server.load_certificate(str(cert))
        await self._server.load_private_key(str(key))
        self.certificate = cert.read_bytes()
        if self.spec.trust_dir is not None:
            store = TrustStore([Path(self.spec.trust_dir)], [])
            await store.load()
            self._guard.trusts = lambda der: store.is_trusted(x509.load_der_x509_certificate(der))
            validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
            self._server.set_certificate_validator(partial(self._guard.validate, validator))

    async def announce_limits(self, on: bool = True) -> None:
        """Say the limits in Server/ServerCapabilities (True), or say 0 there (False); they
        are enforced either way."""
        for name, identifier in LIMIT_NODES.items():
            number = getattr(self.spec.limits, name) if on else 0
            value = ua.DataValue(ua.Variant(number, ua.VariantType.UInt32))
            await self._server.write_attribute_value(ua.NodeId(identifier), value)

    def refuse_untrusted_with(self, code: int | None, *, at_channel: bool = False) -> None:
        """Answer an untrusted client certificate with `code` (None: asyncua's own,
        BadCertificateUntrusted), at CreateSession as asyncua does, or `at_channel`: with a
        ServiceFault to OpenSecureChannel, as node-opcua does (BadSecurityChecksFailed)."""
        self._guard.untrusted = code
        self._guard.at_channel = at_channel

    def refused_calls(self) -> int:
        """Requests answered BadTooManyOperations since the start."""
        return self._guard.refused_calls

    def sessions(self) -> int:
        """The sessions the server holds now (activated or not)."""
        return self._guard.sessions()

    async def _nodes(self) -> None:
        async def walk(parent: Any, folder: Folder, prefix: str) -> None:
            path = f"{prefix}{folder.name}"
            node = await parent.add_folder(ua.NodeId(path, ns), ua.QualifiedName(folder.name, ns))
            for variable in folder.variables:
                point = _Point(ua.NodeId(variable.id or f"{path}.{variable.name}", ns), variable)
                initial = ua.Variant(point.value(self._clock()), point.kind)
                await node.add_variable(point.node_id, ua.QualifiedName(variable.name, ns), initial)
                self._points.append(point)
            for child in folder.folders:
                await walk(node, child, f"{path}.")

        ns = self.namespace_index
        for folder in self.spec.folders:
            await walk(self._server.nodes.objects, folder, "")

    def set_clock_offset(self, seconds: float) -> None:
        """Stamp changes `seconds` off the true time from now on, as a PLC whose clock is
        on local time as if it were UTC (8 h at UTC+8); 0 sets it right."""
        self._clock_offset = timedelta(seconds=seconds)

    async def _update(self) -> None:
        t = self._clock()
        now = datetime.now(UTC) + self._clock_offset
        for point in self._points:
            value = point.value(t)
            if value == point.last:
                continue
            point.last = value
            data = ua.DataValue(
                ua.Variant(value, point.kind), StatusCode=point.status, SourceTimestamp=now
            )
            await self._server.write_attribute_value(point.node_id, data)

    async def _update_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.spec.update)
            await self._update()

    async def restart(self, down_for: float = 0.0) -> None:
        await self._listener.stop()
        await asyncio.sleep(down_for)
        await self._listener.start()

    async def stall(self, on: bool = True) -> None:
        """Answer nothing, to open connections or new ones (True); answer again (False)."""
        stalled = self._listener.stalled
        self._listener.stall(on)
        if stalled and not on:
            await self._listener.relisten()

    async def drop_subscriptions(self) -> int:
        """Delete every subscription on the server; sessions stay. Returns how many."""
        return await self._listener.drop_subscriptions()

    async def stop(self) -> None:
        if self._updater is not None:
            self._updater.cancel()
            await asyncio.gather(self._updater, return_exceptions=True)
        self._listener.stall(False)
        await self._server.stop()


class OpcuaSimulator:
    """A running OPC UA scenario; `close()` it when done."""

    def __init__(
        self, servers: dict[str, OpcuaServer], temp: tempfile.TemporaryDirectory[str]
    ) -> None:
        self.servers = servers
        self._temp = temp

    def __getitem__(self, name: str) -> OpcuaServer:
        return self.servers[name]

    async def close(self) -> None:
        for server in self.servers.values():
            await server.stop()
        self._temp.cleanup()


async def start_opcua_simulator(
    scenario: OpcuaScenario, ports: dict[str, int] | None = None
) -> OpcuaSimulator:
    """Serve every server of `scenario`; `ports` overrides ports by name (0 = any free)."""
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    temp = tempfile.TemporaryDirectory(prefix="opcua-sim-")
    simulator = OpcuaSimulator({}, temp)
    try:
        for spec in scenario.devices:
            port = (ports or {}).get(spec.name, spec.port)
            directory = Path(spec.certificate_dir or Path(temp.name) / spec.name)
            directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # once, at start
            server = OpcuaServer(spec.model_copy(update={"port": port}), clock, directory)
            simulator.servers[spec.name] = server
            await server.start()
    except BaseException:
        await simulator.close()
        raise
    return simulator


async def run_opcua_simulator(
    source: OpcuaScenario | str | Path, ports: dict[str, int] | None = None
) -> None:
    """Serve a scenario until cancelled; one line per server once all listen:
    `simulating NAME on opc.tcp://127.0.0.1:PORT namespace URI (ns=N)`."""
    scenario = source if isinstance(source, OpcuaScenario) else load_opcua_scenario(source)
    simulator = await start_opcua_simulator(scenario, ports)
    try:
        for name, server in simulator.servers.items():
            print(
                f"simulating {name} on {server.endpoint} namespace {server.spec.namespace} "
                f"(ns={server.namespace_index})"
            )
        sys.stdout.flush()
        await asyncio.Event().wait()
    finally:
        await simulator.close()
