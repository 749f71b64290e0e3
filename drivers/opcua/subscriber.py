"""Subscribe mode: the device's subscriptions, their one buffer, and their watchdog.

Invariants:
- One subscription holds every tag, unless the server limits
  MaxMonitoredItemsPerSubscription (announced, or found out when it refuses an
  item with BadTooManyMonitoredItems while the subscription holds others):
  then each subscription is filled up to that and another is made for the rest.
  A subscription that holds none and still refuses with BadTooManyMonitoredItems
  means the server's total is reached: those tags are refused. They share one `Buffer`, so the
  notifications of all of them go straight from asyncua's publish loop into
  one deque (no task per notification) and `take()` hands them over in
  arrival order. The buffer is bounded (`MAX_BUFFERED_PER_TAG` per tag): past
  it the oldest changes are dropped and counted, never the newest.
- Monitored items are created in CreateMonitoredItems calls of at most the
  server's MaxMonitoredItemsPerCall (drivers/opcua/limits.py, which also
  halves a call answered BadTooManyOperations).
- A tag whose monitored item the server refused (a bad node) has a standing
  bad sample with the quality of the server's StatusCode; every other item
  is created and delivers regardless. `Subscribed.monitor` adds items to the
  live subscriptions later (the driver retries refused tags that way), never
  touching the items already there.
- Each subscription asks for a keep-alive count of `keepalive_count` (by
  default sized to half the shortest report interval of the tags:
  OpcuaDevice.keepalive_within); the server may revise it and the publishing
  interval, and `keepalive` is the longest keep-alive it granted.
- Watchdog: a server sends data or a keep-alive at least every keep-alive
  count of publishing intervals. A subscription silent for 1.25 times
  that (or one the server says is gone, StatusChangeNotification) is stale:
  `stale()` says so, and the driver deletes them all and makes them again.
  asyncua's own stale-subscription watchdog is switched off for this class
  (`is_stale`), so two watchdogs never re-create the same subscription.
- asyncua keeps one Publish request in flight per session, whatever the number
  of subscriptions: several subscriptions take turns on it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.limits import Call, Limits
from edge_agent.drivers.opcua.quality import status_name

MAX_BUFFERED_PER_TAG = 100
_FULL = ua.StatusCodes.BadTooManyMonitoredItems
STALE_MARGIN = 1.25
"""A subscription silent for this many keep-alive periods is stale."""

Change = tuple[int, ua.DataValue, int]
"""(tag index, the value as sent, the time it arrived in ms since the epoch)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Buffer:
    """The changes of every subscription of the device, in arrival order, bounded."""

    changes: deque[Change]
    dropped: int = 0
    """Changes dropped since the driver last logged it (the buffer was full)."""

    def take(self) -> list[Change]:
        changes = list(self.changes)
        self.changes.clear()
        return changes


class Feed(Subscription):  # type: ignore[misc]  # asyncua is untyped here (pyproject)
    """asyncua's Subscription with its notifications collected into the shared Buffer."""

    def __init__(
        self, client: Client, params: ua.CreateSubscriptionParameters, buffer: Buffer
    ) -> None:
        super().__init__(client.uaclient.session, params, handler=None, queue_maxsize=1)
        self.buffer = buffer
        self.items = 0
        """Monitored items the server accepted into this subscription."""
        self.last_publish_at = time.monotonic()
        self.last_publish_ms = _now_ms()
        """Wall time of the last Publish response: what it did not change, it confirmed."""
        self.gone: str | None = None
        """Why the server ended the subscription, once it said so."""

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()  # data and keep-alives alike
        self.last_publish_ms = _now_ms()
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return
        arrived = _now_ms()
        buffer = self.buffer
        changes = buffer.changes
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    if len(changes) == changes.maxlen:
                        buffer.dropped += 1
                    changes.append((item.ClientHandle - 1, item.Value, arrived))
            elif (
                isinstance(notification, ua.StatusChangeNotification)
                and notification.Status.is_bad()
            ):
                self.gone = notification.Status.name

    def is_stale(self, margin: float) -> bool:
        return False  # the driver's watchdog decides: see the module docstring


