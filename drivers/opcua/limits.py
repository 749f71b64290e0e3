"""The server's operation limits, and every multi-node call of the driver cut to fit them.

Invariants:
- Read at every connect from Server/ServerCapabilities (OperationLimits and
  MaxMonitoredItemsPerSubscription): MaxNodesPerRead first, on its own, then
  the others in reads of at most that many nodes. 0, a missing node or a bad
  StatusCode means no limit. A server that refuses the Read is treated as
  announcing none; the calls below then find its limits out.
- `chunked` sends a call's operations in pieces of at most the limit of that
  kind of call (reads also at most the device's `max_nodes_per_read`), in
  order, and returns the results in the order of the operations.
- A piece answered BadTooManyOperations (the service result) is halved and
  sent again: the server has a limit it does not announce, or a lower one
  than it announces. So is a piece whose message is too large for the server
  (`TOO_LARGE`: BadResponseTooLarge, BadEncodingLimitsExceeded,
  BadTcpMessageTooLarge for a response past the server's max message size,
  BadRequestTooLarge for a request past it, or for a response past it as
  asyncua judges one), since fewer operations make a smaller message. The
  size that is then used is remembered for that kind of call, in `Learned`,
  which the driver keeps across reconnects (a server's limits do not change
  because the link dropped), and logged once with the answer that taught it
  (`operation_limit_learned`). A single operation so answered fails the call
  like any other error. A server that closes the connection with the answer
  fails the halved piece too; the next connect starts from the size learned.
- The max message size the server announced (its Acknowledge to the Hello)
  is kept in `max_message_size` for `link_up`; calls are cut by the answers
  above, not by estimating a message's size.
- MaxMonitoredItemsPerSubscription is honoured by drivers/opcua/subscriber.py
  (another subscription for the items past it), and learned the same way when
  a subscription refuses an item with BadTooManyMonitoredItems.
- The driver sends Read, TranslateBrowsePathsToNodeIds and CreateMonitoredItems
  with many operations; it sends no Browse and no RegisterNodes, so their limits
  are read (and shown in `link_up`) but cut nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from asyncua import Client, ua
from structlog.typing import FilteringBoundLogger

from edge_agent.drivers.opcua.quality import status_name

__all__ = ["TOO_LARGE", "Call", "Learned", "Limits", "read_limits"]


class Call(StrEnum):
    """A kind of call the server limits, named as its OperationLimits node."""

    READ = "MaxNodesPerRead"
    BROWSE = "MaxNodesPerBrowse"
    TRANSLATE = "MaxNodesPerTranslateBrowsePathsToNodeIds"
    MONITOR = "MaxMonitoredItemsPerCall"
    REGISTER = "MaxNodesPerRegisterNodes"
    SUBSCRIPTION = "MaxMonitoredItemsPerSubscription"
    """Not a call: the most monitored items one subscription holds (subscriber.py)."""


_OBJECTS = ua.ObjectIds
_NODES: dict[Call, int] = {
    Call.READ: _OBJECTS.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    Call.BROWSE: _OBJECTS.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
    Call.TRANSLATE: (
        _OBJECTS.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds
    ),
    Call.MONITOR: _OBJECTS.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    Call.REGISTER: _OBJECTS.Server_ServerCapabilities_OperationLimits_MaxNodesPerRegisterNodes,
    Call.SUBSCRIPTION: _OBJECTS.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
}

TOO_LARGE = frozenset(
    {
        ua.StatusCodes.BadResponseTooLarge,
        ua.StatusCodes.BadRequestTooLarge,
        ua.StatusCodes.BadEncodingLimitsExceeded,
        ua.StatusCodes.BadTcpMessageTooLarge,
    }
)
"""Answers to a message larger than the server (or asyncua) takes: a smaller piece may pass."""
_SMALLER = TOO_LARGE | {ua.StatusCodes.BadTooManyOperations}
"""Answers after which the same operations are sent again in halves."""

T = TypeVar("T")
R = TypeVar("R")
Learned = dict[Call, int]
"""Call kind -> the most operations per call that passed after a BadTooManyOperations."""


@dataclass(slots=True)
class Limits:
    """What the server announced at this connect, and what the driver learned of it."""

    announced: dict[Call, int] = field(default_factory=dict)
    """Call kind -> the server's limit; a kind without a limit is absent."""
    learned: Learned = field(default_factory=dict)
    caps: dict[Call, int] = field(default_factory=dict)
    """The configuration's own limits (max_nodes_per_read)."""
    log: FilteringBoundLogger | None = None
    max_message_size: int = 0
    """Bytes: the most the server takes in one message, as it announced; 0 for no limit."""

    def size(self, call: Call) -> int | None:
        """The most operations one call of this kind may carry; None for no limit."""
        bounds = [
            b for b in (self.announced.get(call), self.learned.get(call), self.caps.get(call)) if b
        ]
        return min(bounds) if bounds else None

    def shown(self) -> dict[str, int]:
        """Every limit in force by its OPC UA name, for a log line (absent: none)."""
        return {call.value: size for call in Call if (size := self.size(call)) is not None}

    async def chunked(
        self, call: Call, operations: Sequence[T], send: Callable[[list[T]], Awaitable[list[R]]]
    ) -> list[R]:
        """`send` every operation, in pieces that fit `call`'s limit; the results in order."""
        results: list[R] = []
        start = 0
        while start < len(operations):
            size = self.size(call) or len(operations)
            piece = list(operations[start : start + size])
            try:
                answers = await send(piece)
            except ua.UaStatusCodeError as exc:
                if exc.code not in _SMALLER or len(piece) == 1:
                    raise
                self.learn(call, len(piece) // 2, status_name(exc.code))
                continue
            results.extend(answers)
            start += len(piece)
        return results

    def learn(self, call: Call, size: int, answer: str) -> None:
        """The server refused more than `size` operations of this kind, answering `answer`
        (a StatusCode's name): use at most that."""
        self.learned[call] = size
        if self.log is not None:
            self.log.warning(
                "operation_limit_learned",
                call=call.value,
                size=size,
                announced=self.announced.get(call, 0),
                answer=answer,
            )


async def read_limits(
    client: Client,
    learned: Learned,
    caps: dict[Call, int],
    log: FilteringBoundLogger | None = None,
) -> Limits:
    """The server's limits, read by Read (MaxNodesPerRead first, alone); see the module doc."""
    limits = Limits(learned=learned, caps=caps, log=log)
    first = await _read_numbers(client, [_NODES[Call.READ]], limits)
    if first[0]:
        limits.announced[Call.READ] = first[0]
    others = [call for call in Call if call is not Call.READ]
    numbers = await _read_numbers(client, [_NODES[call] for call in others], limits)
    for call, number in zip(others, numbers, strict=True):
        if number:
            limits.announced[call] = number
    return limits


async def _read_numbers(client: Client, ids: list[int], limits: Limits) -> list[int]:
    """Each node's value as a positive int, else 0; all 0 when the server refuses the Read."""

    async def send(piece: list[ua.ReadValueId]) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        params.NodesToRead = piece
        return await client.uaclient.read(params)  # type: ignore[no-any-return]  # untyped

    items = []
    for identifier in ids:
        item = ua.ReadValueId()
        item.NodeId = ua.NodeId(identifier)
        item.AttributeId = ua.AttributeIds.Value
        items.append(item)
    try:
        values = await limits.chunked(Call.READ, items, send)
    except ua.UaStatusCodeError:
        return [0] * len(ids)
    return [_positive(value) for value in values]


def _positive(value: ua.DataValue) -> int:
    good = value.StatusCode is None or value.StatusCode.is_good()
    number = value.Value.Value if good and value.Value is not None else None
    return number if isinstance(number, int) and not isinstance(number, bool) and number > 0 else 0
