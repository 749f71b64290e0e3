"""One connection to the server: connect (bounded), read the limits, resolve every tag's node.

A `Session` is made whole or not at all: `open_session` either returns one
whose client is connected, with the server's operation limits read
(drivers/opcua/limits.py) and each tag resolved to a NodeId (or refused, with
the reason), or raises and leaves nothing behind. A fresh asyncua Client is
made for every connect, so nothing of a lost connection (its publish loop, its
subscriptions) lives on into the next; asyncua's own auto-reconnect is not
used: the driver reconnects on its own backoff (edge_agent/backoff.py).
`resolve_refused` resolves the refused tags again on a live session (the
driver retries them while it is up), the same way, into a new Session.

Sessions do not outlive the driver's use of them: every session is closed
(CloseSession, bounded by `timeout`) when the driver drops it, and each asks
for a session timeout of `session_timeout(device)` (asyncua asks for an hour):
a session whose CloseSession cannot arrive (a black-holed network) is freed
by the server within that, so reconnects never pile sessions up on a server
that caps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from structlog.typing import FilteringBoundLogger

from edge_agent.credentials import CredentialFileError, read_secret
from edge_agent.drivers.opcua.address import BrowseElement, parse_browse_path
from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.explain import SECURITY_REJECTED, read_channel_faults
from edge_agent.drivers.opcua.limits import Call, Learned, Limits, read_limits
from edge_agent.drivers.opcua.quality import status_name
from edge_agent.drivers.opcua.security import NoEndpoint, no_endpoint, secure, spelled
from edge_agent.logs import register_secret

# asyncua logs every publish at INFO and every failed request with a traceback; the
# driver logs each link change once, naming the device, so asyncua's lines are noise.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

CLIENT_NAME = "edge-agent"
SESSION_TIMEOUT_MIN = 5.0
"""Seconds: the least session timeout asked for (servers commonly refuse less)."""


class CredentialError(Exception):
    """A user name or password file cannot be used; the message says why."""


@dataclass(slots=True)
class Session:
    client: Client
    nodes: list[ua.NodeId | None]
    """Each tag's NodeId, by tag index; None where it could not be resolved."""
    refused: dict[int, str] = field(default_factory=dict)
    """Tag index -> why its node could not be resolved (those tags are q=4)."""
    limits: Limits = field(default_factory=Limits)

    @property
    def alive(self) -> bool:
        """False once asyncua saw the connection drop (its watchdog probes the server)."""
        return self.client.uaclient.state is UaClientState.CONNECTED


def session_timeout(device: OpcuaDevice) -> float:
    """The session timeout asked for, in seconds: four times `timeout`, at least 5 s.

    asyncua probes the server every `timeout` (its watchdog; polls and publish
    requests come on top), so a healthy session is silent for little more than
    `timeout`, two at worst on a slow server: this is twice that. The server may
    revise it; `link_up` logs what it granted.
    """
    return max(SESSION_TIMEOUT_MIN, 4 * device.timeout)


async def open_session(
    device: OpcuaDevice, log: FilteringBoundLogger, learned: Learned | None = None
) -> Session:
    """Connect, read the limits and resolve, within `connect_timeout`; on any failure nothing
    is left open. `learned` holds the limits found out at earlier connects, and gains those
    found out at this one (limits.py)."""
    client = Client(device.endpoint, timeout=device.timeout, watchdog_intervall=device.timeout)
    client.name = client.description = CLIENT_NAME
    client.session_timeout = round(session_timeout(device) * 1000)
    read_channel_faults(client)
    acknowledged = _keep_acknowledges(client)
    try:
        async with asyncio.timeout(device.connect_timeout):
            session = await _open(client, device, log, {} if learned is None else learned)
            session.limits.max_message_size = acknowledged[-1].MaxMessageSize
            return session
    except BaseException:
        await close_client(client, device.timeout)
        raise


async def _open(
    client: Client, device: OpcuaDevice, log: FilteringBoundLogger, learned: Learned
) -> Session:
    if device.security.secure:
        await secure(client, device.security, log)
    if device.username_file is not None and device.password_file is not None:
        client.set_user(_secret(device.username_file))
        client.set_password(_secret(device.password_file))
    try:
        await client.connect()
    except ua.UaError as exc:
        if not device.security.secure and _security_refused(exc):
            await _offers_none(client)
        raise
    caps = {Call.READ: device.max_nodes_per_read}
    limits = await read_limits(client, learned, caps, log)
    namespaces = await client.get_namespace_array()
    session = Session(client, [None] * len(device.tags), limits=limits)
    every = range(len(device.tags))
    _resolve_node_ids(device, namespaces, session, every)
    await _resolve_browse_paths(device, namespaces, session, every)
    return session


