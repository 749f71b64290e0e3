"""What asyncua's server does not enforce by itself: operation limits, sessions, channel trust.

`Guard` wraps each session a client creates (`iserver.create_session`) and each
connection's OpenSecureChannel handler (through BinaryServer's protocol
factory), so that the simulator answers as real servers do:

- a Read, Browse, TranslateBrowsePathsToNodeIds or CreateMonitoredItems with
  more operations than the scenario's limit: BadTooManyOperations (the
  service result; counted in `refused_calls`);
- a monitored item past max_monitored_items_per_subscription:
  BadTooManyMonitoredItems (that item's result);
- a CreateSession past max_sessions: BadTooManySessions;
- an untrusted client certificate: `untrusted` instead of asyncua's
  BadCertificateUntrusted, and with `at_channel` already at OpenSecureChannel,
  as a ServiceFault, as node-opcua answers (BadSecurityChecksFailed).

A ServiceError raised in a session's service method is answered by asyncua's
UaProcessor as a ServiceFault with its StatusCode. This module reaches into
asyncua's server internals (`_external_sessions`, a subscription's
`monitored_item_srv`, a processor's `_connection`) and nothing else does but
opcua_server.py's `_Listener`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.validator import CertificateValidator
from asyncua.ua.ua_binary import struct_from_binary

from edge_agent.drivers.opcua.security import first_certificate
from edge_agent.drivers.simulator.opcua_scenario import OperationLimits

__all__ = ["LIMIT_NODES", "Guard"]

_IDS = ua.ObjectIds
LIMIT_NODES = {
    "max_nodes_per_read": _IDS.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "max_nodes_per_browse": _IDS.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    "max_nodes_per_translate_browse_paths": (
        _IDS.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds
    ),
    "max_monitored_items_per_call": (
        _IDS.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
    ),
    "max_nodes_per_register_nodes": (
        _IDS.Server_ServerCapabilities_OperationLimits_MaxNodesPerRegisterNodes
    ),
    "max_monitored_items_per_subscription": (
        _IDS.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription
    ),
}
"""Each limit of the scenario -> the node of Server/ServerCapabilities that announces it."""


class Guard:
    """The limits and the session cap, enforced on every session a client creates.

    asyncua's UaProcessor calls `iserver.create_session` for each CreateSession and
    then the session's service methods; a ServiceError raised there is answered as a
    ServiceFault with its StatusCode, as a real server answers.
    """

    def __init__(self, server: Server, limits: OperationLimits, max_sessions: int) -> None:
        self._iserver = server.iserver
        self._limits = limits
        self._max_sessions = max_sessions
        self._create = self._iserver.create_session
        self._iserver.create_session = self._create_session
        self.refused_calls = 0
        """Requests answered BadTooManyOperations since the start."""
        self.untrusted: int | None = None
        """The StatusCode an untrusted client certificate is answered with; None: asyncua's."""
        self.at_channel = False
        """Answer an untrusted client certificate at OpenSecureChannel (True), with a
        ServiceFault as node-opcua does, rather than at CreateSession (asyncua)."""
        self.trusts: Callable[[bytes], bool] | None = None
        """Whether the trust list holds a client certificate (DER); None: no trust list."""

    def sessions(self) -> int:
        return len(self._iserver._external_sessions)

    def _create_session(self, name: str, *args: Any, external: bool = False, **kwargs: Any) -> Any:
        if external and self._max_sessions and self.sessions() >= self._max_sessions:
            raise ServiceError(ua.StatusCodes.BadTooManySessions)
        session = self._create(name, *args, external=external, **kwargs)
        if external:
            self._wrap(session)
        return session

    def _wrap(self, session: Any) -> None:
        limits = self._limits
        read, browse = session.read, session.browse
        translate, monitor = (
            session.translate_browsepaths_to_nodeids,
            session.create_monitored_items,
        )

        async def limited_read(params: ua.ReadParameters) -> Any:
            self._check(len(params.NodesToRead), limits.max_nodes_per_read)
            return await read(params)

        async def limited_browse(params: ua.BrowseParameters) -> Any:
            self._check(len(params.NodesToBrowse), limits.max_nodes_per_browse)
            return await browse(params)

        async def limited_translate(paths: list[ua.BrowsePath]) -> Any:
            self._check(len(paths), limits.max_nodes_per_translate_browse_paths)
            return await translate(paths)

        async def limited_monitor(params: ua.CreateMonitoredItemsParameters) -> Any:
            self._check(len(params.ItemsToCreate), limits.max_monitored_items_per_call)
            room = self._room(params.SubscriptionId)
            if room is None or room >= len(params.ItemsToCreate):
                return await monitor(params)
            over = params.ItemsToCreate[room:]
            params.ItemsToCreate = params.ItemsToCreate[:room]
            results = await monitor(params) if room else []
            full = ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems)
            return [*results, *(ua.MonitoredItemCreateResult(StatusCode=full) for _ in over)]

        session.read, session.browse = limited_read, limited_browse
        session.translate_browsepaths_to_nodeids = limited_translate
        session.create_monitored_items = limited_monitor

    def _check(self, operations: int, limit: int) -> None:
        if limit and operations > limit:
            self.refused_calls += 1
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    def _room(self, subscription_id: int) -> int | None:
        limit = self._limits.max_monitored_items_per_subscription
        subscription = self._iserver.subscription_service.subscriptions.get(subscription_id)
        if not limit or subscription is None:
            return None
        return max(0, limit - len(subscription.monitored_item_srv._monitored_items))

    async def validate(self, validator: CertificateValidator, cert: Any, app: Any) -> None:
        try:
            await validator(cert, app)
        except ServiceError as exc:
            untrusted = exc.code == ua.StatusCodes.BadCertificateUntrusted
            if untrusted and self.untrusted is not None:
                raise ServiceError(self.untrusted) from None
            raise

    def protocol(self, make: Callable[[], Any]) -> Callable[[], Any]:
        """`make` (BinaryServer's protocol factory), each connection's OpenSecureChannel
        guarded (`at_channel`)."""

        def guarded() -> Any:
            protocol = make()
            connection_made = protocol.connection_made

            def made(transport: Any) -> None:
                connection_made(transport)
                if protocol.processor is not None:
                    self._guard_channel(protocol.processor)

            protocol.connection_made = made
            return protocol

        return guarded

    def _guard_channel(self, processor: Any) -> None:
        open_channel = processor.open_secure_channel

        def open_secure_channel(algohdr: Any, seqhdr: Any, body: Any) -> None:
            trusts, sender = self.trusts, algohdr.SenderCertificate
            if not self.at_channel or trusts is None or not sender:
                return open_channel(algohdr, seqhdr, body)  # type: ignore[no-any-return]
            if trusts(first_certificate(sender)):
                return open_channel(algohdr, seqhdr, body)  # type: ignore[no-any-return]
            request = struct_from_binary(ua.OpenSecureChannelRequest, body)
            processor._connection.select_policy(
                algohdr.SecurityPolicyURI, sender, request.Parameters.SecurityMode
            )
            fault = ua.ServiceFault()
            code = self.untrusted or ua.StatusCodes.BadSecurityChecksFailed
            fault.ResponseHeader.ServiceResult = ua.StatusCode(code)
            handle = request.RequestHeader.RequestHandle
            processor.send_response(handle, seqhdr, fault, ua.MessageType.SecureOpen)
            return None

        processor.open_secure_channel = open_secure_channel
