"""Subscribe mode: one subscription for the device's tags, its buffer, and its watchdog.

Invariants:
- Notifications go straight from asyncua's publish loop into `Feed.changes`
  (no task per notification); `take()` hands them over in arrival order.
  The buffer is bounded (`MAX_BUFFERED_PER_TAG` per tag): past it the oldest
  changes are dropped and counted, never the newest.
- A tag whose monitored item the server refused (a bad node) has a standing
  bad sample with the quality of the server's StatusCode; every other item
  is created and delivers regardless. `Subscribed.monitor` adds items to the
  live subscription later (the driver retries refused tags that way), never
  touching the items already there.
- Watchdog: a server sends data or a keep-alive at least every
  keepalive_count publishing intervals. A subscription silent for 1.25 times
  that (or one the server says is gone, StatusChangeNotification) is stale:
  `stale()` says so, and the driver deletes it and makes a new one.
  asyncua's own stale-subscription watchdog is switched off for this class
  (`is_stale`), so two watchdogs never re-create the same subscription.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from drivers.opcua.config import OpcuaDevice

MAX_BUFFERED_PER_TAG = 100
STALE_MARGIN = 1.25
"""A subscription silent for this many keep-alive periods is stale."""

Change = tuple[int, ua.DataValue, int]
"""(tag index, the value as sent, the time it arrived in ms since the epoch)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Feed(Subscription):  # type: ignore[misc]  # asyncua is untyped here (pyproject)
    """asyncua's Subscription with its notifications collected in a bounded buffer."""

    def __init__(self, client: Client, params: ua.CreateSubscriptionParameters, limit: int) -> None:
        super().__init__(client.uaclient.session, params, handler=None, queue_maxsize=1)
        self.changes: deque[Change] = deque(maxlen=limit)
        self.dropped = 0
        self.last_publish_at = time.monotonic()
        self.gone: str | None = None
        """Why the server ended the subscription, once it said so."""

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()  # data and keep-alives alike
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return
        arrived = _now_ms()
        changes = self.changes
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    if len(changes) == changes.maxlen:
                        self.dropped += 1
                    changes.append((item.ClientHandle - 1, item.Value, arrived))
            elif (
                isinstance(notification, ua.StatusChangeNotification)
                and notification.Status.is_bad()
            ):
                self.gone = notification.Status.name

    def is_stale(self, margin: float) -> bool:
        return False  # the driver's watchdog decides: see the module docstring

    def take(self) -> list[Change]:
        changes = list(self.changes)
        self.changes.clear()
        return changes


@dataclass(slots=True)
class Subscribed:
    feed: Feed
    refused: dict[int, int]
    """Tag index -> the StatusCode the server refused its monitored item with."""
    silent_after: float
    """Seconds of silence after which the subscription is stale."""

    async def monitor(self, device: OpcuaDevice, nodes: dict[int, ua.NodeId]) -> None:
        """Add a monitored item for each tag in `nodes` (tag index -> its node).

        A tag the server refuses is kept in `refused` with its StatusCode, one it
        accepts leaves it. `refused` changes only once the server answered, so a
        request that fails (timed out) leaves it as it was.
        """
        if not nodes:
            return
        requests = [item_request(device, index, node) for index, node in nodes.items()]
        outcomes = await self.feed.create_monitored_items(requests)
        for index, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, ua.StatusCode):
                self.refused[index] = outcome.value
            else:
                self.refused.pop(index, None)

    def stale(self) -> str | None:
        """Why the subscription is stale, or None while it delivers."""
        if self.feed.gone is not None:
            return f"the server ended it ({self.feed.gone})"
        silent = time.monotonic() - self.feed.last_publish_at
        if silent > self.silent_after:
            every = self.silent_after / STALE_MARGIN
            return f"nothing received for {silent:.1f}s (a keep-alive is due every {every:.1f}s)"
        return None


def parameters(device: OpcuaDevice) -> ua.CreateSubscriptionParameters:
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = device.publishing_interval * 1000
    params.RequestedMaxKeepAliveCount = device.keepalive_count
    params.RequestedLifetimeCount = device.keepalive_count * 3  # the least the spec allows
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
    client: Client, device: OpcuaDevice, nodes: list[ua.NodeId | None]
) -> Subscribed:
    """A new subscription with a monitored item for every resolved node."""
    feed = Feed(client, parameters(device), MAX_BUFFERED_PER_TAG * len(device.tags))
    result = await feed.init()
    keepalive = result.RevisedPublishingInterval / 1000 * result.RevisedMaxKeepAliveCount
    subscribed = Subscribed(feed, {}, STALE_MARGIN * keepalive + device.timeout)
    await subscribed.monitor(device, {i: node for i, node in enumerate(nodes) if node is not None})
    return subscribed