def _keep_acknowledges(client: Client) -> list[ua.Acknowledge]:
    """The server's answers to `client`'s Hellos (the last is the session's connection's),
    as they come: asyncua uses the transport limits they announce but shows them nowhere."""
    answers: list[ua.Acknowledge] = []
    uaclient = client.uaclient
    hello = uaclient.send_hello

    async def send_hello(*args: Any, **kwargs: Any) -> ua.Acknowledge:
        answer: ua.Acknowledge = await hello(*args, **kwargs)
        answers.append(answer)
        return answer

    uaclient.send_hello = send_hello
    return answers


def _security_refused(exc: ua.UaError) -> bool:
    """A connect without security failed as if the server offered no such endpoint.

    asyncua itself refuses (a plain UaError: "No matching endpoints") when the
    server's CreateSession answer lists no None endpoint; other servers answer
    BadSecurityModeRejected or BadSecurityPolicyRejected.
    """
    if isinstance(exc, ua.UaStatusCodeError):
        return exc.code & 0xFFFF0000 in SECURITY_REJECTED
    return True


async def _offers_none(client: Client) -> None:
    """Raise NoEndpoint, with the endpoints offered, when the server has no None endpoint."""
    with contextlib.suppress(ua.UaError, OSError):
        endpoints = await client.connect_and_get_server_endpoints()
        if not any(spelled(e) == "None" for e in endpoints):
            raise NoEndpoint(no_endpoint("None", endpoints))


async def resolve_refused(device: OpcuaDevice, session: Session) -> Session:
    """`session` with the tags it refused resolved again, on the same client.

    A node deployed or a namespace registered since the connect resolves now; a tag
    still refused keeps a reason (the current one). A new Session is returned and
    `session` is left as it was, so that the caller takes it only once what goes
    with it (the monitored items) succeeded: a retry that fails changes nothing.
    """
    retried = list(session.refused)
    if not retried:
        return session
    namespaces = await session.client.get_namespace_array()
    again = replace(session, nodes=list(session.nodes), refused={})
    _resolve_node_ids(device, namespaces, again, retried)
    await _resolve_browse_paths(device, namespaces, again, retried)
    return again


def _secret(configured: str) -> str:
    try:
        value = read_secret(configured)
    except CredentialFileError as exc:
        raise CredentialError(str(exc)) from None
    register_secret(value)
    return value


def _namespace_index(uri: str | None, namespaces: Sequence[str]) -> int:
    if uri is None:
        return 0
    try:
        return namespaces.index(uri)
    except ValueError:
        raise LookupError(f"the server has no namespace {uri!r}") from None


def _resolve_node_ids(
    device: OpcuaDevice, namespaces: Sequence[str], session: Session, indices: Iterable[int]
) -> None:
    for index in indices:
        address = device.tags[index].address
        if address is None:
            continue
        try:
            ns = address.namespace
            if not isinstance(ns, int):
                ns = _namespace_index(ns if ns is not None else device.namespace, namespaces)
            session.nodes[index] = ua.NodeId.from_string(address.text(ns))
        except LookupError as exc:
            session.refused[index] = str(exc)


async def _resolve_browse_paths(
    device: OpcuaDevice, namespaces: Sequence[str], session: Session, indices: Iterable[int]
) -> None:
    paths: list[tuple[int, ua.BrowsePath]] = []
    for index in indices:
        tag = device.tags[index]
        if tag.browse_path is None:
            continue
        try:
            paths.append(
                (index, _browse_path(parse_browse_path(tag.browse_path), device, namespaces))
            )
        except LookupError as exc:
            session.refused[index] = str(exc)
    if not paths:
        return
    results = await session.limits.chunked(
        Call.TRANSLATE,
        [p for _, p in paths],
        session.client.uaclient.translate_browsepaths_to_nodeids,
    )
    for (index, _), result in zip(paths, results, strict=True):
        if result.StatusCode.is_good() and result.Targets:
            target = result.Targets[0].TargetId
            session.nodes[index] = ua.NodeId(
                target.Identifier, target.NamespaceIndex, target.NodeIdType
            )
        else:
            session.refused[index] = (
                f"browse path /{device.tags[index].browse_path} not found "
                f"({status_name(result.StatusCode.value)})"
            )


def _browse_path(
    elements: Sequence[BrowseElement], device: OpcuaDevice, namespaces: Sequence[str]
) -> ua.BrowsePath:
    path = ua.BrowsePath()
    path.StartingNode = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    path.RelativePath = ua.RelativePath()
    for element in elements:
        ns = element.namespace
        if ns is None:
            ns = _namespace_index(device.namespace, namespaces)
        step = ua.RelativePathElement()
        step.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        step.IsInverse = False  # asyncua defaults to True: towards the parent
        step.IncludeSubtypes = True
        step.TargetName = ua.QualifiedName(element.name, ns)
        path.RelativePath.Elements.append(step)
    return path


async def close_client(client: Client, within: float) -> None:
    """Close the session politely within `within` seconds, then the socket whatever happened."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        async with asyncio.timeout(within):
            await client.disconnect()
    client.disconnect_socket()
