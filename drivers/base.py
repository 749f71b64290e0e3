"""The one small interface every protocol driver implements.

A driver owns its connection and its read plan. `read()` returns one Sample per
tag due in this poll: every tag polled at the device's interval, every time,
plus the tags of a slower poll group when that group's own deadline has come.
A device that fails degrades only its own tags to a bad quality (q=2 for
communication); a driver never raises for what the device does.
The scheduler calls `read()` on its own deadlines, so a driver never sleeps to
pace itself; it only bounds each I/O by its timeout.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge_agent.model import LinkState, Sample


class Driver(Protocol):
    @property
    def name(self) -> str:
        """The device name from the config."""
        ...

    @property
    def link(self) -> LinkState:
        """Whether the last read reached the device."""
        ...

    async def read(self) -> list[Sample]:
        """Read every tag due once; connect (or reconnect, with backoff) as needed."""
        ...

    async def close(self) -> None:
        """Drop the connection; `read()` may reconnect later."""
        ...


@runtime_checkable
class CountsClockSkew(Protocol):
    """A driver given device timestamps (OPC UA subscriptions): how many it did not
    believe, the device's clock being too far from the gateway's (optional: /metrics)."""

    @property
    def timestamps_replaced(self) -> int:
        """Device timestamps replaced by the gateway's time, since start."""
        ...


@runtime_checkable
class CountsRequests(Protocol):
    """A driver that counts what it asks of the device (optional: the debug line of each
    poll says how many requests it took)."""

    @property
    def requests(self) -> int:
        """Requests sent to the device since start, resends included."""
        ...


@runtime_checkable
class ExplainsLink(Protocol):
    """A driver that can say why its link is down (optional: /healthz shows the reason)."""

    @property
    def link_reason(self) -> str | None:
        """Why the link is down, in the words of its `link_down` log line; None while up."""
        ...