@dataclass(slots=True)
class Subscribed:
    client: Client
    device: OpcuaDevice
    limits: Limits
    buffer: Buffer
    keepalive_count: int
    """The keep-alive count each subscription asks for."""
    keepalive: float = 0.0
    """Seconds: the longest keep-alive period the server granted a subscription."""
    feeds: list[Feed] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    """Tag index -> the StatusCode the server refused its monitored item with."""

    async def monitor(self, nodes: dict[int, ua.NodeId]) -> None:
        """Add a monitored item for each tag in `nodes` (tag index -> its node).

        Items go into the first subscription with room (MaxMonitoredItemsPerSubscription),
        a new one when none has. A tag the server refuses is kept in `refused` with its
        StatusCode, one it accepts leaves it. `refused` changes only once the server
        answered, so a request that fails (timed out) leaves it as it was.
        """
        pending = list(nodes.items())
        while pending:
            feed = next((f for f in self.feeds if self._room(f) > 0), None)
            if feed is None:
                feed = await self._add_feed()
            room = self._room(feed)
            batch, pending = pending[:room], pending[room:]
            requests = [item_request(self.device, index, node) for index, node in batch]
            outcomes = await self.limits.chunked(
                Call.MONITOR, requests, feed.create_monitored_items
            )
            full = []
            for (index, node), outcome in zip(batch, outcomes, strict=True):
                if not isinstance(outcome, ua.StatusCode):
                    feed.items += 1
                    self.refused.pop(index, None)
                elif outcome.value == _FULL and feed.items:
                    full.append((index, node))
                else:
                    self.refused[index] = outcome.value
            if full:  # a limit the server did not announce: the rest go to another subscription
                self.limits.learn(Call.SUBSCRIPTION, feed.items, status_name(_FULL))
                pending = full + pending

    def _room(self, feed: Feed) -> int:
        limit = self.limits.size(Call.SUBSCRIPTION) or len(self.device.tags)
        return limit - feed.items

    async def _add_feed(self) -> Feed:
        feed = Feed(self.client, parameters(self.device, self.keepalive_count), self.buffer)
        result = await feed.init()
        keepalive = result.RevisedPublishingInterval / 1000 * result.RevisedMaxKeepAliveCount
        self.keepalive = max(self.keepalive, keepalive)
        self.feeds.append(feed)
        return feed

    def confirmed_ms(self, now_ms: int) -> int:
        """Until when the server confirmed the values it did not change: the last Publish
        response (data or keep-alive) of the subscription heard from least recently."""
        return min((feed.last_publish_ms for feed in self.feeds), default=now_ms)

    def stale(self) -> str | None:
        """Why a subscription is stale, or None while they all deliver."""
        now = time.monotonic()
        for feed in self.feeds:
            if feed.gone is not None:
                return f"the server ended it ({feed.gone})"
            silent = now - feed.last_publish_at
            if silent > self.silent_after:
                every = self.keepalive
                return (
                    f"nothing received for {silent:.1f}s (a keep-alive is due every {every:.1f}s)"
                )
        return None

    @property
    def silent_after(self) -> float:
        """Seconds of silence after which a subscription is stale."""
        return STALE_MARGIN * self.keepalive + self.device.timeout

    async def delete(self) -> None:
        """Delete every subscription on the server (the caller bounds the time)."""
        for feed in self.feeds:
            await feed.delete()


def parameters(device: OpcuaDevice, keepalive_count: int) -> ua.CreateSubscriptionParameters:
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = device.publishing_interval * 1000
    params.RequestedMaxKeepAliveCount = keepalive_count
    params.RequestedLifetimeCount = keepalive_count * 3  # the least the spec allows
    params.MaxNotificationsPerPublish = 0  # no limit
    params.PublishingEnabled = True
    params.Priority = 0
    return params


def item_request(device: OpcuaDevice, index: int, node: ua.NodeId) -> ua.MonitoredItemCreateRequest:
    """The monitored item of tag `index`; its client handle is index + 1 (0 is reserved)."""
    tag = device.tags[index]
    read = ua.ReadValueId()
    read.NodeId = node
    read.AttributeId = ua.AttributeIds.Value
    params = ua.MonitoringParameters()
    params.ClientHandle = index + 1
    params.SamplingInterval = device.sampling_interval(tag) * 1000
    params.QueueSize = tag.monitor.queue_size
    params.DiscardOldest = True
    if tag.monitor.deadband is not None or tag.monitor.deadband_pct is not None:
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValue
        if tag.monitor.deadband is not None:
            flt.DeadbandType, flt.DeadbandValue = ua.DeadbandType.Absolute, tag.monitor.deadband
        else:
            flt.DeadbandType = ua.DeadbandType.Percent
            flt.DeadbandValue = tag.monitor.deadband_pct or 0.0
        params.Filter = flt
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = read
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


async def subscribe(
    client: Client,
    device: OpcuaDevice,
    nodes: list[ua.NodeId | None],
    limits: Limits,
    keepalive_count: int,
) -> Subscribed:
    """New subscriptions with a monitored item for every resolved node."""
    buffer = Buffer(deque(maxlen=MAX_BUFFERED_PER_TAG * len(device.tags)))
    subscribed = Subscribed(client, device, limits, buffer, keepalive_count)
    await subscribed._add_feed()
    await subscribed.monitor({i: node for i, node in enumerate(nodes) if node is not None})
    return subscribed
